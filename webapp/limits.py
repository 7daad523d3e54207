"""Per-client rate limits (Flask-Limiter) on the endpoints that change state.

A page declares its limits as `RATE_LIMITS = {"<view name>": "<config key>"}`; the config value is
a Flask-Limiter limit such as "60/minute". Counts live in Redis when `REDIS_URL` is set, so that
every worker and machine counts together; otherwise in this process's memory, which is right for
the one worker the embedded configuration allows.
"""

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


def init_app(app, pages):
    """Create the app's limiter and apply each registered page's declared limits."""
    redis_url = app.config["REDIS_URL"]
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_url or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    if redis_url:
        app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["REDIS_KEY_PREFIX"] + "limits")
    limiter = Limiter(get_remote_address, app=app)
    app.extensions["rate_limiter"] = limiter  # Flask-Limiter itself keeps only a weak reference
    for page in pages:
        for view, setting in getattr(page, "RATE_LIMITS", {}).items():
            endpoint = f"{page.bp.name}.{view}"
            app.view_functions[endpoint] = limiter.limit(_configured(setting))(app.view_functions[endpoint])


def _configured(setting):
    """The limit named by a config key, read when a request is checked."""
    return lambda: current_app.config[setting]
