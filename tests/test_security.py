"""Security headers on every kind of response, and pages that run under the strict CSP."""

import pytest

from conftest import HTMX, ScriptedModel, serve

EXPECTED = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY"}


def responses(client):
    """A full page, a fragment, an error page, an error fragment and a static file."""
    yield client.get("/scores")
    yield client.get("/scores", headers=HTMX)
    yield client.get("/no-such-page")
    yield client.post("/scores", data={"score": "nan"}, headers=HTMX)
    with client.get("/static/app.css") as static:
        yield static


def test_every_response_carries_the_security_headers(client):
    for response in responses(client):
        for name, value in EXPECTED.items():
            assert response.headers[name] == value, (response.request.path, name)
        policy = dict(part.strip().split(" ", 1)
                      for part in response.headers["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in response.headers["Content-Security-Policy"]


def test_session_cookie_is_httponly_and_samesite_lax(app):
    response = app.test_client().get("/chat")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.browser
def test_pages_work_without_any_csp_violation(browser, make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("a reply"))
    with serve(app) as url:
        page = browser.new_page()
        page.add_init_script("window.__violations = [];"
                             "document.addEventListener('securitypolicyviolation',"
                             " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")
        page.goto(f"{url}/scores")
        page.fill("#score", "5")
        page.click("button[type=submit]")
        page.locator("#board li", has_text="5").wait_for()
        assert page.evaluate("window.__violations") == []
        page.goto(f"{url}/chat")
        page.fill("#message", "hello")
        page.press("#message", "Enter")
        page.locator(".bubble.bot", has_text="a reply").wait_for()
        assert page.evaluate("window.__violations") == []
        page.close()
