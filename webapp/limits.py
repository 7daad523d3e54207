"""Rate limits (Flask-Limiter) on the endpoints that change state.

A page decorates each post with `@limited("<CONFIG_KEY>")`. That config value, a Flask-Limiter
limit such as "20/minute", counts per browser (by its CSRF token, which it has before it has a
stored session), so that people behind one address (an
office, a school, a carrier's NAT) do not use up each other's allowance. On top of it,
`ADDRESS_RATE_LIMIT` counts every limited post of one address together, and is looser: a client
that drops its cookies gets a new session each time, and is held back by its address instead.
Both are read when a request is checked. Counts live in Redis when `REDIS_URL` is set, so that
every worker and machine counts together; otherwise in this process's memory, which is right for
the one worker the embedded configuration allows (`webapp/stores.py`).
"""

import hashlib
import time

from flask import current_app, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .sessions import CSRF_KEY, session_unavailable

# A store that fails while the limiter counts (or writes its headers, after the view) is logged and
# skipped: the view then meets the same failure and answers it with the 503 page, with its headers.
limiter = Limiter(get_remote_address, swallow_errors=True)
_per_address = limiter.shared_limit(lambda: current_app.config["ADDRESS_RATE_LIMIT"], scope="address")


def session_key():
    """The key a browser is counted under: its CSRF token (the same before and after its session is
    stored, and never shown: hashed), or its address if it has none to read."""
    token = None if session_unavailable() else session.get(CSRF_KEY)
    if not token:
        return f"address:{get_remote_address()}"
    return "browser:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def limited(config_key, key=session_key):
    """Limit a view to config[`config_key`] per `key` (a browser session, unless told otherwise)
    and ADDRESS_RATE_LIMIT per address."""
    per_key = limiter.limit(lambda: current_app.config[config_key], key_func=key)

    def decorate(view):
        return _per_address(per_key(view))
    return decorate


def seconds_until_allowed():
    """Whole seconds until the limit this request broke lets it through again (at least 1)."""
    current = limiter.current_limit
    return max(1, int(current.reset_at - time.time())) if current else 1  # as Retry-After says


def init_app(app):
    """Bind the limiter to the app, counting where its stores say (`webapp/stores.py`)."""
    # Set, not left to the limiter: it is shared by every app and would keep the last one's setting.
    app.config.setdefault("RATELIMIT_ENABLED", True)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.extensions["stores"].limits_uri)
    # Flask-Limiter's headers would put Retry-After on every answer of a limited page, and replace
    # a 503's own: the 429 says when to come back (webapp/errors.py), the others need not.
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["REDIS_KEY_PREFIX"] + "limits")
    limiter.init_app(app)
    # The limiter also checks every request for app-wide and default limits, of which hxstate has
    # none: each limited view checks its own limits in its decorator. Unhooked, a poll or a page
    # spends nothing on it (bench/scores.py: 0.12 ms of a 0.5 ms poll in process).
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:  # absent when RATELIMIT_ENABLED is off
        hooks.remove(limiter._check_request_limit)
