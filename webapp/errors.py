"""Errors rendered in one place: a full page, or a fragment shown in the page's alert region."""

from flask import current_app, jsonify, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, SecurityError, ServiceUnavailable

from .rendering import render, wants_fragment
from .sessions import session_unavailable
from .store_errors import STORE_DOWN, STORE_ERRORS

MESSAGES = {
    400: "The request could not be understood.",
    403: "You are not allowed to do that.",
    404: "There is no page at this address.",
    405: "This address does not accept that kind of request.",
    413: "What you sent is too large.",
    415: "Send JSON, with Content-Type: application/json.",
    422: "What you sent could not be used.",
    429: "You are sending faster than this demo allows; try again in a moment.",
    500: "Something went wrong on our side. Nothing you had stored was lost; try again.",
    503: "The service is busy or a store cannot be reached; try again in a moment.",
}


def render_error(error, message=None):
    """Render an HTTP error as a page, as a fragment retargeted to the alert region, or as JSON for the API."""
    code = error.code or 500
    if message is None and error.description != type(error).description:
        message = error.description  # a view's own explanation
    message = message or MESSAGES.get(code) or error.description
    if request.path.startswith("/api/"):  # programs get JSON (webapp/api.py)
        response = jsonify(error=message)
        response.status_code = code
    else:
        banner = wants_fragment()
        response = render("errors/page.html", "errors/_error.html", code,
                          code=code, name=error.name, message=message, banner=banner)
        if banner:
            # The element that asked may be a form or a list: show errors where they are always seen.
            response.headers["HX-Retarget"] = "#alerts"
            response.headers["HX-Reswap"] = "innerHTML"
    for name, value in error.get_headers():
        if name.lower() != "content-type":  # Allow, Retry-After, WWW-Authenticate
            response.headers[name] = value
    return response


def _csrf_error(error):
    """A missing or stale CSRF proof: say how to recover (unless the session could not be read)."""
    if session_unavailable():
        return _store_error(error)
    return render_error(error, "This form has expired or came from another site. "
                               "Reload the page and send it again.")


def _store_error(error):
    """A store that cannot be reached: 503, and the page says that nothing was lost."""
    current_app.logger.error("store unreachable: %s", error)
    return render_error(ServiceUnavailable(), STORE_DOWN)


def _http_error(error):
    """Any HTTP error raised by a view or by routing."""
    if isinstance(error, SecurityError):  # an untrusted Host: no URL can be built for a page
        return current_app.response_class(
            "This site does not answer to that host name.\n", 400, mimetype="text/plain")
    return render_error(error)


def _internal_error(error):
    """An exception no view handled, already logged by Flask: a 500 without a stack trace, or the
    store's 503 if a store failed after the view (saving the session)."""
    if isinstance(error.original_exception, STORE_ERRORS):
        return _store_error(error.original_exception)
    return render_error(error)


def _retry_after(response):
    """Tell clients when to try a 503 again: every 503 here is a passing state."""
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", "5")
    return response


def init_app(app):
    """Route every error through the renderers above."""
    app.register_error_handler(CSRFError, _csrf_error)
    for store_error in STORE_ERRORS:
        app.register_error_handler(store_error, _store_error)
    # Not `Exception`: Flask hands an unhandled exception over as an InternalServerError, except in
    # debug mode, where it must reach the debugger.
    app.register_error_handler(InternalServerError, _internal_error)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_retry_after)
