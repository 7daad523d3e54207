"""The embedded SQL database in the instance folder: sessions, chat turns, the score board and the
global values, unless `REDIS_URL` moves them to Redis."""

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase

from .store_errors import STORE_ERRORS, StoreUnusable


class Base(DeclarativeBase):
    """The tables of hxstate's stores."""


def _sqlite_pragmas(dbapi_connection, _record):
    """WAL lets readers and one writer of several processes work at once; wait on locks, don't fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _refuse_when_unwritable(path):
    """A check, run before each connection and each statement, that fails them while the database
    cannot be written (a full or read-only disk, `chattr +i`), as an error a request can answer.

    Without it, WAL's -shm file, which SQLite maps into memory and writes even to read, would kill
    the process with SIGBUS once it became unwritable; and a connection opened meanwhile would be
    opened read-only, and stay so in the pool after the disk is writable again. (A rollback journal
    has no map, but syncs twice per commit: half the score submits a second.)
    """
    paths = [path.parent, path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]

    def check(*_):
        if not all(os.access(p, os.W_OK) for p in paths if p.exists()):
            raise sqlite3.OperationalError(f"cannot write to the database {path} or to its folder")
    return check


def init_app(app):
    """Give the app a database of its own with hxstate's tables; return it."""
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            if engine.url.database not in (None, "", ":memory:"):
                check = _refuse_when_unwritable(Path(engine.url.database))
                event.listen(engine, "connect", check)
                event.listen(engine, "before_cursor_execute", check)
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            create_tables(engine)
        except STORE_ERRORS as error:
            raise StoreUnusable(
                f"hxstate cannot write to its database {engine.url.database or engine.url} ({getattr(error, 'orig', error)}): "
                "make the instance folder and its files writable by this user, or set "
                "HXSTATE_REDIS_URL.") from None
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
    """The current time as the database keeps it: naive UTC, as session expiry times are stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
