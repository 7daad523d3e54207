"""The score board page: shared board, validation, fragments, concurrency, browser behaviour."""

import random
import threading

import pytest
from flask import request
from hypothesis import given
from hypothesis import strategies as st

from conftest import HTMX, board_json, in_threads, new_client, serve
from html_tree import parse, text_of
from webapp.rendering import shared_fragment
from webapp.score_chart import MIN_BAR_WIDTH, Bar, bar_chart
from webapp.score_values import format_score

BAD_SCORES = ["", "   ", "abc", "nan", "NaN", "inf", "-Infinity", "+inf", "1e999", "-1e999",
              "1_000", "0x10", "5abc", "1,5", "--1", "1e", "9" * 65,
              "١٢٣", "１２３", "1e٣", "٣.5"]  # digits of other scripts: float() would read them


def top(html):
    """The top scores a page or fragment lists, as shown."""
    return [item.text for item in parse(html).find(id="board").find("ol").find_all("li")]


def shown(html, id):
    """The text of the element with this id."""
    return parse(html).find(id=id).text


def test_two_clients_share_one_board(app):
    alice, bob = new_client(app), new_client(app)
    alice.post("/scores", data={"score": "10"}, headers=HTMX)
    bob.post("/scores", data={"score": "30"}, headers=HTMX)
    alice.post("/scores", data={"score": "20.5"}, headers=HTMX)
    bob.post("/scores", data={"score": "5"}, headers=HTMX)
    for client in (alice, bob):
        assert board_json(client) == {"top": [30, 20.5, 10], "count": 4}
        fragment = client.get("/scores", headers=HTMX).get_data(as_text=True)
        assert top(fragment) == ["30", "20.5", "10"]
        assert shown(fragment, "score-count") == "4"


def test_each_browser_sees_its_own_last_score(app):
    alice, bob = new_client(app), new_client(app)
    assert parse(alice.get("/scores").get_data(as_text=True)).find(id="last-score") is None
    alice.post("/scores", data={"score": "5"}, headers=HTMX)
    submitted = bob.post("/scores", data={"score": "7.5"}, headers=HTMX).get_data(as_text=True)
    assert shown(submitted, "last-score") == "7.5"
    assert shown(alice.get("/scores").get_data(as_text=True), "last-score") == "5"
    assert shown(bob.get("/scores").get_data(as_text=True), "last-score") == "7.5"


def test_chart_bars_start_at_zero_and_scale_to_the_range():
    assert bar_chart((30.0, 20.0, 10.0)).bars == (
        Bar(0.0, 100.0, False), Bar(0.0, 66.67, False), Bar(0.0, 33.33, False))
    mixed = bar_chart((1e15, 7.0, -1e15))
    assert mixed.zero == 50.0
    assert mixed.bars == (Bar(50.0, 50.0, False), Bar(50.0, MIN_BAR_WIDTH, False), Bar(0.0, 50.0, True))
    below_zero = bar_chart((-1.0, -2.0))
    assert below_zero.zero == 100.0 and below_zero.bars == (Bar(50.0, 50.0, True), Bar(0.0, 100.0, True))
    assert bar_chart((0.0,)).bars == (Bar(0.0, 0.0, False),)


@given(st.lists(st.floats(min_value=-1e15, max_value=1e15), min_size=1, max_size=5))
def test_every_chart_fits_its_width_and_shows_every_score_but_zero(values):
    chart = bar_chart(values)
    assert 0 <= chart.zero <= 100
    for value, bar in zip(values, chart.bars):
        assert 0 <= bar.x and bar.x + bar.width <= 100.01
        assert bar.negative == (value < 0)
        assert (bar.width >= MIN_BAR_WIDTH) if value else bar.width == 0
        if value >= 0:
            assert bar.x == chart.zero
        else:
            assert abs(bar.x + bar.width - chart.zero) <= 0.01


def test_board_shows_the_top_scores_as_a_chart_beside_the_numbers(client):
    for score in ("-5", "10", "1e15"):
        client.post("/scores", data={"score": score}, headers=HTMX)
    html = client.get("/scores", headers=HTMX).get_data(as_text=True)
    assert top(html) == ["1000000000000000", "10", "-5"]
    chart = parse(html).find("svg")
    assert [bar.classes for bar in chart.find_all("rect")] == [{"bar"}, {"bar"}, {"bar", "negative"}]
    assert chart["aria-hidden"] == "true" and not [e for e in parse(html).iter() if "style" in e.attrs]


def test_the_top_scores_are_rendered_once_for_every_viewer_and_again_when_they_change(app):
    first, second = new_client(app), new_client(app)
    first.post("/scores", data={"score": "5"}, headers=HTMX)
    with app.test_request_context():
        shared = shared_fragment("scores/_top.html", top=(5.0,))
        assert shared_fragment("scores/_top.html", top=(5.0,)) is shared  # rendered once
    assert str(shared) in second.get("/scores", headers=HTMX).get_data(as_text=True)
    counted = second.post("/scores", data={"score": "4"}, headers=HTMX).get_data(as_text=True)
    assert str(shared) not in counted and top(counted) == ["5", "4"]  # the new top, its list and chart
    assert len(parse(counted).find("svg").find_all("rect")) == 2


def test_htmx_submit_returns_cleared_form_and_new_board(client):
    response = client.post("/scores", data={"score": "42"}, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html
    assert parse(html).find("input", id="score")["value"] == ""
    assert parse(html).find(id="board")["data-hx-swap-oob"] == "true"
    assert top(html) == ["42"]


def test_plain_form_post_redirects_back(client):
    response = client.post("/scores", data={"score": "7"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/scores"
    page = client.get("/scores").get_data(as_text=True)
    assert "<html" in page and top(page) == ["7"]


def test_integers_show_without_decimal_point(client):
    for score in ("3", "2.0", "1e2", "-0"):
        client.post("/scores", data={"score": score}, headers=HTMX)
    html = client.get("/scores", headers=HTMX).get_data(as_text=True)
    assert top(html) == ["100", "3", "2"]
    assert board_json(client)["top"] == [100, 3, 2]
    assert [format_score(v) for v in (2.0, -0.0, 2.5, 1e20)] == [
        "2", "0", "2.5", "100000000000000000000"]


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
@pytest.mark.parametrize("text", BAD_SCORES)
def test_bad_score_is_refused_and_board_kept(client, text, htmx):
    client.post("/scores", data={"score": "12"}, headers=HTMX)
    before = board_json(client)
    response = client.post("/scores", data={"score": text}, headers=HTMX if htmx else {})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    form = parse(html).find("form", id="score-form")
    assert form.find(id="score-error") and form.find("input", id="score")["aria-invalid"] == "true"
    assert ("<html" in html) is not htmx
    assert board_json(client) == before


def test_missing_score_field_is_refused(client):
    response = client.post("/scores", data={}, headers=HTMX)
    assert response.status_code == 422
    assert "Enter a score" in text_of(response.get_data(as_text=True))
    assert board_json(client)["count"] == 0


def test_fragment_for_htmx_full_page_otherwise(client):
    fragment = client.get("/scores", headers=HTMX)
    assert "<html" not in fragment.get_data(as_text=True)
    assert parse(fragment.get_data(as_text=True)).find(id="board")
    for headers in ({}, {**HTMX, "HX-Boosted": "true"},
                    {**HTMX, "HX-History-Restore-Request": "true"},
                    {"HX-Request": "true", "HX-Request-Type": "full"}):
        page = client.get("/scores", headers=headers)
        assert "<html" in page.get_data(as_text=True), headers
    for response in (fragment, page):
        assert "HX-Request" in response.vary


def test_unchanged_board_answers_304(client):
    first = client.get("/scores", headers=HTMX)
    etag = first.headers["ETag"]
    again = client.get("/scores", headers={**HTMX, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    client.post("/scores", data={"score": "1"}, headers=HTMX)
    changed = client.get("/scores", headers={**HTMX, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_post_without_csrf_proof_is_refused(app):
    stranger = app.test_client()
    for headers in (HTMX, {}):
        response = stranger.post("/scores", data={"score": "99"}, headers=headers)
        assert response.status_code == 400
        assert "expired" in text_of(response.get_data(as_text=True))
    assert board_json(stranger) == {"top": [], "count": 0}


def test_csrf_refusal_is_shown_in_the_alert_region(app):
    response = app.test_client().post("/scores", data={"score": "1"}, headers=HTMX)
    assert response.headers["HX-Retarget"] == "#alerts"
    assert parse(response.get_data(as_text=True)).find(role="alert")


def test_concurrent_submissions_are_all_counted(app):
    rng = random.Random(7)
    batches = [[round(rng.uniform(-1e6, 1e6), 3) for _ in range(100)] for _ in range(16)]
    clients = [new_client(app) for _ in batches]
    errors = []

    def submit(client, batch):
        for value in batch:
            status = client.post("/scores", data={"score": repr(value)}, headers=HTMX).status_code
            if status != 200:
                errors.append(status)

    in_threads(submit, zip(clients, batches))
    every_score = [value for batch in batches for value in batch]
    assert errors == []
    assert board_json(clients[0]) == {"top": sorted(every_score, reverse=True)[:3], "count": 1600}


@pytest.mark.browser
def test_browser_submit_updates_board_without_reload(browser, live_server):
    page = browser.new_page()
    loads = []
    page.on("load", lambda loaded: loads.append(loaded.url))
    page.goto(f"{live_server}/scores")
    page.evaluate("window.__sameDocument = true")
    page.fill("#score", "42")
    page.click("button[type=submit]")
    page.locator("#board li", has_text="42").wait_for()
    assert page.input_value("#score") == ""
    assert page.evaluate("window.__sameDocument") is True
    assert loads == [f"{live_server}/scores"]
    assert page.locator("#score-count").inner_text() == "1"
    page.close()


@pytest.mark.browser
def test_browser_board_refreshes_for_other_viewers(browser, live_server):
    viewer, other = browser.new_context(), browser.new_context()
    watching = viewer.new_page()
    watching.goto(f"{live_server}/scores")
    submitting = other.new_page()
    submitting.goto(f"{live_server}/scores")
    submitting.fill("#score", "77")
    submitting.click("button[type=submit]")
    watching.locator("#board li", has_text="77").wait_for()  # by the board's own polling
    assert watching.locator("#score-count").inner_text() == "1"
    viewer.close()
    other.close()


@pytest.mark.browser
def test_browser_polls_revalidate_an_unchanged_board_with_304(browser, app):
    statuses, answered = [], threading.Condition()

    @app.after_request
    def record(response):
        with answered:
            statuses.append((response.status_code, "HX-Request" in request.headers))
            answered.notify_all()
        return response

    with serve(app) as url:
        page = browser.new_page()
        page.goto(f"{url}/scores")
        with answered:  # the board polls every SCORE_POLL_SECONDS (1 s here)
            assert answered.wait_for(lambda: statuses.count((304, True)) >= 2, 30), statuses
        assert page.locator("#score-count").inner_text() == "0"
        page.close()


def test_a_refused_score_goes_back_into_the_box_to_be_corrected(client):
    for text in ("1e16", "lots", "<b>5</b>"):
        refused = client.post("/scores", data={"score": text}, headers=HTMX).get_data(as_text=True)
        assert parse(refused).find(id="score-error")
        assert parse(refused).find("input", id="score")["value"] == text


def test_browser_shows_the_servers_message_for_text_in_the_score_box(browser, live_server):
    page = browser.new_page()
    page.goto(f"{live_server}/scores")
    page.fill("#score", "abc")
    page.press("#score", "Enter")
    assert "A score must be a number" in page.locator("#score-error").inner_text()
    assert page.locator("#score").input_value() == "abc"
    page.close()
