"""The global score board: every user's submissions, summarised as the top scores and a count.

By default the board is `ScoreBoard`, in this process's memory: created once per app in
`init_app` and shared by every thread of the process (gunicorn's gthread workers, Flask's threaded
dev server). "Global" then means global to one process: several processes would each keep a board
of their own, so the gunicorn config refuses to start more than one worker on it
(`shared_store.check_workers`).
With `REDIS_URL` set, the board is `RedisScoreBoard`, global to every process and machine that
uses that Redis.

Memory does not grow with the number of submissions: either board keeps only the
`SCORE_BOARD_SIZE` highest scores and a counter.
"""

import heapq
import math
import re
import threading
from dataclasses import dataclass

from flask import current_app

from .shared_store import redis_client

# Plain decimal notation only: float() alone would also take "nan", "inf", "1_000" and "infinity".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# What an <input type="number"> can hold: HTML's "valid floating-point number".
_HTML_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
MAX_SCORE_CHARS = 64
# The shortest bar of a score that is not zero, in hundredths of the chart's width.
MIN_BAR_WIDTH = 2.0


class InvalidScore(ValueError):
    """A submitted score that is not a finite number."""


def parse_score(text, max_abs=1e15):
    """Return the number a submitted string means, or raise InvalidScore saying why it is refused."""
    text = (text or "").strip()
    if not text:
        raise InvalidScore("Enter a score: the box was empty.")
    if len(text) > MAX_SCORE_CHARS or not _NUMBER.fullmatch(text):
        raise InvalidScore("A score must be a number, such as 42 or -3.5.")
    value = float(text)
    if not math.isfinite(value) or abs(value) > max_abs:
        raise InvalidScore(f"That number is too large: scores go from {format_score(-max_abs)} "
                           f"to {format_score(max_abs)}.")
    return value + 0.0  # folds -0.0 into 0.0


def number_box_value(text):
    """The submitted text if a number box can show it again, else an empty box."""
    return text if _HTML_NUMBER.fullmatch(text) else ""


def format_score(value):
    """Show integral scores without a trailing '.0'."""
    return str(int(value)) if value.is_integer() else repr(value)


def json_score(value):
    """Integral scores as JSON integers, the rest as floats."""
    return int(value) if value.is_integer() else value


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in the chart's coordinates: x and width from 0 to 100."""

    x: float
    width: float
    negative: bool


@dataclass(frozen=True)
class BarChart:
    """Bars for some scores from one zero line, at `zero` (from 0 to 100)."""

    zero: float
    bars: tuple


def bar_chart(values):
    """Chart scores as bars from one zero line, scaled so that zero and every score fit the width."""
    low, high = min(0.0, *values), max(0.0, *values)
    zero = (0.0 - low) / ((high - low) or 1.0) * 100
    # However small beside the others, a score that is not zero keeps room for a visible bar.
    zero = round(min(max(zero, MIN_BAR_WIDTH if low < 0 else 0.0),
                     100 - MIN_BAR_WIDTH if high > 0 else 100.0), 2)
    bars = []
    for value in values:
        room, extreme = (100 - zero, high) if value > 0 else (zero, low)
        width = round(max(value / extreme * room, MIN_BAR_WIDTH), 2) if value else 0.0
        x = round(zero - width, 2) if value < 0 else zero
        bars.append(Bar(x, width, value < 0))
    return BarChart(zero, tuple(bars))


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
    app.add_template_filter(format_score, "score")
    app.add_template_filter(bar_chart, "bar_chart")


def current_board():
    """The score board of the app handling this request."""
    return current_app.extensions["scores"]
