"""Declared state for pages, as Gradio's `gr.State(value=...)`: per browser, or shared by everyone.

    visits = SessionState("words.visits", default=0)   # each browser its own value
    total = GlobalState("words.total", default=0)       # one value for every visitor

Declare them at module level in a page module; read and change them inside a request.
`SessionState` lives in the browser's server-side session (`webapp/sessions.py`): keep values small and
JSON-serialisable; two overlapping requests of one browser that both set it keep the last write.
`GlobalState` lives in the instance database or, with `REDIS_URL`, in Redis (`webapp/stores.py`
chooses), so it survives restarts and is shared by every worker; change it with `update`, which
is atomic in both, so that no concurrent change is lost. Values must be JSON-serialisable.
"""

import copy
import json

import sqlalchemy as sa
from flask import current_app

from .database import Base
from .sessions import readable_session


def browser_id():
    """The id of this browser's session, for stores keyed by it; the session is then kept."""
    session = readable_session()
    session.keep()
    return session.sid


def known_browser_id():
    """The id of this browser's session if it is kept, else None: reading stores nothing."""
    return readable_session().sid


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
        return current_app.extensions["stores"].values.get(self.name, self.default)

    def update(self, change):
        """Replace the value by `change(value)` atomically; return the new value."""
        return current_app.extensions["stores"].values.update(self.name, self.default, change)


class GlobalValue(Base):
    """One global value, as JSON."""

    __tablename__ = "global_values"
    name = sa.Column(sa.String(255), primary_key=True)
    value = sa.Column(sa.Text, nullable=False)


class SqlStateStore:
    """Global values as JSON in the instance database: durable, and shared by every process."""

    def __init__(self, db):
        self._db = db

    def get(self, name, default):
        with self._db.read() as connection:
            row = connection.execute("SELECT value FROM global_values WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row is not None else copy.deepcopy(default)

    def update(self, name, default, change):
        # The transaction holds SQLite's write lock before it reads: two updates never read the same value.
        with self._db.write() as connection:
            row = connection.execute("SELECT value FROM global_values WHERE name = ?", (name,)).fetchone()
            value = change(json.loads(row[0]) if row is not None else copy.deepcopy(default))
            connection.execute("INSERT INTO global_values (name, value) VALUES (?, ?) "
                               "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, json.dumps(value)))
        return copy.deepcopy(value)


class RedisStateStore:
    """Global values as JSON in Redis, updated under WATCH so that concurrent changes retry."""

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
