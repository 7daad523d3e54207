"""Server-side sessions: flask-session on an embedded SQLite database in the instance folder.

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


def _sqlite_pragmas(dbapi_connection, _record):
    """WAL lets readers and one writer of several processes work at once; wait on locks, don't fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def init_app(app):
    """Give the app its database and flask-session (flask-session declares its table per instance)."""
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    db = SQLAlchemy()
    db.init_app(app)
    app.config["SESSION_SQLALCHEMY"] = db
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    Session(app)


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session
