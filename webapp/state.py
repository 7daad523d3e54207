"""Declared state for pages, as Gradio's `gr.State(value=...)`: per browser, or shared by everyone.

    visits = SessionState("words.visits", default=0)   # each browser its own value
    total = GlobalState("words.total", default=0)       # one value for every visitor

Declare them at module level in a page module; read and change them inside a request.
`SessionState` lives in the browser's server-side session (flask-session): keep values small and
JSON-serialisable; two overlapping requests of one browser that both set it keep the last write.
`GlobalState` lives in this process's memory behind a lock or, with `REDIS_URL`, in Redis; change
it with `update`, which is atomic in both, so that no concurrent change is lost.
"""

import copy
import json
import threading

from flask import current_app

from .redis_connection import redis_client
from .session_outages import readable_session


def browser_id():
    """The id of this browser's session, for stores keyed by it; the session is then kept."""
    session = readable_session()
    session.setdefault("started", True)  # flask-session never stores an empty session
    return session.sid


class SessionState:
    """A value each browser keeps for itself, starting from `default`."""

    def __init__(self, name, default=None):
        self.key = f"state.{name}"
        self.default = default

    def get(self):
        """A copy of this browser's value (or of the default): change it, then `set` it."""
        session = readable_session()
        return copy.deepcopy(session[self.key] if self.key in session else self.default)

    def set(self, value):
        """Keep `value` for this browser; the session is written when the request ends, and only
        if some value changed."""
        browser_id()
        session = readable_session()
        if self.key not in session or session[self.key] != value:
            session[self.key] = copy.deepcopy(value)


class GlobalState:
    """A value every visitor shares, starting from `default`."""

    def __init__(self, name, default=None):
        self.name = name
        self.default = default

    def get(self):
        """The current value."""
        return current_app.extensions["global_state"].get(self.name, self.default)

    def update(self, change):
        """Replace the value by `change(value)` atomically; return the new value."""
        return current_app.extensions["global_state"].update(self.name, self.default, change)


class MemoryStateStore:
    """Global values in this process's memory, global to this process only."""

    shared_between_processes = False

    def __init__(self):
        self._values = {}
        self._lock = threading.Lock()

    def get(self, name, default):
        with self._lock:
            return copy.deepcopy(self._values.get(name, default))

    def update(self, name, default, change):
        with self._lock:
            value = change(copy.deepcopy(self._values.get(name, default)))
            self._values[name] = value
            return copy.deepcopy(value)


class RedisStateStore:
    """Global values as JSON in Redis, updated under WATCH so that concurrent changes retry."""

    shared_between_processes = True

    def __init__(self, client, prefix):
        self._client = client
        self._prefix = prefix + "state:"

    def get(self, name, default):
        stored = self._client.get(self._prefix + name)
        return json.loads(stored) if stored is not None else copy.deepcopy(default)

    def update(self, name, default, change):
        key = self._prefix + name

        def attempt(pipe):
            stored = pipe.get(key)
            value = change(json.loads(stored) if stored is not None else copy.deepcopy(default))
            pipe.multi()
            pipe.set(key, json.dumps(value))
            return value

        return self._client.transaction(attempt, key, value_from_callable=True)


def init_app(app):
    """Create the store of global values once: in Redis when the config names one, else in memory."""
    client = redis_client(app)
    app.extensions["global_state"] = (RedisStateStore(client, app.config["REDIS_KEY_PREFIX"])
                                      if client is not None else MemoryStateStore())
