"""The global score board: every user's submissions, summarised as the top scores and a count.

By default the board is `SqlScoreBoard`, in the instance database beside the sessions and chats,
so that it survives a worker's death and a restart. With `REDIS_URL` set, it is `RedisScoreBoard`,
global to every process and machine that uses that Redis.

Storage does not grow with the number of submissions: either board keeps only the
`SCORE_BOARD_SIZE` highest scores and a counter.
"""

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from .database import Base, database


@dataclass(frozen=True)
class Board:
    """What a viewer sees: the highest scores, highest first, and how many were submitted."""

    top: tuple
    count: int

    @property
    def etag(self):
        """A tag that changes whenever what the board shows changes."""
        return f"{self.count}-{hash(self.top) & 0xFFFFFFFFFFFF:x}"


class BoardScore(Base):
    """One of the top scores, numbered in the order submitted (equal scores are all kept)."""

    __tablename__ = "board_scores"
    id = sa.Column(sa.Integer, primary_key=True)
    value = sa.Column(sa.Float, nullable=False)


class BoardCount(Base):
    """The one row that counts every submission."""

    __tablename__ = "board_count"
    id = sa.Column(sa.Integer, primary_key=True)
    count = sa.Column(sa.Integer, nullable=False)


class SqlScoreBoard:
    """The top scores and a submission count in the instance database: durable, and shared by
    every process that opens it."""

    def __init__(self, size=3):
        self.size = size
        scores, counts = BoardScore.__table__, BoardCount.__table__
        top = sa.select(scores.c.id).order_by(scores.c.value.desc(), scores.c.id).limit(size)
        self._count = counts.update().values(count=counts.c.count + 1)
        self._first = counts.insert().values(id=1, count=1)
        self._add = scores.insert()
        self._trim = scores.delete().where(scores.c.id.not_in(top.scalar_subquery()))
        # One statement, so that the scores and the count are read from the same moment.
        self._read = (sa.select(counts.c.count, scores.c.value).select_from(counts)
                      .outerjoin(scores, sa.true())
                      .order_by(scores.c.value.desc(), scores.c.id).limit(size))

    def submit(self, value):
        """Count a score and keep it if it belongs among the top ones, in one transaction (its
        first statement takes SQLite's write lock, so concurrent submits queue, never interleave);
        return the board as this submit left it."""
        db = database()
        try:
            if db.execute(self._count).rowcount == 0:
                db.execute(self._first)
            db.execute(self._add.values(value=value))
            db.execute(self._trim)
            board = self._board(db)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return board

    def snapshot(self):
        """Return the board as one consistent Board."""
        db = database()
        board = self._board(db)
        db.commit()
        return board

    def _board(self, db):
        rows = db.execute(self._read).all()
        return Board(tuple(value for _, value in rows if value is not None), rows[0].count if rows else 0)


class RedisScoreBoard:
    """The top scores and a submission count in Redis: a sorted set trimmed by one atomic script."""

    # Members are submission numbers, so equal scores are all kept; the trim keeps the top `size`.
    _SUBMIT = """
        local n = redis.call('INCR', KEYS[2])
        redis.call('ZADD', KEYS[1], ARGV[1], n)
        redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
        return n
    """

    def __init__(self, client, prefix, size=3):
        self.size = size
        self._client = client
        self._top, self._count = prefix + "scores:top", prefix + "scores:count"
        self._submit = client.register_script(self._SUBMIT)

    def submit(self, value):
        """Count a score and keep it if it belongs among the top ones, atomically; return the board."""
        self._submit(keys=[self._top, self._count], args=[repr(value), self.size])
        return self.snapshot()

    def snapshot(self):
        """Return the board as one consistent Board (read in one transaction)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.zrevrange(self._top, 0, self.size - 1, withscores=True)
        pipe.get(self._count)
        top, count = pipe.execute()
        return Board(tuple(score + 0.0 for _, score in top), int(count or 0))


def current_board():
    """The score board of the app handling this request."""
    return current_app.extensions["stores"].board
