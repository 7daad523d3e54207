"""The home page lists every registered page."""

from webapp.pages import PAGES


def test_home_lists_every_registered_page(client):
    html = client.get("/").get_data(as_text=True)
    assert PAGES
    for page in PAGES:
        assert page.TITLE in html and page.DESCRIPTION in html
        assert f'href="/{page.bp.name}"' in html


def test_navigation_marks_the_current_page(client):
    html = client.get("/scores").get_data(as_text=True)
    assert '<a href="/scores"\n     aria-current="page">' in html
