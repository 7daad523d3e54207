"""gunicorn settings for hxstate; each can be changed through an HXSTATE_* environment variable."""

import gc
import os

bind = os.environ.get("HXSTATE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("HXSTATE_WORKERS", "1"))
# gthread, whose own error answers carry the app's security headers (webapp/workers.py).
worker_class = "webapp.workers.ThreadWorker"
threads = int(os.environ.get("HXSTATE_THREADS", "32"))
# gthread workers keep answering the master while a thread generates, so this only has to cover
# a worker that is stuck; keep it above the longest generation anyway.
timeout = int(os.environ.get("HXSTATE_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("HXSTATE_GRACEFUL_TIMEOUT", "30"))
# Load the app once in the master, which checks its settings (on_starting) before any worker starts.
preload_app = True
accesslog = os.environ.get("HXSTATE_ACCESS_LOG") or None
# gunicorn's control socket (for gunicornc) defaults to one path per user, which every gunicorn of
# that user shares, and stopping any of them deletes it: off, unless this deployment names its own.
control_socket = os.environ.get("HXSTATE_CONTROL_SOCKET") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("HXSTATE_CONTROL_SOCKET")


def on_starting(server):
    """Refuse a weak secret key or a worker count the stores cannot serve; trust the host names
    it is bound to; load a model to share."""
    from webapp.background_model import preload
    from webapp.security import check_secret_key, trust_bound_hosts
    from webapp.workers import check_workers

    app = server.app.wsgi()
    check_secret_key(app)
    check_workers(app, server.cfg.workers)
    if "HXSTATE_TRUSTED_HOSTS" not in os.environ:
        trust_bound_hosts(app, server.cfg.bind)
    # Loaded before the fork, the weights are shared by the workers copy-on-write. A lone worker has
    # nobody to share them with: it serves pages at once and loads the model in the background.
    # Either way the master never runs a forward pass, so no torch thread pool exists when it forks.
    if server.cfg.workers > 1:
        preload(app)
        keep_out_of_collections()  # before the fork, as Python's docs advise: the workers share it


def post_worker_init(worker):
    """Give torch this worker's share of the cores; start loading the model if the master did not."""
    from webapp.background_model import start_loading

    share = int(os.environ.get("HXSTATE_TORCH_THREADS", "0"))
    start_loading(worker.wsgi, share or max(1, (os.cpu_count() or 1) // worker.cfg.workers),
                  then=keep_out_of_collections)


def keep_out_of_collections():
    """Move everything the app and its model have loaded out of the garbage collector's sight.

    It lives as long as the process, yet each full collection walked it all, torch's and
    transformers' millions of objects, with the GIL held: 60 to 190 ms during which no request ran,
    several times a minute under load (the tail of the score submits' latency).
    """
    gc.collect()
    gc.freeze()
