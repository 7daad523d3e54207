"""The global score board: every user's submissions, summarised as the top scores and a count.

By default the board is `ScoreBoard`, in this process's memory: created once per app in
`init_app` and shared by every thread of the process (gunicorn's gthread workers, Flask's threaded
dev server). "Global" then means global to one process: several processes would each keep a board
of their own, so the gunicorn config refuses to start more than one worker on it
(`workers.check_workers`).
With `REDIS_URL` set, the board is `RedisScoreBoard`, global to every process and machine that
uses that Redis.

Memory does not grow with the number of submissions: either board keeps only the
`SCORE_BOARD_SIZE` highest scores and a counter.
"""

import heapq
import threading
from dataclasses import dataclass

from flask import current_app

from .redis_connection import redis_client


@dataclass(frozen=True)
class Board:
    """What a viewer sees: the highest scores, highest first, and how many were submitted."""

    top: tuple
    count: int

    @property
    def etag(self):
        """A tag that changes whenever what the board shows changes."""
        return f"{self.count}-{hash(self.top) & 0xFFFFFFFFFFFF:x}"


class ScoreBoard:
    """The top scores and a submission count in this process's memory, guarded by a lock."""

    shared_between_processes = False

    def __init__(self, size=3):
        self.size = size
        self._lowest_first = []
        self._count = 0
        self._lock = threading.Lock()

    def submit(self, value):
        """Count a score and keep it if it belongs among the top ones."""
        with self._lock:
            self._count += 1
            if len(self._lowest_first) < self.size:
                heapq.heappush(self._lowest_first, value)
            elif value > self._lowest_first[0]:
                heapq.heapreplace(self._lowest_first, value)

    def snapshot(self):
        """Return the board as one consistent Board."""
        with self._lock:
            return Board(tuple(sorted(self._lowest_first, reverse=True)), self._count)


class RedisScoreBoard:
    """The top scores and a submission count in Redis: a sorted set trimmed by one atomic script."""

    shared_between_processes = True
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
        """Count a score and keep it if it belongs among the top ones, atomically."""
        self._submit(keys=[self._top, self._count], args=[repr(value), self.size])

    def snapshot(self):
        """Return the board as one consistent Board (read in one transaction)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.zrevrange(self._top, 0, self.size - 1, withscores=True)
        pipe.get(self._count)
        top, count = pipe.execute()
        return Board(tuple(score + 0.0 for _, score in top), int(count or 0))


def init_app(app):
    """Create this app's score board once: in Redis when the config names one, else in memory."""
    size = app.config["SCORE_BOARD_SIZE"]
    client = redis_client(app)
    if client is not None:
        app.extensions["scores"] = RedisScoreBoard(client, app.config["REDIS_KEY_PREFIX"], size)
    else:
        app.extensions["scores"] = ScoreBoard(size=size)


def current_board():
    """The score board of the app handling this request."""
    return current_app.extensions["scores"]
