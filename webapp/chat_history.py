"""Each browser's chat history: an append-only list of turns keyed by the flask-session id.

A turn is `{role, text}`; a bot turn also names the user turn it answers. Appending is one INSERT,
so concurrent requests of one session (double-click, two tabs) never lose a turn. Replies of one
session are generated one at a time under `lock(sid)`, so each reply sees the conversation before it.
"""

import random
import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import click
import sqlalchemy as sa
from flask import current_app, session
from flask.cli import with_appcontext
from sqlalchemy.orm import DeclarativeBase

from .sessions import database


class _Base(DeclarativeBase):
    pass


class ChatTurn(_Base):
    """One stored message."""

    __tablename__ = "chat_turns"
    id = sa.Column(sa.Integer, primary_key=True)
    sid = sa.Column(sa.String(255), nullable=False, index=True)
    role = sa.Column(sa.String(8), nullable=False)
    text = sa.Column(sa.Text, nullable=False)
    reply_to = sa.Column(sa.Integer, nullable=True)
    created = sa.Column(sa.DateTime, nullable=False)


@dataclass(frozen=True)
class Turn:
    """A message as the page and the model see it."""

    id: int
    role: str
    text: str


@dataclass(frozen=True)
class Exchange:
    """A user turn and, once generated, the bot's reply to it."""

    user: Turn
    reply: Turn | None


def _utcnow():
    # flask-session stores naive UTC expiry times; compare like with like.
    return datetime.now(timezone.utc).replace(tzinfo=None)


class _SessionLocks:
    """One lock per session id, dropped when nobody holds or waits for it."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks = {}
        self._users = defaultdict(int)

    @contextmanager
    def hold(self, sid):
        with self._guard:
            lock = self._locks.setdefault(sid, threading.Lock())
            self._users[sid] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                self._users[sid] -= 1
                if not self._users[sid]:
                    del self._users[sid], self._locks[sid]


class ChatHistory:
    """Chat turns in the app's SQL database, capped at `max_turns` per session."""

    def __init__(self, max_turns):
        self.max_turns = max_turns
        self._locks = _SessionLocks()

    def lock(self, sid):
        """Serialise reply generation and clearing for one session within this process."""
        return self._locks.hold(sid)

    def exchanges(self, sid):
        """The session's conversation, oldest first."""
        rows = database().execute(
            sa.select(ChatTurn).where(ChatTurn.sid == sid).order_by(ChatTurn.id)).scalars().all()
        database().commit()
        replies = {row.reply_to: Turn(row.id, row.role, row.text) for row in rows if row.role == "bot"}
        return [Exchange(Turn(row.id, row.role, row.text), replies.get(row.id))
                for row in rows if row.role == "user"]

    def add_user_turn(self, sid, text):
        """Store a user message and return it; the oldest turns go past the cap."""
        row = ChatTurn(sid=sid, role="user", text=text, created=_utcnow())
        database().add(row)
        database().flush()
        keep_users = max(1, self.max_turns // 2)
        oldest_kept = database().execute(
            sa.select(ChatTurn.id).where(ChatTurn.sid == sid, ChatTurn.role == "user")
            .order_by(ChatTurn.id.desc()).offset(keep_users - 1).limit(1)).scalar()
        if oldest_kept is not None:
            database().execute(sa.delete(ChatTurn).where(
                ChatTurn.sid == sid,
                sa.or_(sa.and_(ChatTurn.role == "user", ChatTurn.id < oldest_kept),
                       sa.and_(ChatTurn.role == "bot", ChatTurn.reply_to < oldest_kept))))
        database().commit()
        return Turn(row.id, "user", text)

    def add_reply(self, sid, user_turn_id, text):
        """Store the bot's reply to a user turn that is still in the history."""
        insert = sa.insert(ChatTurn).from_select(
            ["sid", "role", "text", "reply_to", "created"],
            sa.select(sa.literal(sid), sa.literal("bot"), sa.literal(text),
                      sa.literal(user_turn_id), sa.literal(_utcnow()))
            .where(sa.exists().where(ChatTurn.id == user_turn_id, ChatTurn.sid == sid)))
        database().execute(insert)
        database().commit()

    def clear(self, sid):
        """Forget every turn of one session."""
        database().execute(sa.delete(ChatTurn).where(ChatTurn.sid == sid))
        database().commit()

    def delete_expired(self):
        """Delete expired sessions and the turns of every session that no longer exists."""
        interface = current_app.session_interface
        sessions = interface.sql_session_model
        database().execute(sa.delete(sessions).where(sessions.expiry <= _utcnow()))
        live = sa.select(sa.func.substr(sessions.session_id, len(interface.key_prefix) + 1))
        deleted = database().execute(sa.delete(ChatTurn).where(ChatTurn.sid.not_in(live))).rowcount
        database().commit()
        return deleted


def _maybe_delete_expired():
    """Now and then, on a request, remove what expired sessions left behind."""
    every = current_app.config["SESSION_CLEANUP_EVERY"]
    if every and random.randrange(every) == 0:
        current_history().delete_expired()


@click.command("cleanup-sessions")
@with_appcontext
def cleanup_sessions_command():
    """Delete expired sessions and their chat turns (for a cron job)."""
    click.echo(f"deleted the turns of sessions that expired: {current_history().delete_expired()} turns")


def init_app(app):
    """Create the history store and its table once."""
    app.extensions["chat_history"] = ChatHistory(max_turns=app.config["CHAT_HISTORY_MAX_TURNS"])
    with app.app_context():
        ChatTurn.__table__.create(app.extensions["sqlalchemy"].engine, checkfirst=True)
    app.before_request(_maybe_delete_expired)
    app.cli.add_command(cleanup_sessions_command)


def current_history():
    """The chat history store of the app handling this request."""
    return current_app.extensions["chat_history"]


def current_sid():
    """The id flask-session gave this browser's session, which must then be stored."""
    session.setdefault("chat", True)  # flask-session never stores an empty session
    return session.sid
