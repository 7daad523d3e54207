"""What a store raises when it cannot be reached, and what the page then says.

Redis down, or the embedded database's disk full, folder unwritable, file locked for too long: the
requests that need that store get a 503 with `STORE_DOWN` (see `webapp/errors.py`) and write
nothing, while the others go on.
"""

import sqlite3

import redis
import sqlalchemy.exc

# sqlite3's own error too: the hot paths of the embedded stores use the DBAPI connection directly.
STORE_ERRORS = (redis.RedisError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError,
                sqlite3.OperationalError)

STORE_DOWN = ("A store this page needs cannot be reached right now. Nothing you had stored is lost: "
              "try again in a moment.")


class StoreUnusable(RuntimeError):
    """A store the app cannot start on; its message is one sentence saying what to do (gunicorn
    prints a RuntimeError raised while it loads the app as such, without a traceback)."""
