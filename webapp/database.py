"""The embedded SQL database in the instance folder: sessions, chat turns, the score board and the
global values, unless `REDIS_URL` moves them to Redis."""

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """The tables of hxstate's own stores (flask-session declares its table itself)."""


def _sqlite_pragmas(dbapi_connection, _record):
    """WAL lets readers and one writer of several processes work at once; wait on locks, don't fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def init_app(app):
    """Give the app a database of its own (flask-session declares its table on the SQLAlchemy
    instance it is given, so apps cannot share one) with hxstate's tables; return it."""
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        create_tables(db.engine)
    return db


def create_tables(engine):
    """Create the tables, or add the columns that a database from an older release lacks."""
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        inspector = sa.inspect(connection)
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(engine.dialect)
                    connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session


def utcnow():
    """The current time as the database keeps it: naive UTC, as flask-session stores expiry times."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
