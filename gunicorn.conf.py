"""gunicorn settings for hxstate; each can be changed through an HXSTATE_* environment variable."""

import os

bind = os.environ.get("HXSTATE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("HXSTATE_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("HXSTATE_THREADS", "8"))
timeout = int(os.environ.get("HXSTATE_TIMEOUT", "60"))
# Load the app once in the master: shared resources are built before the workers fork.
preload_app = True
accesslog = os.environ.get("HXSTATE_ACCESS_LOG") or None


def on_starting(server):
    """Refuse a worker count that the configured state stores cannot keep consistent."""
    from webapp.scores import check_workers

    app = server.app.wsgi()
    check_workers(app.extensions["scores"], server.cfg.workers)
