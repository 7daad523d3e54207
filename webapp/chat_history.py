"""Each browser's conversations: lists of turns keyed by the session id (`webapp/sessions.py`) and
the conversation's number.

A browser has several conversations, numbered at random (0 is its first, and the one it had before
there could be several); a conversation exists once it holds a turn, and `conversations` lists
them newest first, titled by their oldest kept message. A turn is `{role, text}`; a bot turn also
names the user turn it answers, carries a note when its generation was cut short, so that a
partial reply is never taken for a whole one, and the browser's feedback on it (like or dislike).
Turns are appended, and changed only by Undo, Regenerate and feedback. Both stores keep the newest
`CHAT_HISTORY_MAX_TURNS / 2` exchanges of each conversation and the `CHAT_MAX_CONVERSATIONS` most
recently used conversations of each browser. Appending a message is one transaction in SQL, one
script on Redis, so concurrent requests of one session (double-click, two tabs) never lose a
turn, whereas a session is written back whole at the end of each request. Replies of one session
are generated one at a time under its lock (`webapp/reply_locks.py`). Every conversation of a
session expires with it: the SQL cleanup deletes what no session owns, and Redis expires all the
keys of a session's conversations together.
"""

import json
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import click
import sqlalchemy as sa
from flask import current_app, request
from flask.cli import with_appcontext

from .database import Base, database, utcnow
from .sessions import SqlSessionStore
from .store_errors import STORE_ERRORS


class ChatTurn(Base):
    """One stored message."""

    __tablename__ = "chat_turns"
    id = sa.Column(sa.Integer, primary_key=True)
    sid = sa.Column(sa.String(255), nullable=False, index=True)
    conversation = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
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
class Conversation:
    """One of a browser's conversations, as its list shows it."""

    number: int
    title: str  # its oldest kept message
    used: datetime  # when a turn was last added (naive UTC)


def new_conversation_number():
    """A number for a new conversation: random, so that two tabs starting one at once never share it."""
    return 1 + secrets.randbelow(2 ** 31 - 1)


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
    """Chat turns in the app's SQL database, capped at `max_turns` per conversation and
    `max_conversations` per session."""

    def __init__(self, db, max_turns, max_conversations):
        self._db = db
        self.max_turns = max_turns
        self.max_conversations = max_conversations

    @staticmethod
    def _of(sid, conversation):
        return sa.and_(ChatTurn.sid == sid, ChatTurn.conversation == conversation)

    def exchanges(self, sid, conversation=0):
        """The conversation's exchanges, oldest first."""
        rows = database().execute(
            sa.select(ChatTurn.id, ChatTurn.role, ChatTurn.text, ChatTurn.reply_to, ChatTurn.note,
                      ChatTurn.feedback)
            .where(self._of(sid, conversation)).order_by(ChatTurn.id)).all()
        database().commit()
        return _exchanges(rows)

    def conversations(self, sid):
        """The session's conversations, the most recently used first."""
        rows = database().execute(
            sa.select(ChatTurn.conversation, sa.func.min(ChatTurn.id), sa.func.max(ChatTurn.created))
            .where(ChatTurn.sid == sid)
            .group_by(ChatTurn.conversation).order_by(sa.func.max(ChatTurn.id).desc())).all()
        titles = dict(database().execute(
            sa.select(ChatTurn.id, ChatTurn.text).where(ChatTurn.id.in_([first for _, first, _ in rows]))).all())
        database().commit()
        return [Conversation(number, titles[first], used) for number, first, used in rows]

    def add_user_turn(self, sid, text, conversation=0):
        """Store a user message and return it; the oldest exchanges, and the least recently used
        conversations, go past the caps."""
        row = ChatTurn(sid=sid, conversation=conversation, role="user", text=text, created=utcnow())
        database().add(row)
        database().flush()
        turn = Turn(row.id, "user", text)  # read before the commit expires the row, or reading it opens a transaction
        keep_users = max(1, self.max_turns // 2)
        oldest_kept = database().execute(
            sa.select(ChatTurn.id).where(self._of(sid, conversation), ChatTurn.role == "user")
            .order_by(ChatTurn.id.desc()).offset(keep_users - 1).limit(1)).scalar()
        if oldest_kept is not None:
            database().execute(sa.delete(ChatTurn).where(
                self._of(sid, conversation),
                sa.or_(sa.and_(ChatTurn.role == "user", ChatTurn.id < oldest_kept),
                       sa.and_(ChatTurn.role == "bot", ChatTurn.reply_to < oldest_kept))))
        past_cap = (sa.select(ChatTurn.conversation).where(ChatTurn.sid == sid)
                    .group_by(ChatTurn.conversation).order_by(sa.func.max(ChatTurn.id).desc())
                    .offset(self.max_conversations))
        database().execute(sa.delete(ChatTurn).where(ChatTurn.sid == sid, ChatTurn.conversation.in_(past_cap)))
        database().commit()
        return turn

    def add_reply(self, sid, user_turn_id, text, note=None, conversation=0):
        """Store the bot's reply to a user turn that is still in the conversation."""
        insert = sa.insert(ChatTurn).from_select(
            ["sid", "conversation", "role", "text", "reply_to", "note", "created"],
            sa.select(sa.literal(sid), sa.literal(conversation), sa.literal("bot"), sa.literal(text),
                      sa.literal(user_turn_id), sa.literal(note, sa.String), sa.literal(utcnow()))
            .where(sa.exists().where(ChatTurn.id == user_turn_id, self._of(sid, conversation))))
        database().execute(insert)
        database().commit()

    def clear(self, sid, conversation=0):
        """Forget every turn of one conversation (which then leaves the list)."""
        database().execute(sa.delete(ChatTurn).where(self._of(sid, conversation)))
        database().commit()

    def remove_last_exchange(self, sid, conversation=0):
        """Forget the newest message and its reply (call under lock); return the message, or None."""
        last = database().execute(
            sa.select(ChatTurn.id, ChatTurn.text).where(self._of(sid, conversation), ChatTurn.role == "user")
            .order_by(ChatTurn.id.desc()).limit(1)).first()
        if last is not None:
            database().execute(sa.delete(ChatTurn).where(
                self._of(sid, conversation), sa.or_(ChatTurn.id == last.id, ChatTurn.reply_to == last.id)))
        database().commit()
        return last.text if last is not None else None

    def remove_reply(self, sid, user_turn_id, conversation=0):
        """Forget the reply to one user turn (call under lock)."""
        database().execute(sa.delete(ChatTurn).where(
            self._of(sid, conversation), ChatTurn.role == "bot", ChatTurn.reply_to == user_turn_id))
        database().commit()

    def set_feedback(self, sid, user_turn_id, feedback, conversation=0):
        """Mark the reply to one user turn "like", "dislike" or (None) neither."""
        database().execute(sa.update(ChatTurn).where(
            self._of(sid, conversation), ChatTurn.role == "bot", ChatTurn.reply_to == user_turn_id)
            .values(feedback=feedback))
        database().commit()

    def delete_expired(self):
        """Delete expired sessions and the turns of every conversation of a session that no longer
        exists, in one transaction of plain SQL (through the ORM it took about ten times as long)."""
        with self._db.write() as connection:
            SqlSessionStore.delete_expired(connection)
            return connection.execute(
                f"DELETE FROM chat_turns WHERE sid NOT IN ({SqlSessionStore.LIVE_IDS})").rowcount


class RedisChatHistory:
    """Chat turns in a Redis list per conversation, and a sorted set per session of its
    conversations by their last use (in microseconds); capped at `max_turns` per conversation and `max_conversations` per
    session, and all of a session's keys expire together, `lifetime` after their last use."""

    # Append a turn and keep the newest max_turns / 2 user turns (at least one) with what follows
    # them, as the SQL store keeps the newest exchanges: counting list entries instead would keep
    # more messages than exchanges while replies are pending. Then mark the conversation used, drop
    # the least recently used ones past the cap, and push every key of the session's chats forward
    # together (keys named from KEYS[3], as the store names them: one Redis, not a cluster).
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
        -- Used now, in microseconds of the server's clock, and always after the last use.
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
        local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
        if newest[2] and tonumber(newest[2]) >= now then now = tonumber(newest[2]) + 1 end
        redis.call('ZADD', KEYS[2], now, ARGV[4])
        local function key(number)
            if number == '0' then return KEYS[3] end
            return KEYS[3] .. ':' .. number
        end
        local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
        if extra > 0 then
            for _, number in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do
                redis.call('DEL', key(number))
                redis.call('ZREM', KEYS[2], number)
            end
        end
        redis.call('EXPIRE', KEYS[2], ARGV[3])
        for _, number in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
            redis.call('EXPIRE', key(number), ARGV[3])
        end
    """

    def __init__(self, client, prefix, max_turns, max_conversations, lifetime):
        self._client = client
        self._prefix = prefix + "chat:"
        self._lists = prefix + "chats:"
        self.max_turns = max_turns
        self.max_conversations = max_conversations
        self.lifetime = lifetime
        self._append_script = client.register_script(self._APPEND)

    def _key(self, sid, conversation=0):
        # Conversation 0 keeps the key a browser's one conversation had before there could be several.
        return self._prefix + sid + (f":{conversation}" if conversation else "")

    def _turns(self, sid, conversation):
        pipe = self._client.pipeline(transaction=True)
        pipe.lrange(self._key(sid, conversation), 0, -1)
        pipe.expire(self._key(sid, conversation), self.lifetime)
        rows, _ = pipe.execute()
        for row in rows:
            turn = json.loads(row)
            yield (turn["id"], turn["role"], turn["text"], turn.get("reply_to"), turn.get("note"),
                   turn.get("feedback"))

    def exchanges(self, sid, conversation=0):
        """The conversation's exchanges, oldest first."""
        return _exchanges(self._turns(sid, conversation))

    def conversations(self, sid):
        """The session's conversations, the most recently used first (their expiry pushed forward)."""
        chats = self._lists + sid
        used = {int(number): score for number, score in self._client.zrange(chats, 0, -1, withscores=True)}
        if 0 not in used and self._client.exists(self._key(sid)):  # kept before there could be several
            used[0] = time.time() * 1e6
            self._client.zadd(chats, {"0": used[0]})
        numbers = sorted(used, key=used.get, reverse=True)
        pipe = self._client.pipeline(transaction=False)
        for number in numbers:
            pipe.lindex(self._key(sid, number), 0)
            pipe.expire(self._key(sid, number), self.lifetime)
        pipe.expire(chats, self.lifetime)
        firsts = pipe.execute()[:-1:2]
        found = []
        for number, first in zip(numbers, firsts):
            if first is None:  # cleared, or undone to nothing
                self._client.zrem(chats, number)
            else:
                found.append(Conversation(number, json.loads(first)["text"],
                                          datetime.fromtimestamp(used[number] / 1e6, timezone.utc).replace(tzinfo=None)))
        return found

    def _append(self, sid, conversation, turn):
        self._append_script(keys=[self._key(sid, conversation), self._lists + sid, self._key(sid)],
                            args=[json.dumps(turn), max(1, self.max_turns // 2), self.lifetime,
                                  conversation, self.max_conversations])

    def add_user_turn(self, sid, text, conversation=0):
        """Store a user message and return it; the oldest turns, and the least recently used
        conversations, go past the caps."""
        turn_id = self._client.incr(self._prefix + "ids")
        self._append(sid, conversation, {"id": turn_id, "role": "user", "text": text})
        return Turn(turn_id, "user", text)

    def add_reply(self, sid, user_turn_id, text, note=None, conversation=0):
        """Store the bot's reply to a user turn that is still in the conversation (call under lock)."""
        if any(turn_id == user_turn_id for turn_id, *_ in self._turns(sid, conversation)):
            self._append(sid, conversation, {"id": None, "role": "bot", "text": text,
                                             "reply_to": user_turn_id, "note": note})

    def clear(self, sid, conversation=0):
        """Forget every turn of one conversation (which then leaves the list)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._key(sid, conversation))
        pipe.zrem(self._lists + sid, conversation)
        pipe.execute()

    def _rewrite(self, sid, conversation, change):
        """Store `change(turns)` in place of the conversation's turns, atomically (WATCH, retried on a
        concurrent append); return the turns as they were."""
        key = self._key(sid, conversation)
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

    def remove_last_exchange(self, sid, conversation=0):
        """Forget the newest message and its reply (call under lock); return the message, or None."""
        def without_last(turns):
            last = _last_user_turn(turns)
            gone = (last["id"],) if last else ()
            return [turn for turn in turns if turn["id"] not in gone and turn.get("reply_to") not in gone]
        last = _last_user_turn(self._rewrite(sid, conversation, without_last))
        return last["text"] if last is not None else None

    def remove_reply(self, sid, user_turn_id, conversation=0):
        """Forget the reply to one user turn (call under lock)."""
        self._rewrite(sid, conversation,
                      lambda turns: [turn for turn in turns if not _is_reply_to(turn, user_turn_id)])

    def set_feedback(self, sid, user_turn_id, feedback, conversation=0):
        """Mark the reply to one user turn "like", "dislike" or (None) neither."""
        def mark(turns):
            for turn in turns:
                if _is_reply_to(turn, user_turn_id):
                    turn["feedback"] = feedback
            return turns
        self._rewrite(sid, conversation, mark)

    def delete_expired(self):
        """Nothing to do: Redis expires a session's conversations with it."""
        return 0


def _last_user_turn(turns):
    """The newest user turn of stored Redis turns, or None."""
    return next((turn for turn in reversed(turns) if turn["role"] == "user"), None)


def _is_reply_to(turn, user_turn_id):
    """Whether a stored Redis turn is the bot's reply to that user turn."""
    return turn["role"] == "bot" and turn.get("reply_to") == user_turn_id


def maybe_delete_expired():
    """Now and then, on a post, remove what expired sessions left behind."""
    # Only posts store sessions and turns, so only they need to make room; a poll or a page never pays.
    if request.method != "POST":
        return
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
