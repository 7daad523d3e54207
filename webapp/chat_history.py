"""Each browser's chat history: a list of turns keyed by the session id (`webapp/sessions.py`).

A turn is `{role, text}`; a bot turn also names the user turn it answers, carries a note when
its generation was cut short, so that a partial reply is never taken for a whole one, and the
browser's feedback on it (like or dislike). Turns are appended, and changed only by Undo,
Regenerate and feedback. Both stores keep the newest `CHAT_HISTORY_MAX_TURNS / 2` exchanges.
Appending a message is one transaction (an INSERT, then a SELECT and a DELETE for the cap) in SQL,
one script on Redis, so concurrent requests of one session (double-click, two tabs) never lose a
turn, whereas a session is written back whole at the end of each request. Replies of
one session are generated one at a time under its lock (`webapp/reply_locks.py`).
"""

import json
import random
from dataclasses import dataclass

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext

from .database import Base, database, utcnow
from .sessions import SqlSessionStore
from .store_errors import STORE_ERRORS


class ChatTurn(Base):
    """One stored message."""

    __tablename__ = "chat_turns"
    id = sa.Column(sa.Integer, primary_key=True)
    sid = sa.Column(sa.String(255), nullable=False, index=True)
    role = sa.Column(sa.String(8), nullable=False)
    text = sa.Column(sa.Text, nullable=False)
    reply_to = sa.Column(sa.Integer, nullable=True)
    note = sa.Column(sa.String(40), nullable=True)
    feedback = sa.Column(sa.String(8), nullable=True)
    created = sa.Column(sa.DateTime, nullable=False)


@dataclass(frozen=True)
class Turn:
    """A message as the page and the model see it."""

    id: int | None
    role: str
    text: str
    note: str | None = None
    feedback: str | None = None


@dataclass(frozen=True)
class Exchange:
    """A user turn and, once generated, the bot's reply to it."""

    user: Turn
    reply: Turn | None


def _exchanges(turns):
    """Pair stored turns `(id, role, text, reply_to, note, feedback)`, oldest first, into exchanges."""
    turns = list(turns)
    replies = {reply_to: Turn(id, role, text, note, feedback)
               for id, role, text, reply_to, note, feedback in turns if role == "bot"}
    return [Exchange(Turn(id, role, text), replies.get(id))
            for id, role, text, *_ in turns if role == "user"]


class SqlChatHistory:
    """Chat turns in the app's SQL database, capped at `max_turns` per session."""

    def __init__(self, max_turns):
        self.max_turns = max_turns

    def exchanges(self, sid):
        """The session's conversation, oldest first."""
        rows = database().execute(
            sa.select(ChatTurn.id, ChatTurn.role, ChatTurn.text, ChatTurn.reply_to, ChatTurn.note,
                      ChatTurn.feedback)
            .where(ChatTurn.sid == sid).order_by(ChatTurn.id)).all()
        database().commit()
        return _exchanges(rows)

    def add_user_turn(self, sid, text):
        """Store a user message and return it; the oldest exchanges go past the cap."""
        row = ChatTurn(sid=sid, role="user", text=text, created=utcnow())
        database().add(row)
        database().flush()
        turn = Turn(row.id, "user", text)  # read before the commit expires the row, or reading it opens a transaction
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
        return turn

    def add_reply(self, sid, user_turn_id, text, note=None):
        """Store the bot's reply to a user turn that is still in the history."""
        insert = sa.insert(ChatTurn).from_select(
            ["sid", "role", "text", "reply_to", "note", "created"],
            sa.select(sa.literal(sid), sa.literal("bot"), sa.literal(text), sa.literal(user_turn_id),
                      sa.literal(note, sa.String), sa.literal(utcnow()))
            .where(sa.exists().where(ChatTurn.id == user_turn_id, ChatTurn.sid == sid)))
        database().execute(insert)
        database().commit()

    def clear(self, sid):
        """Forget every turn of one session."""
        database().execute(sa.delete(ChatTurn).where(ChatTurn.sid == sid))
        database().commit()

    def remove_last_exchange(self, sid):
        """Forget the newest message and its reply (call under lock); return the message, or None."""
        last = database().execute(
            sa.select(ChatTurn.id, ChatTurn.text).where(ChatTurn.sid == sid, ChatTurn.role == "user")
            .order_by(ChatTurn.id.desc()).limit(1)).first()
        if last is not None:
            database().execute(sa.delete(ChatTurn).where(
                ChatTurn.sid == sid, sa.or_(ChatTurn.id == last.id, ChatTurn.reply_to == last.id)))
        database().commit()
        return last.text if last is not None else None

    def remove_reply(self, sid, user_turn_id):
        """Forget the reply to one user turn (call under lock)."""
        database().execute(sa.delete(ChatTurn).where(
            ChatTurn.sid == sid, ChatTurn.role == "bot", ChatTurn.reply_to == user_turn_id))
        database().commit()

    def set_feedback(self, sid, user_turn_id, feedback):
        """Mark the reply to one user turn "like", "dislike" or (None) neither."""
        database().execute(sa.update(ChatTurn).where(
            ChatTurn.sid == sid, ChatTurn.role == "bot", ChatTurn.reply_to == user_turn_id)
            .values(feedback=feedback))
        database().commit()

    def delete_expired(self):
        """Delete expired sessions and the turns of every session that no longer exists."""
        SqlSessionStore.delete_expired()
        live = SqlSessionStore.live_ids()
        deleted = database().execute(sa.delete(ChatTurn).where(ChatTurn.sid.not_in(live))).rowcount
        database().commit()
        return deleted


class RedisChatHistory:
    """Chat turns in a Redis list per session, expiring with the session, capped at `max_turns`."""

    # Append a turn and keep the newest max_turns / 2 user turns (at least one) with what follows
    # them, as the SQL store keeps the newest exchanges: counting list entries instead would keep
    # more messages than exchanges while replies are pending.
    _APPEND = """
        redis.call('RPUSH', KEYS[1], ARGV[1])
        local keep, seen = tonumber(ARGV[2]), 0
        local turns = redis.call('LRANGE', KEYS[1], 0, -1)
        for index = #turns, 1, -1 do
            if cjson.decode(turns[index])['role'] == 'user' then
                seen = seen + 1
                if seen == keep then
                    redis.call('LTRIM', KEYS[1], index - 1, -1)
                    break
                end
            end
        end
        redis.call('EXPIRE', KEYS[1], ARGV[3])
    """

    def __init__(self, client, prefix, max_turns, lifetime):
        self._client = client
        self._prefix = prefix + "chat:"
        self.max_turns = max_turns
        self.lifetime = lifetime
        self._append_script = client.register_script(self._APPEND)

    def _key(self, sid):
        return self._prefix + sid

    def _turns(self, sid):
        pipe = self._client.pipeline(transaction=True)
        pipe.lrange(self._key(sid), 0, -1)
        pipe.expire(self._key(sid), self.lifetime)
        rows, _ = pipe.execute()
        for row in rows:
            turn = json.loads(row)
            yield (turn["id"], turn["role"], turn["text"], turn.get("reply_to"), turn.get("note"),
                   turn.get("feedback"))

    def exchanges(self, sid):
        """The session's conversation, oldest first."""
        return _exchanges(self._turns(sid))

    def _append(self, sid, turn):
        self._append_script(keys=[self._key(sid)],
                            args=[json.dumps(turn), max(1, self.max_turns // 2), self.lifetime])

    def add_user_turn(self, sid, text):
        """Store a user message and return it; the oldest turns go past the cap."""
        turn_id = self._client.incr(self._prefix + "ids")
        self._append(sid, {"id": turn_id, "role": "user", "text": text})
        return Turn(turn_id, "user", text)

    def add_reply(self, sid, user_turn_id, text, note=None):
        """Store the bot's reply to a user turn that is still in the history (call under lock)."""
        if any(turn_id == user_turn_id for turn_id, *_ in self._turns(sid)):
            self._append(sid, {"id": None, "role": "bot", "text": text, "reply_to": user_turn_id,
                               "note": note})

    def clear(self, sid):
        """Forget every turn of one session."""
        self._client.delete(self._key(sid))

    def _rewrite(self, sid, change):
        """Store `change(turns)` in place of the session's turns, atomically (WATCH, retried on a
        concurrent append); return the turns as they were."""
        key = self._key(sid)
        before = []

        def rewrite(pipe):
            before[:] = [json.loads(row) for row in pipe.lrange(key, 0, -1)]
            after = change([dict(turn) for turn in before])
            pipe.multi()
            pipe.delete(key)
            if after:
                pipe.rpush(key, *map(json.dumps, after))
                pipe.expire(key, self.lifetime)
        self._client.transaction(rewrite, key)
        return before

    def remove_last_exchange(self, sid):
        """Forget the newest message and its reply (call under lock); return the message, or None."""
        def without_last(turns):
            last = _last_user_turn(turns)
            gone = (last["id"],) if last else ()
            return [turn for turn in turns if turn["id"] not in gone and turn.get("reply_to") not in gone]
        last = _last_user_turn(self._rewrite(sid, without_last))
        return last["text"] if last is not None else None

    def remove_reply(self, sid, user_turn_id):
        """Forget the reply to one user turn (call under lock)."""
        self._rewrite(sid, lambda turns: [turn for turn in turns if not _is_reply_to(turn, user_turn_id)])

    def set_feedback(self, sid, user_turn_id, feedback):
        """Mark the reply to one user turn "like", "dislike" or (None) neither."""
        def mark(turns):
            for turn in turns:
                if _is_reply_to(turn, user_turn_id):
                    turn["feedback"] = feedback
            return turns
        self._rewrite(sid, mark)

    def delete_expired(self):
        """Nothing to do: Redis expires a history with its session."""
        return 0


def _last_user_turn(turns):
    """The newest user turn of stored Redis turns, or None."""
    return next((turn for turn in reversed(turns) if turn["role"] == "user"), None)


def _is_reply_to(turn, user_turn_id):
    """Whether a stored Redis turn is the bot's reply to that user turn."""
    return turn["role"] == "bot" and turn.get("reply_to") == user_turn_id


def maybe_delete_expired():
    """Now and then, on a request, remove what expired sessions left behind."""
    every = current_app.config["SESSION_CLEANUP_EVERY"]
    if every and random.randrange(every) == 0:
        try:
            current_history().delete_expired()
        except STORE_ERRORS as error:  # housekeeping: the request itself may need no store at all
            current_app.logger.warning("could not delete expired sessions: %s", error)


@click.command("cleanup-sessions")
@with_appcontext
def cleanup_sessions_command():
    """Delete expired sessions and their chat turns (for a cron job)."""
    click.echo(f"deleted the turns of sessions that expired: {current_history().delete_expired()} turns")


def current_history():
    """The chat history store of the app handling this request."""
    return current_app.extensions["stores"].history
