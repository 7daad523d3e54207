"""Where all state is kept: every store on one backend, chosen here and nowhere else.

Embedded (the default) keeps everything in the SQLite database of the instance folder, except the
reply locks and the rate-limit counts, which live in the one worker process this allows. With
`REDIS_URL`, everything lives in Redis under `REDIS_KEY_PREFIX`, shared by any number of workers
and machines. Each store has one interface and its two implementations side by side in its module:

| store | interface | embedded | Redis |
| --- | --- | --- | --- |
| score board | `submit`, `snapshot` | `score_board.SqlScoreBoard` | `score_board.RedisScoreBoard` |
| global values | `get`, `update` | `state.SqlStateStore` | `state.RedisStateStore` |
| chat history | `conversations`, `exchanges`, `add_user_turn`, `add_reply`, ... | `chat_history.SqlChatHistory` | `chat_history.RedisChatHistory` |
| reply locks | `acquire`, `hold` | `reply_locks.ProcessLocks` | `reply_locks.RedisLocks` |
| sessions | `load`, `save` (under `sessions.Sessions`) | `sessions.SqlSessionStore` | `sessions.RedisSessionStore` |
| rate limits | `hit`, `get_window_stats` (the `limits` package's fixed window) | `limits.memory_counts` | `limits.redis_counts` |
"""

from dataclasses import dataclass
from typing import Any

from flask import current_app

from . import chat_history, database, limits, reply_locks, score_board, sessions, state
from .redis_connection import connect


@dataclass(frozen=True)
class Stores:
    """The stores of one app, all on the same backend."""

    board: Any
    values: Any
    history: Any
    locks: Any
    sessions: Any
    limits: Any
    # Whether several worker processes may share these stores (the embedded locks and rate-limit
    # counts are in the process).
    shared_between_processes: bool


def _embedded(app):
    config = app.config
    db = database.init_app(app)
    app.before_request(chat_history.maybe_delete_expired)
    return Stores(
        board=score_board.SqlScoreBoard(db, config["SCORE_BOARD_SIZE"]),
        values=state.SqlStateStore(db),
        history=chat_history.SqlChatHistory(db, config["CHAT_HISTORY_MAX_TURNS"], config["CHAT_MAX_CONVERSATIONS"]),
        locks=reply_locks.ProcessLocks(config["CHAT_LOCK_WAIT"]),
        sessions=sessions.SqlSessionStore(db),
        limits=limits.memory_counts(),
        shared_between_processes=False)


def _redis(app, url):
    config = app.config
    client = connect(url)
    prefix = config["REDIS_KEY_PREFIX"]
    return Stores(
        board=score_board.RedisScoreBoard(client, prefix, config["SCORE_BOARD_SIZE"]),
        values=state.RedisStateStore(client, prefix),
        history=chat_history.RedisChatHistory(client, prefix, config["CHAT_HISTORY_MAX_TURNS"],
                                              config["CHAT_MAX_CONVERSATIONS"],
                                              int(app.permanent_session_lifetime.total_seconds())),
        locks=reply_locks.RedisLocks(client, prefix, config["CHAT_LOCK_TIMEOUT"], config["CHAT_LOCK_WAIT"]),
        sessions=sessions.RedisSessionStore(client, prefix),
        limits=limits.redis_counts(client, url, prefix),
        shared_between_processes=True)


def init_app(app):
    """Create the app's stores once, on Redis when the config names one, else embedded."""
    url = app.config["REDIS_URL"]
    stores = app.extensions["stores"] = _redis(app, url) if url else _embedded(app)
    sessions.init_app(app, stores.sessions)
    app.cli.add_command(chat_history.cleanup_sessions_command)


def current_stores():
    """The stores of the app handling this request."""
    return current_app.extensions["stores"]
