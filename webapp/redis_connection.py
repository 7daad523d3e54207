"""The optional Redis server that makes state global across worker processes and machines.

Setting `REDIS_URL` moves the score board, the global values, the sessions, the chat histories and
the rate-limit counts to Redis, under `REDIS_KEY_PREFIX`, so that any number of gunicorn workers on
any number of machines share them. redis-py reconnects by itself, so the first request after an
outage succeeds (see `webapp/store_errors.py` for the requests during one).
"""

import redis


def init_app(app):
    """Connect to Redis once if the config names one."""
    url = app.config["REDIS_URL"]
    if url:
        app.extensions["redis"] = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)


def redis_client(app):
    """The app's Redis client, or None for the embedded stores."""
    return app.extensions.get("redis")
