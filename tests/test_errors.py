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
