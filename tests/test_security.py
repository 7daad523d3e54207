"""Security headers on every kind of response, and pages that run under the strict CSP."""

import math
import re
import unicodedata

import pytest
import redis
from flask import abort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits import parse as parse_limit
from sqlalchemy.pool import NullPool

from conftest import (HTMX, ScriptedModel, board_json, chat, conversation, csrf_token, new_client, serve,
                      type_message, watch_csp)
from html_tree import parse, text_of
from webapp.errors import MESSAGES
from webapp.limits import memory_counts
from webapp.security import CONTENT_SECURITY_POLICY, trust_bound_hosts, weak_secret_key
from webapp.score_values import InvalidScore, parse_score

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
            assert response.headers.getlist(name) == [value], (response.request.path, name)  # once
        policy = dict(part.strip().split(" ", 1)
                      for part in response.headers["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in response.headers["Content-Security-Policy"]


def test_session_cookie_is_httponly_and_samesite_lax(app):
    client = app.test_client()
    csrf = client.get("/chat").headers["Set-Cookie"]  # the CSRF token's, until a session holds state
    client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client.get("/scores").get_data(as_text=True))
    session = client.post("/scores", data={"score": "1"}, headers=HTMX).headers.getlist("Set-Cookie")
    for cookie in [csrf, *session]:
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert any(cookie.startswith("session=") for cookie in session)


@pytest.mark.browser
def test_pages_work_without_any_csp_violation(browser, make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("a reply"))
    with serve(app) as url:
        page = browser.new_page()
        watch_csp(page)
        page.goto(f"{url}/scores")
        page.fill("#score", "5")
        page.click("button[type=submit]")
        page.locator("#board li", has_text="5").wait_for()
        assert page.evaluate("window.__violations") == []
        page.goto(f"{url}/chat")
        type_message(page, "hello")
        page.locator(".bubble.bot", has_text="a reply").wait_for()
        assert page.evaluate("window.__violations") == []
        page.close()


def test_scores_beyond_the_bounds_are_refused(client):
    for text in ("1e16", "-2e15", "9" * 17):
        response = client.post("/scores", data={"score": text}, headers=HTMX)
        html = response.get_data(as_text=True)
        assert response.status_code == 422
        assert "scores go from -1,000,000,000,000,000 to 1,000,000,000,000,000" in text_of(html)
    assert client.post("/scores", data={"score": "1e15"}, headers=HTMX).status_code == 200


@given(st.text(max_size=80))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_string_is_a_score_or_a_clear_refusal(text):
    try:
        value = parse_score(text)
    except InvalidScore as refusal:
        assert str(refusal)
    else:
        assert math.isfinite(value) and abs(value) <= 1e15
        assert value == float(text.strip())


@given(st.text(max_size=40))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_app_answers_any_score_or_message_with_200_or_422(client, text):
    before = client.get("/scores.json").get_json()
    score = client.post("/scores", data={"score": text}, headers=HTMX)
    assert score.status_code in (200, 422)
    after = client.get("/scores.json").get_json()
    assert after["count"] == before["count"] + (score.status_code == 200)
    message = client.post("/chat", data={"message": text}, headers=HTMX)
    assert message.status_code in (200, 422)
    if any(unicodedata.category(c)[0] in "LNPS" for c in text):  # a letter, digit, mark of punctuation...
        assert message.status_code == 200
    if not text.strip():
        assert message.status_code == 422


@pytest.mark.parametrize("path", ["/scores", "/chat", "/chat/replies/1", "/chat/clear"])
def test_every_state_changing_route_wants_the_csrf_proof(app, path):
    stranger = app.test_client()
    for headers in ({}, HTMX, {"Origin": "https://elsewhere.example"}):
        response = stranger.post(path, data={"score": "1", "message": "hi"}, headers=headers)
        assert response.status_code in (400, 403), (path, headers)


def test_posts_from_another_origin_are_refused_even_with_a_token(client):
    response = client.post("/scores", data={"score": "1"},
                           headers={**HTMX, "Origin": "https://elsewhere.example"})
    assert response.status_code == 403 and "other sites" in text_of(response.get_data(as_text=True))
    same = client.post("/scores", data={"score": "1"}, headers={**HTMX, "Origin": "http://localhost"})
    assert same.status_code == 200
    # The same host under another scheme or port is another origin.
    for origin in ("https://localhost", "http://localhost:8080", "null"):
        other = client.post("/scores", data={"score": "2"}, headers={**HTMX, "Origin": origin})
        assert other.status_code == 403, origin
    assert client.get("/scores.json").get_json()["count"] == 1


def test_markup_and_javascript_urls_are_text(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("javascript:alert(2) <a href=x>x</a>")))
    chat(client, "javascript:alert(1)")
    html = client.get("/chat").get_data(as_text=True)
    assert 'href="javascript' not in html and "<a href=x>" not in html
    links = [link.get("href", "") for link in parse(html).find_all("a")]
    assert not [href for href in links if href.startswith("javascript") or href == "x"]
    assert conversation(html) == [("You", "javascript:alert(1)"),
                                  ("Bot", "javascript:alert(2) <a href=x>x</a>")]


def test_too_large_a_request_is_refused(client):
    response = client.post("/chat", data={"message": "x" * (70 * 1024)}, headers=HTMX)
    assert response.status_code == 413
    assert "too large" in text_of(response.get_data(as_text=True))
    assert response.headers["HX-Retarget"] == "#alerts"


def test_rate_limit_answers_429_and_keeps_the_board(make_app):
    client = new_client(make_app(RATELIMIT_ENABLED=True, SCORE_RATE_LIMIT="3/minute"))
    for value in range(3):
        allowed = client.post("/scores", data={"score": str(value)}, headers=HTMX)
        # Headers say only what is true of the response: nothing to retry after an answer.
        assert allowed.status_code == 200 and "Retry-After" not in allowed.headers
        assert not any(name.startswith("X-RateLimit") for name in allowed.headers.keys())
    refused = client.post("/scores", data={"score": "99"}, headers=HTMX)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    said = re.search(r"You are sending faster than this demo allows; try again in (\d+) s\.",
                     text_of(refused.get_data(as_text=True)))
    assert said and 0 < int(said.group(1)) <= 60
    assert "429" not in text_of(refused.get_data(as_text=True))
    assert refused.headers["HX-Retarget"] == "#alerts"
    assert client.get("/scores.json").get_json() == {"top": [2, 1, 0], "count": 3}


def test_rate_limit_counts_every_worker_together_on_redis(make_app, redis_config):
    settings_ = {"RATELIMIT_ENABLED": True, "CHAT_RATE_LIMIT": "3/minute",
                 "CHAT_MODEL": ScriptedModel(), **redis_config}
    first = new_client(make_app(**settings_))
    first.post("/scores", data={"score": "1"}, headers=HTMX)  # a session is kept once it holds state
    # The same browser (its session cookie and CSRF proof) on a second worker.
    second = make_app(**settings_).test_client()
    second.set_cookie("session", first.get_cookie("session").value)
    second.environ_base.update(first.environ_base)
    statuses = [client.post("/chat", data={"message": "hi"}, headers=HTMX).status_code
                for client in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]


def test_rate_limit_counts_on_redis_live_under_the_key_prefix(make_app, redis_config):
    new_client(make_app(RATELIMIT_ENABLED=True, **redis_config)).post(
        "/scores", data={"score": "1"}, headers=HTMX)
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as client:
        counts = {key.decode().split("/")[1]: client.get(key)
                  for key in client.scan_iter(match=redis_config["REDIS_KEY_PREFIX"] + "limits:*")}
    assert counts.pop("address:127.0.0.1") == b"1"
    [(browser, count)] = counts.items()
    assert browser.startswith("browser:") and count == b"1"


def test_embedded_counts_start_a_new_window_when_theirs_ends_and_forget_ended_ones():
    now = [1000.0]
    counts, limit = memory_counts(lambda: now[0]), parse_limit("2/minute")
    assert [counts.hit(limit, "browser", "scores") for _ in range(3)] == [True, True, False]
    assert counts.get_window_stats(limit, "browser", "scores").reset_time == 1060.0
    assert counts.hit(limit, "another", "scores")  # each key counts on its own
    now[0] = 1059.9
    assert not counts.hit(limit, "browser", "scores")
    now[0] = 1060.0
    assert counts.hit(limit, "browser", "scores")  # a new window
    for visitor in range(100):
        counts.hit(limit, f"passing-{visitor}", "scores")
    now[0] = 1200.0
    counts.hit(limit, "browser", "scores")
    assert counts.storage.reset() == 1  # ended windows are dropped, not kept for ever


def test_people_behind_one_address_each_get_their_own_allowance(make_app):
    app = make_app(RATELIMIT_ENABLED=True, SCORE_RATE_LIMIT="2/minute")
    first, second = new_client(app), new_client(app)
    statuses = [client.post("/scores", data={"score": "1"}, headers=HTMX).status_code
                for client in (first, second, first, second, first, second)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_browser_over_its_own_limit_does_not_use_up_its_address(make_app):
    app = make_app(RATELIMIT_ENABLED=True, SCORE_RATE_LIMIT="2/minute", ADDRESS_RATE_LIMIT="3/minute")
    eager, neighbour = new_client(app), new_client(app)
    assert [eager.post("/scores", data={"score": "1"}, headers=HTMX).status_code
            for _ in range(5)] == [200, 200, 429, 429, 429]
    # The address counted the eager browser's two posts, not its refused ones.
    assert [neighbour.post("/scores", data={"score": "2"}, headers=HTMX).status_code
            for _ in range(2)] == [200, 429]


def test_a_client_that_drops_its_cookies_is_held_back_by_its_address(make_app):
    app = make_app(RATELIMIT_ENABLED=True, SCORE_RATE_LIMIT="100/minute", ADDRESS_RATE_LIMIT="3/minute")
    statuses = [new_client(app).post("/scores", data={"score": "1"}, headers=HTMX).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert board_json(app.test_client())["count"] == 3


CODES = [400, 403, 404, 405, 413, 422, 429, 500, 503]


@pytest.mark.parametrize("code", CODES)
def test_every_error_renders_as_a_page_and_as_a_fragment(make_app, code):
    app = make_app(PROPAGATE_EXCEPTIONS=False)  # as outside tests and debug mode

    def fail():
        if code == 500:
            raise RuntimeError("hidden detail")
        abort(code)

    app.add_url_rule("/fail", view_func=fail, methods=["GET"])
    client = app.test_client()
    page, fragment = client.get("/fail"), client.get("/fail", headers=HTMX)
    for response in (page, fragment):
        assert response.status_code == code
        assert MESSAGES[code] in text_of(response.get_data(as_text=True))
        assert "hidden detail" not in response.get_data(as_text=True)
        assert response.headers["Content-Security-Policy"]
    assert "<html" in page.get_data(as_text=True)
    assert "<html" not in fragment.get_data(as_text=True)
    assert fragment.headers["HX-Retarget"] == "#alerts"


def test_an_unwritable_session_database_is_a_503_and_keeps_history(make_app, tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'db.sqlite3'}",
              "SQLALCHEMY_ENGINE_OPTIONS": {"poolclass": NullPool},
              "CHAT_MODEL": ScriptedModel("kept")}
    client = new_client(make_app(**config))
    chat(client, "hello")
    folder.rename(tmp_path / "moved")
    for response in (client.get("/chat"), client.post("/chat", data={"message": "x"}, headers=HTMX)):
        assert response.status_code == 503
        assert "cannot be reached right now" in text_of(response.get_data(as_text=True))
    (tmp_path / "moved").rename(folder)
    assert conversation(client.get("/chat").get_data(as_text=True)) == [("You", "hello"), ("Bot", "kept")]


@pytest.mark.browser
def test_browser_shows_422_beside_the_box_and_429_in_the_alerts(browser, make_app):
    app = make_app(RATELIMIT_ENABLED=True, SCORE_RATE_LIMIT="2/minute")  # refusals count too
    with serve(app) as url:
        page = browser.new_page()
        page.goto(f"{url}/scores")
        page.evaluate("document.querySelector('#score').type = 'text'")
        page.fill("#score", "lots")
        page.click("button[type=submit]")
        page.locator("#score-error", has_text="must be a number").wait_for()
        page.fill("#score", "3")
        page.click("button[type=submit]")
        page.locator("#board li", has_text="3").wait_for()
        page.fill("#score", "4")
        page.click("button[type=submit]")
        page.locator("#alerts .alert", has_text="faster than this demo allows").wait_for()
        assert page.locator("#score-form").count() == 1
        assert page.locator("#score-count").inner_text() == "1"
        page.close()


@pytest.mark.browser
def test_browser_keeps_no_chat_content_in_web_storage(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("secret reply"))) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "secret message")
        page.locator(".bubble.bot", has_text="secret reply").wait_for()
        page.goto(f"{url}/scores")
        page.go_back()
        page.locator(".bubble.bot", has_text="secret reply").wait_for()
        stored = page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
        assert "secret" not in stored
        page.close()


def test_behind_a_proxy_the_cookie_is_secure_and_the_forwarded_host_is_trusted(make_app):
    client = make_app(PROXY_FIX_HOPS=1, SESSION_COOKIE_SECURE=True, TRUSTED_HOSTS=["demo.example"]).test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "demo.example",
                 "X-Forwarded-For": "203.0.113.9"}
    assert "Secure" in client.get("/chat", headers=forwarded).headers["Set-Cookie"]
    from_proxy = client.post("/scores", headers={**forwarded, "Origin": "https://demo.example"})
    assert from_proxy.status_code == 400  # past the origin check, stopped by CSRF
    elsewhere = client.post("/scores", headers={**forwarded, "Origin": "https://elsewhere.example"})
    assert elsewhere.status_code == 403


@pytest.mark.parametrize("key", ["dev", "x" * 64, "changeme-changeme-changeme-changeme", "0123456789" * 4,
                                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbb"])
def test_weak_secret_keys_are_refused(key):
    assert weak_secret_key(key)


@pytest.mark.parametrize("key", [  # made by secrets.token_hex(16), token_hex(32) and token_urlsafe(32)
    "0b5496f7c6b991d2a20262d35ebd3c8f", "bed3735a118ab76ebb07bc8dfc06172fb2810731ff1d987dbb77c8245fc12723",
    "OoZMBFI5h2rh0kfVLJK3mdfMkSeiWuFN5Nho-WLu71I"])
def test_random_secret_keys_are_accepted(key):
    assert not weak_secret_key(key)


@pytest.mark.parametrize("message", ["\x00", "\u200b\u200b", " \u200b\n\u2060 ", "\x00\x01\x1b", "\u0301"])
def test_a_message_that_shows_nothing_is_refused(client, message):
    response = client.post("/chat", data={"message": message}, headers=HTMX)
    assert response.status_code == 422 and "\x00" not in response.get_data(as_text=True)
    assert conversation(client.get("/chat").get_data(as_text=True)) == []
    assert client.post("/words", data={"text": message}, headers=HTMX).status_code == 422


def test_control_characters_are_dropped_from_what_is_typed(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("ok")))
    assert chat(client, "hi\x00 there\x1b!\tok").status_code == 200
    html = client.get("/chat").get_data(as_text=True)
    assert "\x00" not in html and "\x1b" not in html
    assert conversation(html) == [("You", "hi there!\tok"), ("Bot", "ok")]


@pytest.mark.parametrize("body", [b"message=caf\xe9", b"message=caf%E9", b"text=caf%E9+au+lait"],
                         ids=["raw byte", "percent-encoded", "words"])
def test_a_form_that_is_not_utf8_gets_400_and_stores_nothing(client, body):
    path = "/words" if body.startswith(b"text") else "/chat"
    response = client.post(path, data=body, content_type="application/x-www-form-urlencoded", headers=HTMX)
    assert response.status_code == 400
    assert "not UTF-8 text" in text_of(response.get_data(as_text=True))
    assert conversation(client.get("/chat").get_data(as_text=True)) == []
    assert parse(client.get("/words").get_data(as_text=True)).find(id="all-words").text == "0"


@pytest.mark.parametrize("path", ["/", "/static//app.css", "/scores.json"])
def test_an_untrusted_host_gets_400_and_no_redirect(client, path):
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400 and "Location" not in response.headers
    assert "host name" in response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    for host in ("localhost", "127.0.0.1:8000"):
        assert client.get("/", headers={"Host": host}).status_code == 200


def test_gunicorn_trusts_the_host_it_is_bound_to_and_refuses_names_it_cannot_know(make_app):
    app = make_app()
    trust_bound_hosts(app, ["demo.internal:8000", "unix:/run/hxstate.sock"])
    assert app.test_client().get("/", headers={"Host": "demo.internal:8000"}).status_code == 200
    assert app.test_client().get("/", headers={"Host": "elsewhere.internal:8000"}).status_code == 400
    for everywhere in ("0.0.0.0:8000", "[::]:8000", "[::1]:8000"):
        with pytest.raises(RuntimeError, match="HXSTATE_TRUSTED_HOSTS"):
            trust_bound_hosts(app, [everywhere])
