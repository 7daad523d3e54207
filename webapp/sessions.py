"""Server-side sessions: flask-session on an embedded SQLite database in the instance folder,
or on Redis when `REDIS_URL` is set (with expiry by Redis itself).

The session itself holds only small values (the CSRF token). Chat turns are kept beside it, keyed
by the session id, in `webapp/chat_history.py`, so that two requests of one session never
overwrite each other's changes (flask-session writes the whole session back at the end of a
request that changed it).

In the database, a session is read with one SELECT and written with one UPDATE (`SqlSessions`), and
a request that changed nothing writes nothing until `REFRESH_AFTER` of the session's lifetime has
passed since it was last written: a session in use never expires, yet a page that polls every few
seconds does not rewrite its row every few seconds.
"""

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_session import Session
from flask_session.sqlalchemy import SqlAlchemySessionInterface
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from .shared_store import OutageTolerantSessions, redis_client

# An unchanged session is written back (its expiry and cookie pushed forward) once this fraction of
# its lifetime has passed since its last write: every 100 minutes or so for the default 7 days.
REFRESH_AFTER = 0.01


def _sqlite_pragmas(dbapi_connection, _record):
    """WAL lets readers and one writer of several processes work at once; wait on locks, don't fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def init_app(app):
    """Give the app flask-session, on Redis or on a database of its own (flask-session declares its
    table on the SQLAlchemy instance it is given, so apps cannot share one)."""
    client = redis_client(app)
    if client is not None:
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client,
                          SESSION_KEY_PREFIX=app.config["REDIS_KEY_PREFIX"] + "session:")
        Session(app)
    else:
        app.session_interface = SqlSessions(
            app, client=_init_database(app), permanent=app.config["SESSION_PERMANENT"],
            serialization_format=app.config["SESSION_SERIALIZATION_FORMAT"])
    app.session_interface = OutageTolerantSessions(app.session_interface)


def _init_database(app):
    """The embedded SQL database that keeps sessions and chat turns."""
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    db = SQLAlchemy()
    db.init_app(app)
    app.config["SESSION_SQLALCHEMY"] = db
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    return db


def _utcnow():
    # flask-session stores naive UTC expiry times; compare like with like.
    return datetime.now(timezone.utc).replace(tzinfo=None)


class SqlSessions(SqlAlchemySessionInterface):
    """flask-session's table, read and written with one Core statement each, written only when needed.

    flask-session's own SQLAlchemy interface reads the row through the ORM at the start of every
    request and, with `SESSION_REFRESH_EACH_REQUEST` (Flask's default), selects and updates it
    again at the end of every request, changed or not: most of what a score submit cost.

    Both statements run on the request's own SQLAlchemy session, as flask-session's do, so that a
    request never holds two pooled connections at once (a pool full of requests each waiting for a
    second one would deadlock), and each ends its transaction at once, so that a request waiting
    for a lock or for the model holds no connection.
    """

    def __init__(self, app, **options):
        super().__init__(app, **options)
        table = self.sql_session_model.__table__
        self._read = sa.select(table.c.data, table.c.expiry).where(
            table.c.session_id == sa.bindparam("store_id"), table.c.expiry > sa.bindparam("now"))
        self._update = table.update().where(table.c.session_id == sa.bindparam("store_id")).values(
            data=sa.bindparam("data"), expiry=sa.bindparam("expiry"))
        self._insert = table.insert().values(
            session_id=sa.bindparam("store_id"), data=sa.bindparam("data"), expiry=sa.bindparam("expiry"))

    def open_session(self, app, request):
        """The session the cookie names if it is stored and unexpired, else a new empty one."""
        sid = request.cookies.get(self.get_cookie_name(app))
        row = None
        if sid:
            database = self.client.session
            try:
                row = database.connection().execute(
                    self._read, {"store_id": self._get_store_id(sid), "now": _utcnow()}).first()
            except Exception:
                database.rollback()
                raise
            database.commit()
        if row is None:  # an expired row stays until the cleanup deletes it
            return self.session_class(sid=self._generate_sid(self.sid_length), permanent=self.permanent)
        session = self.session_class(self.serializer.decode(row.data), sid=sid)
        session.stored_expiry = row.expiry
        return session

    def should_set_storage(self, app, session):
        """Write a changed session, or an unchanged one whose expiry is due to be pushed forward."""
        if session.modified:
            return True
        stored_expiry = getattr(session, "stored_expiry", None)
        if not app.config["SESSION_REFRESH_EACH_REQUEST"] or stored_expiry is None:
            return False
        lifetime = app.permanent_session_lifetime
        return stored_expiry - _utcnow() < lifetime * (1 - REFRESH_AFTER)

    def _upsert_session(self, session_lifetime, session, store_id):
        """Store the session with a fresh expiry: one UPDATE, or an INSERT the first time."""
        database = self.client.session
        values = {"store_id": store_id, "data": self.serializer.encode(session),
                  "expiry": _utcnow() + session_lifetime}
        try:
            if database.connection().execute(self._update, values).rowcount == 0:
                database.connection().execute(self._insert, values)
            database.commit()
        except Exception:
            database.rollback()
            raise
        session.stored_expiry = values["expiry"]


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session
