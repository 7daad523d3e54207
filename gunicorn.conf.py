"""gunicorn settings for hxstate; each can be changed through an HXSTATE_* environment variable."""

import os

bind = os.environ.get("HXSTATE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("HXSTATE_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("HXSTATE_THREADS", "32"))
# gthread workers keep answering the master while a thread generates, so this only has to cover
# a worker that is stuck; keep it above the longest generation anyway.
timeout = int(os.environ.get("HXSTATE_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("HXSTATE_GRACEFUL_TIMEOUT", "30"))
# Load the app, and so the model, once in the master: the workers share its memory copy-on-write.
# The master never runs a forward pass, so no torch thread pool exists yet when it forks.
preload_app = True
accesslog = os.environ.get("HXSTATE_ACCESS_LOG") or None


def on_starting(server):
    """Refuse a weak secret key, and a worker count the configured stores cannot keep consistent."""
    from webapp.security import check_secret_key
    from webapp.workers import check_workers

    app = server.app.wsgi()
    check_secret_key(app)
    check_workers(app, server.cfg.workers)


def post_fork(server, worker):
    """Give each worker its share of the cores for torch, so that workers do not oversubscribe them."""
    import torch

    share = int(os.environ.get("HXSTATE_TORCH_THREADS", "0"))
    torch.set_num_threads(share or max(1, (os.cpu_count() or 1) // server.cfg.workers))
