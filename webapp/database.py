"""The embedded SQL database in the instance folder, where sessions and chat turns are kept unless
`REDIS_URL` moves them to Redis."""

from datetime import datetime, timezone
from pathlib import Path

from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from .redis_connection import redis_client


def _sqlite_pragmas(dbapi_connection, _record):
    """WAL lets readers and one writer of several processes work at once; wait on locks, don't fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def init_app(app):
    """Give the app a database of its own, unless its stores are on Redis (flask-session declares its
    table on the SQLAlchemy instance it is given, so apps cannot share one)."""
    if redis_client(app) is not None:
        return
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session


def utcnow():
    """The current time as the database keeps it: naive UTC, as flask-session stores expiry times."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
