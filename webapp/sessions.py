"""Server-side sessions: flask-session on an embedded SQLite database in the instance folder,
or on Redis when `REDIS_URL` is set (with expiry by Redis itself).

The session itself holds only small values (the CSRF token). Chat turns are kept beside it, keyed
by the session id, in `webapp/chat_history.py`, so that two requests of one session never
overwrite each other's changes (flask-session writes the whole session back at the end of a
request that changed it).

In the database, a session is read with one SELECT and written with one UPDATE (`SqlSessions`), and
a request that changed nothing writes nothing until `SESSION_REFRESH_AFTER` of the session's
lifetime has passed since it was last written: a session in use never expires, yet a page that
polls every few seconds does not rewrite its row every few seconds.
"""

import sqlalchemy as sa
from flask_session import Session
from flask_session.sqlalchemy import SqlAlchemySessionInterface

from .database import utcnow


def sql_sessions(app, db):
    """flask-session on the embedded database `db` (`webapp/stores.py` chooses)."""
    interface = SqlSessions(
        app, client=db, permanent=app.config["SESSION_PERMANENT"],
        serialization_format=app.config["SESSION_SERIALIZATION_FORMAT"],
        refresh_after=app.config["SESSION_REFRESH_AFTER"])
    # flask-session adds its own cleanup command, which would leave chat turns behind: hxstate's
    # `cleanup-sessions` (webapp/chat_history.py) deletes both.
    app.cli.commands.pop("session_cleanup", None)
    return interface


def redis_sessions(app, client, prefix):
    """flask-session on Redis, which expires sessions by itself (`webapp/stores.py` chooses)."""
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix + "session:")
    Session(app)
    return app.session_interface


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

    def __init__(self, app, *, refresh_after, **options):
        """Rewrite an unchanged session once `refresh_after` (a fraction) of its lifetime has passed."""
        super().__init__(app, **options)
        self.refresh_after = refresh_after
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
                    self._read, {"store_id": self._get_store_id(sid), "now": utcnow()}).first()
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
        return stored_expiry - utcnow() < lifetime * (1 - self.refresh_after)

    def _upsert_session(self, session_lifetime, session, store_id):
        """Store the session with a fresh expiry: one UPDATE, or an INSERT the first time."""
        database = self.client.session
        values = {"store_id": store_id, "data": self.serializer.encode(session),
                  "expiry": utcnow() + session_lifetime}
        try:
            if database.connection().execute(self._update, values).rowcount == 0:
                database.connection().execute(self._insert, values)
            database.commit()
        except Exception:
            database.rollback()
            raise
        session.stored_expiry = values["expiry"]
