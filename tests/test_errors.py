"""Errors render in one place: a full page, or a fragment retargeted to the alert region."""

from conftest import HTMX
from html_tree import parse, text_of


def test_not_found_is_a_full_page(client):
    response = client.get("/no-such-page")
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "<html" in html and "There is no page at this address." in text_of(html)


def test_not_found_for_htmx_is_a_fragment_for_the_alert_region(client):
    response = client.get("/no-such-page", headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "<html" not in html and parse(html).find(role="alert")
    assert response.headers["HX-Retarget"] == "#alerts"
    assert response.headers["HX-Reswap"] == "innerHTML"
    assert "HX-Request" in response.vary


def test_wrong_method_says_which_are_allowed(client):
    response = client.delete("/scores")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert "does not accept" in text_of(response.get_data(as_text=True))


def test_unexpected_exception_is_a_500_page_without_traceback(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False)  # as outside tests and debug mode

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    html = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Nothing you had stored was lost" in text_of(html)
    assert "secret detail" not in html and "Traceback" not in html


def clears_alerts(html):
    """Whether an htmx answer empties the page's alert region."""
    return any(partial.get("data-hx-target") == "#alerts" and not partial.text.strip()
               for partial in parse(html).find_all("hx-partial"))


def test_a_successful_post_clears_the_alert_region_and_polls_and_failures_do_not(client):
    assert clears_alerts(client.post("/scores", data={"score": "5"}, headers=HTMX).get_data(as_text=True))
    assert not clears_alerts(client.get("/scores", headers=HTMX).get_data(as_text=True))
    refused = client.post("/scores", data={"score": "lots"}, headers=HTMX)
    assert refused.status_code == 422 and not clears_alerts(refused.get_data(as_text=True))
    assert not clears_alerts(client.post("/scores", data={"score": "5"}).get_data(as_text=True))


def test_a_banner_can_be_dismissed_and_goes_when_the_next_request_works(browser, live_server):
    page = browser.new_page()
    page.goto(f"{live_server}/scores")
    token = page.input_value("#score-form input[name=csrf_token]")
    for leave in ("dismiss", "succeed"):
        page.evaluate("() => { document.querySelector('#score-form input[name=csrf_token]').value = 'stale';"
                      " document.body.setAttribute('data-hx-headers:inherited', '{}'); }")
        page.fill("#score", "1")
        page.press("#score", "Enter")
        banner = page.locator("#alerts .alert", has_text="This form has expired")
        banner.wait_for()
        page.evaluate("token => document.querySelector('#score-form input[name=csrf_token]').value = token",
                      token)
        if leave == "dismiss":
            page.get_by_role("button", name="Dismiss this message").click()
        else:
            page.fill("#score", "2")
            page.press("#score", "Enter")
            page.locator("#last-score", has_text="2").wait_for()
        banner.wait_for(state="detached")
    assert page.locator("#alerts").inner_html().strip() == ""
    page.close()
