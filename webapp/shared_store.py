"""The optional Redis server that makes state global across worker processes and machines.

Setting `REDIS_URL` moves the score board, the sessions and the chat histories to Redis, under
`REDIS_KEY_PREFIX`, so that any number of gunicorn workers on any number of machines share them.
When a store (Redis, or the embedded database) cannot be reached, the requests that need it get a
503 with a message (see `webapp/errors.py`) while the others go on, and the next request after it
returns succeeds: redis-py reconnects by itself.
"""

import redis
import sqlalchemy.exc
from flask import abort, session
from flask.sessions import SessionInterface
from flask_session.base import ServerSideSession

# What a store raises when it cannot be reached or cannot answer: Redis down, or the embedded
# database's disk full, folder unwritable, file locked for too long.
STORE_ERRORS = (redis.RedisError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)
STORE_DOWN = ("A store this page needs cannot be reached right now. Nothing you had stored is lost: "
              "try again in a moment.")


def init_app(app):
    """Connect to Redis once if the config names one."""
    url = app.config["REDIS_URL"]
    if url:
        app.extensions["redis"] = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)


def check_workers(app, workers):
    """Refuse to serve state kept in one process's memory from several worker processes."""
    local = [name for name, store in app.extensions.items()
             if getattr(store, "shared_between_processes", None) is False]
    if workers > 1 and local:
        raise RuntimeError(
            f"The score board and the other global state ({', '.join(local)}) are kept in memory, "
            f"which is global to one process only, but {workers} workers were asked for: each would "
            f"show its own. Run one worker (HXSTATE_WORKERS=1, no --workers) and scale it with "
            f"threads (HXSTATE_THREADS), or share the state between workers through Redis "
            f"(HXSTATE_REDIS_URL=redis://host:6379/0).")


def redis_client(app):
    """The app's Redis client, or None for the embedded stores."""
    return app.extensions.get("redis")


class UnavailableSession(ServerSideSession):
    """Stands in for a session whose store could not be read; it is never saved."""


class OutageTolerantSessions(SessionInterface):
    """Wraps a flask-session interface so that a store outage fails only the requests that need it.

    Opening a session otherwise happens before any view runs, so an unreachable store would
    fail every page, even those that use no session, with no way to render a message.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def open_session(self, app, request):
        try:
            return self.inner.open_session(app, request)
        except STORE_ERRORS:
            app.logger.exception("session store unreachable")
            return UnavailableSession(sid=None)

    def save_session(self, app, session, response):
        # Saving a stand-in would overwrite the stored session with an empty one.
        if not isinstance(session, UnavailableSession):
            self.inner.save_session(app, session, response)


def session_unavailable():
    """Whether this request's session could not be read from its store."""
    return isinstance(session._get_current_object(), UnavailableSession)


def readable_session():
    """This request's session, or a 503 saying its store cannot be reached."""
    if session_unavailable():
        abort(503, STORE_DOWN)
    return session
