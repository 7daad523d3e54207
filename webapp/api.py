"""The HTTP API for programs, as Gradio's "Use via API": chat and scores in JSON, no cookies.

A conversation started here is named by a key, a random secret (as a session id is) that whoever
holds it may use. It is kept like a browser's: its turns under the key in the chat history, and a
session under the key that marks it as a program's, so that the same caps, expiry and cleanup
apply. Requests need no CSRF token because they must be `application/json`, which no cross-site
form can send (a cross-site script would need a CORS preflight, which nothing here answers).
Errors are `{"error": "..."}` with their status (`webapp/errors.py`).
"""

import hashlib
import json
import re
import secrets

from flask import Blueprint, abort, current_app, request
from werkzeug.exceptions import HTTPException

from . import replies
from .chat_history import current_history
from .generation import Job
from .limits import address_key, limited
from .pages.chat import message_error
from .reply_locks import current_locks
from .score_board import current_board
from .score_values import InvalidScore, parse_score
from .text_input import clean

bp = Blueprint("api", __name__, url_prefix="/api")

API_SESSION = "api"  # the session value that marks a program's conversation
_KEY = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


@bp.before_request
def _json_only():
    """Refuse a post that is not JSON (415) or not a JSON object (400), before anything is counted."""
    if request.method == "POST":
        if not request.is_json:
            abort(415, "Send JSON, with Content-Type: application/json.")
        if not isinstance(request.get_json(silent=True), dict):
            abort(400, "The body must be a JSON object.")


def _conversation_key():
    """What a chat request is counted under by the rate limit: its conversation, or its address."""
    key = request.get_json(silent=True).get("conversation")
    if isinstance(key, str) and _KEY.fullmatch(key):
        return "conversation:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return address_key()


def _sessions():
    return current_app.session_interface.store


def _open(key):
    """Check that `key` names a program's conversation that has not expired, or 404."""
    found = _sessions().load(key) if isinstance(key, str) and _KEY.fullmatch(key) else None
    if found is None or found[0].get(API_SESSION) is not True:
        abort(404, "There is no conversation with that key: it was never started, or it has expired.")


def _keep(key):
    """Store the conversation's session, its expiry pushed forward as a browser's is on each use."""
    _sessions().save(key, {API_SESSION: True}, current_app.permanent_session_lifetime)


@bp.post("/chat")
@limited("CHAT_RATE_LIMIT", key=_conversation_key)
def chat():
    """Send a message to a new conversation, or to the one named; answer the reply, whole or streamed."""
    body = request.get_json()
    message = body.get("message")
    if not isinstance(message, str):
        abort(422, 'Send the message as text: {"message": "Hello"}.')
    text = clean(message)
    if error := message_error(text):
        abort(422, error)
    key = body.get("conversation")
    new = key is None
    if new:
        key = secrets.token_urlsafe(32)
    else:
        _open(key)
    _keep(key)
    turn = current_history().add_user_turn(key, text.strip())
    try:
        reply = replies.start(key, turn.id)
    except HTTPException:
        _forget(key, new)
        raise
    if isinstance(reply, Job) and "text/event-stream" in request.headers.get("Accept", ""):
        return _stream(reply, key, new)
    exchange, failure, status = replies.outcome(reply)
    if failure:
        _forget(key, new)
        abort(status, failure)
    return {"conversation": key, "reply": exchange.reply.text, "note": exchange.reply.note}


def _forget(key, new):
    """Take back a message whose reply failed (all of a conversation it would have started): a
    program that retries then sends it again without a copy left behind."""
    with current_locks().hold(key):
        if new:
            current_history().clear(key)
            _sessions().delete(key)
        else:
            current_history().remove_last_exchange(key)


def _stream(job, key, new):
    """The reply as server-sent events: each new piece of text as it is written, then `done` with
    the whole reply (or `error`)."""
    def events(interval):
        yield ": generating\n\n"
        for piece in replies.pieces(job, interval):
            yield _event("message", piece)
        exchange, failure, _ = replies.outcome(job)
        if failure:
            _forget(key, new)
            yield _event("error", json.dumps({"error": failure}))
        else:
            yield _event("done", json.dumps({"conversation": key, "reply": exchange.reply.text,
                                             "note": exchange.reply.note}))

    return replies.event_stream(events(current_app.config["CHAT_STREAM_INTERVAL"]))


def _event(name, data):
    """One server-sent event; a piece with line breaks takes one data line each."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


@bp.get("/chat/<key>")
def conversation(key):
    """The turns of a conversation, oldest first."""
    _open(key)
    turns = []
    for exchange in current_history().exchanges(key):
        turns.append({"role": "user", "text": exchange.user.text})
        if exchange.reply is not None:
            turns.append({"role": "bot", "text": exchange.reply.text, "note": exchange.reply.note})
    return {"conversation": key, "turns": turns}


@bp.post("/scores")
@limited("SCORE_RATE_LIMIT", key=address_key)
def submit_score():
    """Submit a score; answer the board as `/scores.json` does."""
    score = request.get_json().get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float, str)):
        abort(422, 'Send the score as a number: {"score": 42}.')
    try:
        value = parse_score(str(score), current_app.config["SCORE_MAX_ABS"])
    except InvalidScore as error:
        abort(422, str(error))
    return current_board().submit(value).as_json()
