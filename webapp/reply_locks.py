"""Per-chat locks: the replies of one session are generated one at a time, so that each reply sees
the conversation before it, and Clear, Undo and Regenerate never change a chat while its reply is
being written.

`ProcessLocks` is for the embedded stores, served by one worker process. `RedisLocks` holds a Redis
lock with a timeout, so that a worker that dies holding one cannot block its chat for longer than
`CHAT_LOCK_TIMEOUT`. Either lock may be released by another thread than the one that took it: a
reply's job releases it once the reply is saved.
"""

import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from flask import abort, current_app
from redis.exceptions import LockError, RedisError

BUSY = "This chat is still busy with an earlier message. Try again in a moment."


class _Locks:
    """What both kinds of locks share: `hold`, on top of their own `acquire`."""

    @contextmanager
    def hold(self, sid):
        """Hold the session's lock for a block."""
        release = self.acquire(sid)
        try:
            yield
        finally:
            release()


class ProcessLocks(_Locks):
    """One lock per session id in this process, dropped when nobody holds or waits for it."""

    def __init__(self, wait):
        self.wait = wait
        self._guard = threading.Lock()
        self._locks = {}
        self._users = defaultdict(int)

    def acquire(self, sid):
        """Take the session's lock, waiting up to `wait` seconds (then 503); return its release."""
        with self._guard:
            lock = self._locks.setdefault(sid, threading.Lock())
            self._users[sid] += 1
        if not lock.acquire(timeout=self.wait):
            self._leave(sid)
            abort(503, BUSY)

        def release():
            lock.release()
            self._leave(sid)
        return release

    def _leave(self, sid):
        with self._guard:
            self._users[sid] -= 1
            if not self._users[sid]:
                del self._users[sid], self._locks[sid]


class RedisLocks(_Locks):
    """One Redis lock per session id, with a timeout, shared by every process."""

    RETRY_SECONDS = 0.5

    def __init__(self, client, prefix, timeout, wait):
        self._client = client
        self._prefix = prefix + "chat:lock:"
        self.timeout = timeout
        self.wait = wait

    def acquire(self, sid):
        """Take the session's lock, waiting up to `wait` seconds (then 503); return its release."""
        # thread_local=False: the lock's token must be seen by the thread that releases it.
        lock = self._client.lock(self._prefix + sid, timeout=self.timeout, blocking_timeout=self.wait,
                                 thread_local=False)
        if not lock.acquire():
            abort(503, BUSY)

        logger, token = current_app.logger, lock.local.token

        def release():
            try:
                lock.release()
            except LockError:  # held past its timeout and taken over: nothing left to release
                logger.warning("chat lock of a session expired before release")
            except RedisError:
                logger.warning("chat lock of a session could not be released: retrying until Redis is back")
                threading.Thread(target=self._release_when_back, args=(lock, token, logger),
                                 daemon=True).start()
        return release

    def _release_when_back(self, lock, token, logger):
        """Release a lock that Redis could not release when asked, as soon as it answers again, so
        that its chat works on its next request rather than once the lock's timeout has passed."""
        deadline = time.monotonic() + self.timeout  # by then the lock has expired by itself
        while time.monotonic() < deadline:
            time.sleep(self.RETRY_SECONDS)
            try:
                lock.do_release(token)  # release() forgot the token when it failed
                return
            except LockError:
                return
            except RedisError:
                continue
        logger.warning("chat lock of a session expired before Redis was back")


def current_locks():
    """The reply locks of the app handling this request."""
    return current_app.extensions["stores"].locks
