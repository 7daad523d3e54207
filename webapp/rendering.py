"""The one place that decides between a page fragment and the full page."""

from functools import lru_cache

from flask import current_app, make_response, render_template, request
from markupsafe import Markup
from werkzeug.http import quote_etag

# Every request header the decision reads, so that caches keep the two answers apart.
VARY = ("HX-Request", "HX-Request-Type", "HX-Boosted", "HX-History-Restore-Request")
_VARY = ", ".join(VARY)

# Empties the page's alert region: sent with every answer that succeeds, so that a banner about an
# earlier failure goes once the next request works. A constant, not a template: rendering even this
# one line through Flask took 35 µs of every successful post.
ALERTS_CLEARED = '<hx-partial data-hx-target="#alerts"></hx-partial>'


def wants_fragment():
    """Whether htmx asked for a part of the page rather than a whole page."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Request-Type", "partial") == "partial"
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render(page, fragment, status=200, fragment_etag=None, **context):
    """Render `fragment` for an htmx partial request and `page` otherwise.

    With `fragment_etag`, a fragment request whose If-None-Match already holds that tag gets an
    empty 304 without rendering anything. A fragment that answers a successful post also empties
    the page's alert region: what went wrong before has passed. Polls do not, or a banner would
    vanish before anyone read it.
    """
    partial = wants_fragment()
    if partial and fragment_etag is not None and fragment_etag in request.if_none_match:
        # A poll's usual answer, its headers given whole: set one by one through werkzeug's
        # header objects, they took 30 µs instead of 9.
        return current_app.response_class(status=304, headers=(
            ("ETag", quote_etag(fragment_etag)), ("Cache-Control", "no-cache"), ("Vary", _VARY)))
    html = render_template(fragment if partial else page, **context)
    if partial and request.method == "POST" and status < 400:
        html += ALERTS_CLEARED
    response = make_response(html, status)
    if partial and fragment_etag is not None:
        response.set_etag(fragment_etag)
        response.cache_control.no_cache = True
    response.vary.update(VARY)
    return response


def shared_fragment(name, **values):
    """The template `name` rendered with `values` alone, once per distinct values: a part of a page
    that every viewer of the same state sees alike (no request, session or CSRF token in it)."""
    return _shared(current_app.jinja_env.get_template(name), tuple(sorted(values.items())))


@lru_cache(maxsize=64)
def _shared(template, values):
    """One rendering per template and values, in this process: nothing else decides the HTML, so
    nothing needs to expire, and a cache library's keys and backends would add nothing."""
    return Markup(template.render(dict(values)))
