"""The bot's replies: each written by a job of the scheduler that also saves it and frees its chat.

A request only starts a reply (or finds the one under way) and then follows it: streamed, waited
for, or not at all if the browser leaves. The job holds its chat's lock (`webapp/reply_locks.py`)
from its start until the reply is saved, so the reply is kept whoever reads it, and Clear, Undo
and a second reply of the same chat wait for it.
"""

from flask import abort, current_app, render_template, stream_with_context

from .chat_history import Exchange, Turn, current_history
from .generation import ModelError, Overloaded, current_scheduler
from .rendering import ALERTS_CLEARED
from .reply_locks import current_locks
from .store_errors import STORE_DOWN, STORE_ERRORS

MODEL_FAILED = "The model could not answer this time. Your message is kept: retry."
MODEL_BUSY = ("The model is busy with other chats. Your message is kept: "
              "try again in a few seconds.")
# What following a reply may raise: outcome() then says what went wrong.
REPLY_ERRORS = (ModelError, Overloaded, *STORE_ERRORS)
GONE = "That message is no longer in this chat: it was cleared or has expired."


def start(sid, turn_id, conversation=0):
    """The job writing the reply to one of the messages of a session's conversation (started now,
    or already under way), or the exchange if its reply is already stored."""
    scheduler = current_scheduler()
    running = scheduler.running((sid, turn_id))
    if running is not None:
        return running
    history = current_history()
    release = current_locks().acquire(sid)
    try:
        exchanges = history.exchanges(sid, conversation)
        index = next((i for i, e in enumerate(exchanges) if e.user.id == turn_id), None)
        if index is None:
            abort(404, GONE)
        if exchanges[index].reply is not None:
            release()
            return exchanges[index]
        texts = [turn.text for e in exchanges[:index + 1] for turn in (e.user, e.reply) if turn]
        try:
            return scheduler.submit(texts, key=(sid, turn_id), on_done=_saver(sid, turn_id, conversation, release))
        except Overloaded:
            abort(503, MODEL_BUSY)
    except BaseException:
        release()
        raise


def _saver(sid, turn_id, conversation, release):
    """What a job does when it ends: save its reply, if it has one, then free its chat."""
    app = current_app._get_current_object()

    def save(job):
        with app.app_context():
            try:
                if job.error is None:
                    current_history().add_reply(sid, turn_id, job.text, job.stopped, conversation)
            finally:
                release()
    return save


def failure(job):
    """Why a finished job has no reply, and the HTTP status that says so; (None, 200) if it has one."""
    if job.error is None:
        return None, 200
    if isinstance(job.error, Overloaded):
        return MODEL_BUSY, 503
    if isinstance(job.error, STORE_ERRORS):
        return STORE_DOWN, 503
    current_app.logger.error("chat model failed on turn %s: %s", job.key[1], job.error)
    return MODEL_FAILED, 500


def outcome(reply):
    """The exchange the page shows for `start`'s result once the reply is finished, with why there
    is no reply (or None) and the HTTP status."""
    if isinstance(reply, Exchange):
        return reply, None, 200
    try:
        reply.result()
    except REPLY_ERRORS:
        pass
    message, status = failure(reply)
    turn = None if message else Turn(None, "bot", reply.text, reply.stopped)
    return Exchange(Turn(reply.key[1], "user", ""), turn), message, status


def pieces(job, interval, pace=0.0):
    """Yield the reply's new text as `Job.updates` does, while the reply is found as under way; end
    quietly if it fails (`outcome` then says why)."""
    try:
        with current_scheduler().showing(job):
            yield from job.updates(interval, pace)
    except REPLY_ERRORS:
        pass


def event_stream(events):
    """A response sending `events`, server-sent events, each as soon as it is made."""
    response = current_app.response_class(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must pass each event on at once
    return response


def events(job, interval, pace, conversation=0):
    """The reply as server-sent events: the text so far each time it grows, then the finished
    bubble; each rendered as Markdown, so that half-written emphasis or code ends as it will stay."""
    yield ": generating\n\n"  # a comment, so that the headers go out before the first token
    turn_id, text = job.key[1], ""
    for piece in pieces(job, interval, pace):
        text += piece
        yield _event(render_template("chat/_delta.html", turn_id=turn_id, text=text))
    exchange, message, _ = outcome(job)
    html = render_template("chat/_reply.html", exchange=exchange, failure=message, conversation=conversation)
    if not message:  # as every fragment of a success does (rendering.py)
        html += ALERTS_CLEARED
    yield _event(html)


def _event(html):
    """One server-sent event carrying an HTML fragment."""
    return "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
