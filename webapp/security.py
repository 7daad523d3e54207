"""Safe by default: a strict CSP and other headers on every response, other sites' posts refused."""

from urllib.parse import urlsplit

from flask import abort, request

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


def _add_headers(response):
    """Put the security headers on every response, pages, fragments, errors and files alike."""
    headers = response.headers
    headers.extend((name, value) for name, value in HEADERS.items() if name not in headers)
    return response


def _refuse_other_origins():
    """Refuse a state-changing request that the browser says another site sent (CSRF in depth)."""
    origin = request.headers.get("Origin")
    if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None \
            and urlsplit(origin).netloc != request.host:
        abort(403, "Requests sent from other sites are refused: use this site's own pages.")


def check_secret_key(app):
    """Refuse to serve with a SECRET_KEY that is too short or a placeholder to keep sessions safe."""
    key = str(app.config["SECRET_KEY"])
    if len(key) < 32 or len(set(key)) < 8:
        raise RuntimeError(
            "HXSTATE_SECRET_KEY is too short or too simple to sign sessions and CSRF tokens. Unset "
            "it to use the random key kept in instance/secret_key, or set at least 32 random "
            "characters (python -c 'import secrets; print(secrets.token_hex(32))'), the same on "
            "every machine.")


def init_app(app):
    """Check origins before every request and add the headers to every response."""
    app.before_request(_refuse_other_origins)
    app.after_request(_add_headers)
