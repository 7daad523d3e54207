"""Sessions that survive a store outage: only the requests that need the session fail, with a 503."""

from flask import abort, session
from flask.sessions import SessionInterface
from flask_session.base import ServerSideSession

from .store_errors import STORE_DOWN, STORE_ERRORS


class UnavailableSession(ServerSideSession):
    """Stands in for a session whose store could not be read; it is never saved."""


class OutageTolerantSessions(SessionInterface):
    """Wraps a flask-session interface so that a store outage fails only the requests that need it.

    Opening a session otherwise happens before any view runs, so an unreachable store would
    fail every page, even those that use no session, with no way to render a message.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def open_session(self, app, request):
        try:
            return self.inner.open_session(app, request)
        except STORE_ERRORS:
            app.logger.exception("session store unreachable")
            return UnavailableSession(sid=None)

    def save_session(self, app, session, response):
        # Saving a stand-in would overwrite the stored session with an empty one; a session that
        # failed to save is not tried again for the error page that failure gets (webapp/errors.py).
        if isinstance(session, UnavailableSession) or getattr(session, "save_failed", False):
            return
        try:
            self.inner.save_session(app, session, response)
        except STORE_ERRORS:
            session.save_failed = True
            raise


def session_unavailable():
    """Whether this request's session could not be read from its store."""
    return isinstance(session._get_current_object(), UnavailableSession)


def readable_session():
    """This request's session, or a 503 saying its store cannot be reached."""
    if session_unavailable():
        abort(503, STORE_DOWN)
    return session
