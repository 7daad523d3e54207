"""The chat page: session state, several conversations per browser, answered by the model of this process."""

import re
from dataclasses import replace

from flask import Blueprint, abort, current_app, redirect, request, url_for

from .. import replies
from ..background_model import current_model
from ..chat_history import Exchange, current_history, new_conversation_number
from ..chat_markdown import render_markdown
from ..generation import Job, current_scheduler
from ..limits import limited
from ..rendering import VARY, render, wants_fragment
from ..reply_locks import current_locks
from ..state import SessionState, browser_id, known_browser_id
from ..text_input import clean, shows_something

bp = Blueprint("chat", __name__)
bp.add_app_template_filter(render_markdown, "markdown")

TITLE = "Chat"
DESCRIPTION = "Session state: a chatbot whose history belongs to your browser alone."
# The message Undo took back, kept for the page that follows a form post without JavaScript.
draft = SessionState("chat.draft", default="")
# The conversation this browser shows at /chat: the one it last chose, started or wrote in.
current = SessionState("chat.conversation", default=0)
FEEDBACK = ("like", "dislike")
# The fragments that bring the list of conversations with them (the page always does).
_LISTING = ("chat/_sent.html", "chat/_cleared.html", "chat/_undone.html")
STARTERS = ("Hi! How are you?", "What do you do for fun?", "Have you seen any good movies lately?")


def _chosen():
    """The conversation a request acts on: the one its page showed (`?c=`), else the current one."""
    number = request.args.get("c")
    if number is None:
        return current.get()
    if not re.fullmatch(r"[0-9]{1,10}", number) or int(number) >= 2 ** 31:
        abort(404, "There is no conversation with that number.")
    return int(number)


def _choose(number):
    """Make `number` this browser's current conversation."""
    if current.get() != number:
        current.set(number)


def _acting_on():
    """This browser's id and the conversation a post acts on, which becomes its current one (so that
    the page a post without JavaScript is sent back to shows it)."""
    sid, conversation = browser_id(), _chosen()
    _choose(conversation)
    return sid, conversation


def _render(fragment, status=200, **context):
    """Render the chat page, or one of its fragments for htmx."""
    if "conversation" not in context:
        context["conversation"] = _chosen()
    conversation, sid = context["conversation"], known_browser_id()
    if "exchanges" not in context:
        context["exchanges"] = current_history().exchanges(sid, conversation) if sid else []
    if not wants_fragment() or fragment in _LISTING:
        context["conversations"] = current_history().conversations(sid) if sid else []
    context.setdefault("model_about", getattr(current_model(), "about", None))
    context.setdefault("starters", STARTERS)
    return render("chat/page.html", fragment, status, **context)


def message_error(text):
    """Why a message cannot be sent, or None."""
    limit = current_app.config["CHAT_MAX_MESSAGE_CHARS"]
    if not text.strip():
        return "Type a message before sending."
    if not shows_something(text):
        return "This message shows nothing: it holds only invisible characters."
    if len(text) > limit:
        return f"Messages are limited to {limit} characters; this one has {len(text)}."
    return None


def _stream(job, conversation):
    """Stream a reply as it is written; the job saves it whether the browser stays or not."""
    config = current_app.config
    response = replies.event_stream(replies.events(
        job, config["CHAT_STREAM_INTERVAL"], config["CHAT_STREAM_PACE"], conversation))
    response.vary.update((*VARY, "Accept"))
    return response


def _after_plain_post(sid, turn_id, conversation):
    """Answer a form sent without JavaScript once the reply is made: post/redirect/get, or the
    page with the failure shown."""
    _, failure, status = replies.outcome(replies.start(sid, turn_id, conversation))
    if failure:
        return _render("chat/_log.html", status, failures={turn_id: failure})
    return redirect(url_for("chat.index"), 303)


@bp.get("/chat")
def index():
    """Show this browser's conversations and the chosen one (`?c=`, else the current one), with the
    message box (holding a message Undo put back)."""
    conversation = _chosen()
    _choose(conversation)  # nothing to do without `?c=`: the chosen one is the current one
    value = draft.get()
    if value:
        draft.set("")
    return _render("chat/_log.html", value=value, conversation=conversation)


@bp.post("/chat/new")
def new():
    """Start a new conversation: it is shown, and listed once it holds a message."""
    _choose(new_conversation_number())
    return redirect(url_for("chat.index"), 303)


@bp.post("/chat/conversations/<int:number>/delete")
def delete(number):
    """Delete one of this browser's conversations; the most recent other one is shown next."""
    sid = browser_id()
    history = current_history()
    with current_locks().hold(sid):
        history.clear(sid, number)
    if current.get() == number:
        left = history.conversations(sid)
        _choose(left[0].number if left else new_conversation_number())
    return redirect(url_for("chat.index"), 303)


@bp.post("/chat")
@limited("CHAT_RATE_LIMIT")
def send():
    """Store the user's message; htmx gets it back at once, a plain form also waits for the reply."""
    text = clean(request.form.get("message", ""))
    error = message_error(text)
    if error:
        return _render("chat/_form.html", 422, error=error, value=text)
    sid, conversation = _acting_on()
    turn = current_history().add_user_turn(sid, text.strip(), conversation)
    if wants_fragment():
        return _render("chat/_sent.html", exchanges=[], exchange=Exchange(turn, None))
    return _after_plain_post(sid, turn.id, conversation)


@bp.post("/chat/replies/<int:turn_id>")
@limited("CHAT_RATE_LIMIT")
def reply(turn_id):
    """Generate (or return the already generated) reply to one of this browser's messages.

    htmx with its event-stream extension gets the reply streamed as it is written.
    """
    sid, conversation = _acting_on()
    if not wants_fragment():
        return _after_plain_post(sid, turn_id, conversation)
    reply = replies.start(sid, turn_id, conversation)
    if isinstance(reply, Job) and "text/event-stream" in request.headers.get("Accept", ""):
        return _stream(reply, conversation)
    exchange, failure, status = replies.outcome(reply)
    response = _render("chat/_reply.html", status, failure=failure, exchanges=[], exchange=exchange,
                       conversation=conversation)
    response.vary.add("Accept")
    return response


@bp.post("/chat/replies/<int:turn_id>/stop")
def stop(turn_id):
    """End the reply being written to one of this browser's messages; its job saves what there is."""
    job = current_scheduler().running((browser_id(), turn_id))
    if job is None:
        abort(409, "That reply is not being written right now.")
    job.stop()
    return "", 204


@bp.post("/chat/replies/<int:turn_id>/regenerate")
@limited("CHAT_RATE_LIMIT")
def regenerate(turn_id):
    """Forget the newest reply and ask the model for it again."""
    sid, conversation = _acting_on()
    history = current_history()
    with current_locks().hold(sid):
        exchanges = history.exchanges(sid, conversation)
        if not exchanges or exchanges[-1].user.id != turn_id or exchanges[-1].reply is None:
            abort(409, "Only the newest reply, once written, can be asked for again.")
        history.remove_reply(sid, turn_id, conversation)
    if not wants_fragment():
        return _after_plain_post(sid, turn_id, conversation)
    return _render("chat/_reply.html", exchanges=[], exchange=Exchange(exchanges[-1].user, None))


@bp.post("/chat/replies/<int:turn_id>/feedback")
@limited("CHAT_RATE_LIMIT")
def feedback(turn_id):
    """Like or dislike a reply; the same choice again takes it back."""
    choice = request.form.get("feedback")
    if choice not in FEEDBACK:
        abort(422, "Feedback is either like or dislike.")
    sid, conversation = _acting_on()
    history = current_history()
    exchange = next((e for e in history.exchanges(sid, conversation) if e.user.id == turn_id and e.reply), None)
    if exchange is None:
        abort(404, "That reply is no longer in this chat: it was cleared or has expired.")
    chosen = None if exchange.reply.feedback == choice else choice
    history.set_feedback(sid, turn_id, chosen, conversation)
    if not wants_fragment():
        return redirect(url_for("chat.index", _anchor=f"exchange-{turn_id}"), 303)
    return _render("chat/_reply.html", exchanges=[],
                   exchange=replace(exchange, reply=replace(exchange.reply, feedback=chosen)))


@bp.post("/chat/undo")
@limited("CHAT_RATE_LIMIT")
def undo():
    """Take back the newest message and its reply; the message goes back into the box."""
    sid, conversation = _acting_on()
    history = current_history()
    with current_locks().hold(sid):
        text = history.remove_last_exchange(sid, conversation) or ""
    if wants_fragment():
        return _render("chat/_undone.html", value=text)
    draft.set(text)
    return redirect(url_for("chat.index"), 303)


@bp.post("/chat/clear")
def clear():
    """Forget the turns of this browser's conversation, and only this browser's."""
    sid, conversation = _acting_on()
    history = current_history()
    with current_locks().hold(sid):
        history.clear(sid, conversation)
    if wants_fragment():
        return _render("chat/_cleared.html", exchanges=[])
    return redirect(url_for("chat.index"), 303)
