"""Shared fixtures: a fresh app per test, clients that carry the CSRF proof, a live server, Chromium."""

import os
import re
import threading

import pytest
from werkzeug.serving import make_server

from webapp import create_app

CHROMIUM = os.environ.get("HXSTATE_CHROMIUM", "/usr/bin/chromium")
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}


@pytest.fixture
def app():
    """An app with its own empty stores."""
    return create_app({"TESTING": True, "SECRET_KEY": "test", "SCORE_POLL_SECONDS": 1})


def csrf_token(html):
    """The CSRF token a rendered page carries."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def new_client(app):
    """A browser-like client with its own cookie jar that sends the CSRF header htmx sends."""
    client = app.test_client()
    token = csrf_token(client.get("/scores").get_data(as_text=True))
    client.environ_base["HTTP_X_CSRFTOKEN"] = token
    return client


@pytest.fixture
def client(app):
    """A client whose requests carry the CSRF proof."""
    return new_client(app)


@pytest.fixture
def live_server(app):
    """The app served over HTTP on a free loopback port, for the browser."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; a missing browser fails the test, never skips it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium "
                    f"(scripts/test does) or point HXSTATE_CHROMIUM at one.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()
