"""gunicorn's workers for hxstate: never several for state kept in one process, and their own error
answers as safe as the app's."""

from gunicorn.workers import gthread

from .security import HEADERS


def check_workers(app, workers):
    """Refuse to serve the embedded stores, whose locks and rate limits live in one process, from
    several worker processes."""
    if workers > 1 and not app.extensions["stores"].shared_between_processes:
        raise RuntimeError(
            f"The embedded stores keep each chat's reply lock and the rate-limit counts in the "
            f"worker's memory, which is one process only, but {workers} workers were asked for: "
            f"they would write two replies of one chat at once and count limits apart. Run one "
            f"worker (HXSTATE_WORKERS=1, no --workers) and scale it with threads (HXSTATE_THREADS), "
            f"or share the state between workers through Redis (HXSTATE_REDIS_URL=redis://host:6379/0).")


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, whose own answers to requests it cannot parse (400, 414, 431, ...)
    carry the security headers every answer of the app carries (`webapp/security.py`)."""

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, _WithSecurityHeaders(client), addr, exc)


class _WithSecurityHeaders:
    """A client socket that adds the security headers after the status line of what it sends."""

    _HEADERS = "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items()).encode("latin-1")

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendall(self, data):
        status, separator, rest = bytes(data).partition(b"\r\n")
        return self._sock.sendall(status + separator + self._HEADERS + rest)
