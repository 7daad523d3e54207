"""The optional Redis server that makes state global across worker processes and machines.

Setting `REDIS_URL` moves every store to Redis, under `REDIS_KEY_PREFIX` (`webapp/stores.py`), so
that any number of gunicorn workers on any number of machines share them. redis-py reconnects by
itself, so the first request after an outage succeeds (see `webapp/store_errors.py` for the
requests during one).
"""

import redis


def connect(url):
    """A Redis client for `url` that fails fast when the server is away."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)
