"""The chat page: session state, one conversation per browser, answered by the preloaded model."""

from flask import Blueprint, abort, current_app, redirect, request, url_for

from ..chat_history import Exchange, Turn, current_history
from ..chat_model import ModelError, current_model
from ..rendering import render, wants_fragment
from ..state import browser_id

bp = Blueprint("chat", __name__)

TITLE = "Chat"
DESCRIPTION = "Session state: a chatbot whose history belongs to your browser alone."
RATE_LIMITS = {"send": "CHAT_RATE_LIMIT", "reply": "CHAT_RATE_LIMIT"}
MODEL_FAILED = "The model could not answer this time. Your message is kept: retry."


def _render(fragment, status=200, **context):
    """Render the chat page, or one of its fragments for htmx."""
    if "exchanges" not in context:
        context["exchanges"] = current_history().exchanges(browser_id())
    return render("chat/page.html", fragment, status, **context)


def _message_error(text):
    """Why a message cannot be sent, or None."""
    limit = current_app.config["CHAT_MAX_MESSAGE_CHARS"]
    if not text.strip():
        return "Type a message before sending."
    if len(text) > limit:
        return f"Messages are limited to {limit} characters; this one has {len(text)}."
    return None


def _answer(sid, turn_id):
    """Make sure the user turn `turn_id` has a reply; return its exchange and a failure or None."""
    history = current_history()
    with history.lock(sid):
        exchanges = history.exchanges(sid)
        index = next((i for i, e in enumerate(exchanges) if e.user.id == turn_id), None)
        if index is None:
            abort(404, "That message is no longer in this chat: it was cleared or has expired.")
        exchange = exchanges[index]
        if exchange.reply is not None:
            return exchange, None
        texts = [turn.text for e in exchanges[:index] for turn in (e.user, e.reply) if turn]
        try:
            text = current_model().reply(texts + [exchange.user.text])
        except ModelError:
            current_app.logger.exception("chat model failed on turn %s", turn_id)
            return exchange, MODEL_FAILED
        history.add_reply(sid, turn_id, text)
        return Exchange(exchange.user, Turn(None, "bot", text)), None


def _after_plain_post(failure=None, turn_id=None):
    """Post/redirect/get for forms sent without JavaScript; a failure is shown on the page."""
    if failure:
        return _render("chat/_log.html", 500, failures={turn_id: failure})
    return redirect(url_for("chat.index"), 303)


@bp.get("/chat")
def index():
    """Show this browser's conversation and the message box."""
    return _render("chat/_log.html")


@bp.post("/chat")
def send():
    """Store the user's message; htmx gets it back at once, a plain form also waits for the reply."""
    text = request.form.get("message", "")
    error = _message_error(text)
    if error:
        return _render("chat/_form.html", 422, error=error, value=text)
    sid = browser_id()
    turn = current_history().add_user_turn(sid, text.strip())
    if wants_fragment():
        return _render("chat/_sent.html", exchanges=[], exchange=Exchange(turn, None))
    _, failure = _answer(sid, turn.id)
    return _after_plain_post(failure, turn.id)


@bp.post("/chat/replies/<int:turn_id>")
def reply(turn_id):
    """Generate (or return the already generated) reply to one of this browser's messages."""
    exchange, failure = _answer(browser_id(), turn_id)
    if not wants_fragment():
        return _after_plain_post(failure, turn_id)
    return _render("chat/_reply.html", 500 if failure else 200, exchanges=[],
                   exchange=exchange, failure=failure)


@bp.post("/chat/clear")
def clear():
    """Forget this browser's conversation, and only this browser's."""
    sid = browser_id()
    history = current_history()
    with history.lock(sid):
        history.clear(sid)
    if wants_fragment():
        return _render("chat/_log.html", exchanges=[])
    return redirect(url_for("chat.index"), 303)
