"""The global score board: every user's submissions, summarised as the top scores and a count.

By default the board is `SqlScoreBoard`, in the instance database beside the sessions and chats,
so that it survives a worker's death and a restart. With `REDIS_URL` set, it is `RedisScoreBoard`,
global to every process and machine that uses that Redis.

Storage does not grow with the number of submissions: either board keeps only the
`SCORE_BOARD_SIZE` highest scores and a counter.
"""

import threading
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from .database import Base, transaction
from .score_values import json_score


@dataclass(frozen=True)
class Board:
    """What a viewer sees: the highest scores, highest first, and how many were submitted."""

    top: tuple
    count: int

    def as_json(self):
        """The board as `/scores.json` and the API answer it."""
        return {"top": [json_score(value) for value in self.top], "count": self.count}

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
    """The top scores and a submission count in the instance database: durable, and read from the
    process's memory between submits.

    The embedded stores are served by one process (`workers.check_workers`), so the board this
    process last wrote or read is the board: a poll or `/scores.json` then costs no connection.
    """

    _COUNT = ("INSERT INTO board_count (id, count) VALUES (1, 1) "
              "ON CONFLICT (id) DO UPDATE SET count = count + 1 RETURNING count")
    _ADD = "INSERT INTO board_scores (value) VALUES (?)"
    _TRIM = ("DELETE FROM board_scores WHERE id NOT IN "
             "(SELECT id FROM board_scores ORDER BY value DESC, id LIMIT ?)")
    # One statement, so that the scores and the count are read from the same moment.
    _READ = ("SELECT board_count.count, board_scores.value FROM board_count "
             "LEFT OUTER JOIN board_scores ON 1 ORDER BY board_scores.value DESC, board_scores.id LIMIT ?")

    def __init__(self, db, size=3):
        self.size = size
        self._db = db
        self._known = None  # the newest Board this process has seen
        self._knowing = threading.Lock()

    def submit(self, value):
        """Count a score and keep it if it belongs among the top ones, with this process's other
        writers kept out (so concurrent submits queue, never interleave); return the board as this
        submit left it."""
        with self._db.writing() as connection:
            known, count = self._known, None
            if known is not None and len(known.top) == self.size and value <= known.top[-1]:
                # At or below the lowest of the full board known here: only counted, in one
                # statement, where a transaction takes three calls into SQLite.
                count = connection.execute(self._COUNT).fetchall()[0][0]
                if count == known.count + 1:
                    return self._remember(Board(known.top, count))
                # Written meanwhile by another process, which the embedded stores do not let serve:
                # keep the score if it belongs on the board as stored, and read that board back.
                known = None
            with transaction(connection):
                if count is None:
                    count = connection.execute(self._COUNT).fetchall()[0][0]
                self._add(connection, value)
                if known is not None and known.count == count - 1:
                    # The board before this submit, known here, which the score enters: computed.
                    board = Board(tuple(sorted((*known.top, value), reverse=True)[:self.size]), count)
                else:
                    board = self._board(connection)
            return self._remember(board)  # committed, and before the next writer reads `_known`

    def _add(self, connection, value):
        connection.execute(self._ADD, (value,))
        connection.execute(self._TRIM, (self.size,))

    def snapshot(self):
        """Return the board as one consistent Board."""
        if (known := self._known) is not None:
            return known
        with self._db.read() as connection:
            return self._remember(self._board(connection))

    def _remember(self, board):
        """Keep `board` unless a newer one (more submissions) is already known; return it."""
        with self._knowing:
            if self._known is None or board.count > self._known.count:
                self._known = board
        return board

    def _board(self, connection):
        rows = connection.execute(self._READ, (self.size,)).fetchall()
        return Board(tuple(value for _, value in rows if value is not None), rows[0][0] if rows else 0)


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
