"""Safe by default: a strict CSP and other headers on every response, other sites' posts refused."""

import math
from collections import Counter
from urllib.parse import parse_qsl

from flask import abort, current_app, g, request
from flask_wtf.csrf import same_origin

from .sessions import is_issued_csrf_token

# Scripts and styles only from this origin: no template has an inline script, style or hx-on
# handler, and htmx 4 adds its indicator rules as a constructed stylesheet, which style-src allows.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


_HEADER_ITEMS = list(HEADERS.items())


class SecurityHeaders:
    """WSGI middleware that puts the security headers on every response: pages, fragments, errors
    and files alike.

    Not an `after_request` function: werkzeug's header objects check each value they are given,
    which took a tenth of a 304 poll's time in a profile; no view sets these headers, so they are
    added as they are.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        def start_with_headers(status, headers, exc_info=None):
            return start_response(status, headers + _HEADER_ITEMS, exc_info)

        return self.wsgi_app(environ, start_with_headers)


_BODILESS = ("GET", "HEAD", "OPTIONS")  # methods whose bodies nothing here reads


def _check_request():
    """Check what a request that sends a body sent, before any view reads it: the whole body, its
    encoding, its origin, then Flask-WTF's CSRF token. Requests without one pass at once."""
    if request.method in _BODILESS:
        return
    _refuse_cut_bodies()
    _refuse_undecodable_forms()
    _refuse_other_origins()
    # Flask-WTF's own hook is off (WTF_CSRF_CHECK_DEFAULT): it looked up every GET's view for an
    # exemption before it looked at the method.
    if current_app.config["WTF_CSRF_ENABLED"] and not _sent_issued_csrf_token():
        current_app.extensions["csrf"].protect(apply_exemptions=True)


def _sent_issued_csrf_token():
    """Whether the request carries the CSRF token this app gave its session, and passes the rest of
    Flask-WTF's check: then that check, whose signature check took an eighth of a score submit's
    time (bench/scores.py), is not needed. Otherwise Flask-WTF checks it, and says what is wrong."""
    config = current_app.config
    sent = request.form.get(config["WTF_CSRF_FIELD_NAME"]) or next(
        filter(None, map(request.headers.get, config["WTF_CSRF_HEADERS"])), None)
    if request.is_secure and config["WTF_CSRF_SSL_STRICT"] and not (
            request.referrer and same_origin(request.referrer, f"https://{request.host}/")):
        return False
    if not is_issued_csrf_token(sent):
        return False
    g.csrf_valid = True  # as Flask-WTF marks a request it checked
    return True


def _refuse_other_origins():
    """Refuse a state-changing request that the browser says another origin sent (CSRF in depth):
    another scheme, host or port."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() != f"{request.scheme}://{request.host}".lower():
        abort(403, "Requests sent from other sites are refused: use this site's own pages.")


def _refuse_cut_bodies():
    """Read a body sent without Content-Length (chunked) whole before anything parses it.

    werkzeug's stream gives such a body up to MAX_CONTENT_LENGTH on the first read without a word,
    and refuses it (413) only on the next one: the form parser, which reads once, would take a body
    cut at the limit for the whole of it.
    """
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        request.get_data(cache=True)  # what the form is then parsed from
        request.stream.read(1)  # raises RequestEntityTooLarge if the body went on past the limit


def _refuse_undecodable_forms():
    """A form that is not UTF-8 gets 400: werkzeug would drop the whole form for one raw byte that
    is not, so the page would say the box was empty, and keep a %E9 that is not as those letters."""
    if request.mimetype == "application/x-www-form-urlencoded":
        data = request.get_data(cache=True)
        if data.isascii() and b"%" not in data:  # nothing but ASCII, even once decoded
            return
        try:
            parse_qsl(data.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            abort(400, "What was sent is not UTF-8 text, so it could not be read. Type it again here "
                       "and send it.")


def estimated_bits(key):
    """Shannon's estimate of a key's entropy in bits, from the frequencies of its own characters."""
    return -sum(n * math.log2(n / len(key)) for n in Counter(key).values())


def repeats_itself(key):
    """Whether the key is a shorter string repeated, as "changeme-changeme-changeme-changeme" is."""
    return any(key == (key[:k] * (len(key) // k + 1))[:len(key)] for k in range(1, len(key) // 2 + 1))


def weak_secret_key(key):
    """Whether a secret key is too short or too predictable to sign sessions and CSRF tokens."""
    # 80: 32 random hex digits score 92 to 135; a word or two repeated, far less.
    return len(key) < 32 or repeats_itself(key) or estimated_bits(key) < 80


def check_secret_key(app):
    """Refuse to serve with a SECRET_KEY that is too short or a placeholder to keep sessions safe."""
    if weak_secret_key(str(app.config["SECRET_KEY"])):
        raise RuntimeError(
            "HXSTATE_SECRET_KEY is too short or too simple to sign sessions and CSRF tokens. Unset "
            "it to use the random key kept in instance/secret_key, or set at least 32 random "
            "characters (python -c 'import secrets; print(secrets.token_hex(32))'), the same on "
            "every machine.")


def trust_bound_hosts(app, binds):
    """Add the hosts of gunicorn's `binds` ("host:port") to TRUSTED_HOSTS; refuse a bind whose
    host names the app cannot know (every address) or check (werkzeug matches no IPv6 literal)."""
    for bind in binds:
        if bind.startswith(("unix:", "fd://")):
            continue
        host = bind.rsplit(":", 1)[0] if ":" in bind else bind
        if host in ("", "0.0.0.0") or ":" in host:
            raise RuntimeError(
                f"hxstate cannot tell which host names are its own when bound to {bind}: set "
                'HXSTATE_TRUSTED_HOSTS to the names clients use, for example \'["demo.example"]\'.')
        if host not in app.config["TRUSTED_HOSTS"]:
            app.config["TRUSTED_HOSTS"] = [*app.config["TRUSTED_HOSTS"], host]


def init_app(app):
    """Check bodies, origins and CSRF tokens before every request (Flask-WTF's `csrf` must be set
    up on the app), and add the headers to every response."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # _check_request calls it, after its own checks
    app.before_request(_check_request)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
