"""Per-client rate limits (Flask-Limiter) on the endpoints that change state.

A page decorates a view with `@limiter.limit(lambda: current_app.config["<CONFIG_KEY>"])`; the
config value is a Flask-Limiter limit such as "60/minute", read when a request is checked. Counts
live in Redis when `REDIS_URL` is set, so that every worker and machine counts together; otherwise
in this process's memory, which is right for the one worker the embedded configuration allows.
"""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(get_remote_address)


def init_app(app):
    """Bind the limiter to the app, counting in Redis when the config names one."""
    redis_url = app.config["REDIS_URL"]
    # Set, not left to the limiter: it is shared by every app and would keep the last one's setting.
    app.config.setdefault("RATELIMIT_ENABLED", True)
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_url or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    if redis_url:
        app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["REDIS_KEY_PREFIX"] + "limits")
    limiter.init_app(app)
