"""The embedded SQL database in the instance folder: sessions, chat turns, the score board and the
global values, unless `REDIS_URL` moves them to Redis."""

import os
import sqlite3
import threading
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

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


def _refuse_when_unwritable(path, *files):
    """A check that fails while the database `path` and its files cannot be written (a full or
    read-only disk, `chattr +i`), as an error a request can answer; given `files`, only those.

    Without it, WAL's -shm file, which SQLite maps into memory and writes even to read, would kill
    the process with SIGBUS once it became unwritable; and a connection opened meanwhile would be
    opened read-only, and stay so in the pool after the disk is writable again. (A rollback journal
    has no map, but syncs twice per commit: half the score submits a second.)
    """
    paths = [str(p) for p in files or (path.parent, path, _wal(path), _shm(path))]

    def check(*_):
        # One access() each while they exist, as they do in WAL mode.
        if not all(os.access(p, os.W_OK) or not os.path.lexists(p) for p in paths):
            raise sqlite3.OperationalError(f"cannot write to the database {path} or to its folder")
    return check


def _wal(path):
    return path.with_name(path.name + "-wal")


def _shm(path):
    return path.with_name(path.name + "-shm")


class FifoLock:
    """A lock that lets waiting threads in in the order they came.

    `threading.Lock` lets in whichever waiter runs first, often the thread that just let go: with
    32 threads writing, some waited for many turns, and a score submit's p99 at 32 clients was 190 ms
    instead of 115 (bench/scores.py). The standard library has no fair lock, hence this hand-over.
    """

    def __init__(self):
        self._guard = threading.Lock()
        self._waiting = deque()
        self._held = False

    def __enter__(self):
        with self._guard:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder that hands the lock over

    def __exit__(self, *exc):
        with self._guard:
            if self._waiting:
                self._waiting.popleft().release()  # still held: handed over to the first waiter
            else:
                self._held = False


class Database:
    """The embedded database: SQLAlchemy's engine, and a DBAPI connection per thread for its hot paths.

    Sessions, the board and the global values run a request's few statements as plain SQL on their
    thread's own connection: SQLAlchemy's execution layer costs several times what SQLite takes to
    run them (`bench/scores.py`), and a score submit runs a dozen. Each thread keeps the connection
    it opened, as a pool sized to the threads would, without a pool's checkout and return (15 µs
    each, three times a submit); with `NullPool`, asked for so that every use opens anew, it does
    not. Writers of this process queue on a lock before they take SQLite's write lock, since
    SQLite's own wait for a busy lock sleeps for up to 100 ms at a time, and that is what held a
    submit's p99 near a second; they queue in the order they came (`FifoLock`).
    """

    def __init__(self, engine, check=None):
        self.engine = engine
        self._check = check
        self._write_lock = FifoLock()
        self._threads = None if isinstance(engine.pool, NullPool) else threading.local()

    @contextmanager
    def read(self):
        """This thread's DBAPI connection, for statements that only read."""
        if self._check:
            self._check()
        connection = getattr(self._threads, "connection", None)
        if connection is None:
            fairy = self.engine.raw_connection()  # with the engine's connect events (pragmas, check)
            fairy.detach()  # from now on this thread's own, closed when the thread or the app ends
            connection = fairy.dbapi_connection
            # No transaction begun behind our back: `write` begins its own, and `write_statement`'s
            # one statement is its own transaction.
            connection.isolation_level = None
            if self._threads is not None:
                self._threads.connection = connection
        try:
            yield connection
        except BaseException:
            self._forget(connection)  # a connection that failed is not trusted again
            raise
        if self._threads is None:
            connection.close()

    def _forget(self, connection):
        if self._threads is not None:
            self._threads.connection = None
        connection.close()

    @contextmanager
    def writing(self):
        """This thread's DBAPI connection, with this process's other writers kept out until the
        block ends; each statement is a transaction of its own unless the block opens one
        (`transaction`)."""
        with self._write_lock, self.read() as connection:
            yield connection

    @contextmanager
    def write(self):
        """A DBAPI connection in a transaction that holds SQLite's write lock from its start, and
        commits when the block ends (or rolls back if it raises)."""
        with self.writing() as connection, transaction(connection):
            yield connection

    def write_statement(self, statement, parameters):
        """Run one statement that writes as a transaction of its own: one call into SQLite, where
        `write` takes three, each of which lets other threads take the GIL and this one wait for it."""
        with self.writing() as connection:
            connection.execute(statement, parameters)


@contextmanager
def transaction(connection):
    """A transaction on `connection` that holds SQLite's write lock from its start, and commits
    when the block ends (or rolls back if it raises)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


def timestamp(moment):
    """A naive UTC datetime as SQLAlchemy's DateTime stores it in SQLite (they compare as text)."""
    return moment.isoformat(" ", "microseconds")  # strftime's "%Y-%m-%d %H:%M:%S.%f", in a third of the time


def init_app(app):
    """Give the app a database of its own with hxstate's tables; return it."""
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", f"sqlite:///{Path(app.instance_path) / 'hxstate.sqlite3'}")
    if sa.engine.make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database not in (None, "", ":memory:"):
        # As many pooled connections to a database file as gunicorn has threads (HXSTATE_THREADS,
        # 32), and more opened when needed: a request never waits for one.
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_size": 32, "max_overflow": -1})
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name != "sqlite":
            raise StoreUnusable(f"hxstate's embedded stores need SQLite, not {engine.dialect.name}: "
                                "set HXSTATE_SQLALCHEMY_DATABASE_URI to a sqlite:/// file, or set HXSTATE_REDIS_URL.")
        check = None
        if engine.url.database not in (None, "", ":memory:"):
            path = Path(engine.url.database)
            every_file = _refuse_when_unwritable(path)
            event.listen(engine, "connect", every_file)
            event.listen(engine, "before_cursor_execute", every_file)
            # Before each use of a connection on the hot paths, only the file whose failure kills the
            # process: SQLite answers an unwritable database, log or folder with an error of its own,
            # and each access() lets the other threads take the GIL (12 times a score submit).
            check = _refuse_when_unwritable(path, _shm(path))
        event.listen(engine, "connect", _sqlite_pragmas)
        try:
            create_tables(engine)
        except STORE_ERRORS as error:
            raise StoreUnusable(
                f"hxstate cannot write to its database {engine.url.database or engine.url} ({getattr(error, 'orig', error)}): "
                "make the instance folder and its files writable by this user, or set "
                "HXSTATE_REDIS_URL.") from None
    return Database(engine, check)


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
                    if column.server_default is not None:  # what the rows already there get
                        kind += f" NOT NULL DEFAULT {column.server_default.arg}"
                    connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def database():
    """The SQLAlchemy session of the app handling this request."""
    return current_app.extensions["sqlalchemy"].session


def utcnow():
    """The current time as the database keeps it: naive UTC, as session expiry times are stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
