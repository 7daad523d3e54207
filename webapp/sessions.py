"""Server-side sessions: flask-session on an embedded SQLite database in the instance folder,
or on Redis when `REDIS_URL` is set (with expiry by Redis itself).

The session itself holds only small values (the CSRF token). Chat turns are kept beside it, keyed
by the session id, in `webapp/chat_history.py`, so that two requests of one session never
overwrite each other's changes (flask-session writes the whole session back at the end of each
request).
"""

from pathlib import Path

from flask import current_app
from flask_session import Session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from .shared_store import OutageTolerantSessions, redis_client


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
    else:
        _init_database(app)
    Session(app)
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

    @app.before_request
    def _end_session_read():
        """End the transaction flask-session's read left open, so that a request waiting for a
        lock or for the model holds no database connection."""
        db.session.commit()


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session
