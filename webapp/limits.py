"""Rate limits (the `limits` package) on the endpoints that change state.

A page decorates each post with `@limited("<CONFIG_KEY>")`. That config value, a limit such as
"20/minute", counts per browser (by its CSRF token, which it has before it has a stored session),
so that people behind one address (an office, a school, a carrier's NAT) do not use up each other's
allowance. On top of it, `ADDRESS_RATE_LIMIT` counts every limited post of one address together,
and is looser: a client that drops its cookies gets a new session each time, and is held back by
its address instead. Both are read when a request is checked, and counted in fixed windows. Counts
live in Redis when `REDIS_URL` is set, so that every worker and machine counts together; otherwise
in this process's memory, which is right for the one worker the embedded configuration allows
(`webapp/stores.py`).

The counting is the `limits` package's, as it was under Flask-Limiter, whose extension this module
replaces: that resolved every view's limits anew on each request (exemptions, blueprints, limit
strings), a quarter of a score submit's time in process.
"""

import hashlib
import threading
import time
from functools import lru_cache, wraps

from flask import current_app, request, session
from limits import parse
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from .sessions import CSRF_KEY, session_unavailable


class ProcessStorage(Storage):
    """Counts in this process's memory, each with the time its window ends.

    Not the `limits` package's MemoryStorage, which starts a thread to expire counts 10 ms after
    nearly every hit: a thread a request under load, a twentieth of a score submit's time.
    """

    STORAGE_SCHEME = None
    SWEEP_SECONDS = 60

    def __init__(self, clock=time.time):
        super().__init__()
        self._clock = clock
        self._counts = {}  # key: (count, when its window ends)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    @property
    def base_exceptions(self):
        return ValueError

    def incr(self, key, expiry, amount=1):
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:  # keeps memory to the keys of the current windows
                self._counts = {kept: count for kept, count in self._counts.items() if count[1] > now}
                self._next_sweep = now + self.SWEEP_SECONDS
            count, ends = self._counts.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + expiry
            self._counts[key] = (count + amount, ends)
            return count + amount

    def get(self, key):
        count, ends = self._counts.get(key, (0, 0.0))
        return count if ends > self._clock() else 0

    def get_expiry(self, key):
        return self._counts.get(key, (0, self._clock()))[1]

    def check(self):
        return True

    def reset(self):
        with self._lock:
            count, self._counts = len(self._counts), {}
        return count

    def clear(self, key):
        with self._lock:
            self._counts.pop(key, None)


def memory_counts(clock=time.time):
    """Counts in this process's memory (the embedded stores)."""
    return FixedWindowRateLimiter(ProcessStorage(clock))


def redis_counts(client, url, prefix):
    """Counts in the Redis at `url`, over `client`'s connections, under `prefix`."""
    return FixedWindowRateLimiter(RedisStorage(url, connection_pool=client.connection_pool,
                                               key_prefix=prefix + "limits"))


def address_key():
    """The key a client is counted under by its address (`PROXY_FIX_HOPS` says whose it is)."""
    return f"address:{request.remote_addr or '127.0.0.1'}"


def session_key():
    """The key a browser is counted under: its CSRF token (the same before and after its session is
    stored, and never shown: hashed), or its address if it has none to read."""
    token = None if session_unavailable() else session.get(CSRF_KEY)
    if not token:
        return address_key()
    return "browser:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@lru_cache(maxsize=64)
def _limit(text):
    """The limit a config string such as "20/minute" means, parsed once."""
    return parse(text)


def _check(counts, limit_text, key, scope):
    """Count this request under `key` in `scope`; refuse it with a 429 if that goes past the limit.
    A Redis that cannot count raises, and the post gets the 503 of every store failure: the view
    would have met the same failure (every store is on that Redis)."""
    limit = _limit(limit_text)
    if counts.hit(limit, key, scope):
        return
    reset_at = counts.get_window_stats(limit, key, scope).reset_time
    seconds = max(1, int(reset_at - time.time()))  # whole seconds, as Retry-After says
    raise TooManyRequests(
        f"You are sending faster than this demo allows; try again in {seconds} s.", retry_after=seconds)


def limited(config_key, key=session_key):
    """Limit a view to config[`config_key`] per `key` (a browser session, unless told otherwise)
    and ADDRESS_RATE_LIMIT per address."""
    def decorate(view):
        @wraps(view)
        def limited_view(*args, **kwargs):
            config = current_app.config
            if config["RATELIMIT_ENABLED"]:
                counts = current_app.extensions["stores"].limits
                # The browser's own limit first: a post it refuses is not charged to the address,
                # whose allowance the neighbours share.
                _check(counts, config[config_key], key(), request.endpoint)
                _check(counts, config["ADDRESS_RATE_LIMIT"], address_key(), "address")
            return view(*args, **kwargs)
        return limited_view
    return decorate
