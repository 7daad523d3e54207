"""Every registered page is complete: module surface, templates, navigation, page and fragment."""

from pathlib import Path

import pytest
from flask import session, url_for

from conftest import HTMX, in_threads
from html_tree import parse
from webapp.pages import PAGES
from webapp.state import GlobalState, SessionState

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def current_pages(html):
    """The (address, text) of the navigation links marked as the current page."""
    return [(link["href"], link.text) for link in parse(html).find("nav").find_all("a")
            if link.get("aria-current") == "page"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.bp.name)
def test_registered_page_is_complete(app, client, page):
    name = page.bp.name
    assert page.TITLE.strip() and page.DESCRIPTION.strip()
    assert (TEMPLATES / name / "page.html").is_file(), f"templates/{name}/page.html is missing"
    with app.test_request_context():
        url = url_for(f"{name}.index")
    full = client.get(url)
    html = full.get_data(as_text=True)
    assert full.status_code == 200 and "<html" in html
    assert parse(html).find("title").text == f"{page.TITLE} · hxstate"
    assert current_pages(html) == [(url, page.TITLE)]
    home = parse(client.get("/").get_data(as_text=True))
    assert [item.text for item in home.find("ul", class_="pages").find_all("li")
            if item.find("a", href=url)] == [f"{page.TITLE} — {page.DESCRIPTION}"]
    fragment = client.get(url, headers=HTMX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.get_data(as_text=True) and fragment.get_data(as_text=True).strip()
    assert "HX-Request" in full.vary and "HX-Request" in fragment.vary


def test_session_state_default_is_a_fresh_copy(app):
    notes = SessionState("test.notes", default=[])
    with app.test_request_context():
        notes.get().append("changed")
        assert notes.get() == []
        notes.set(["mine"])
        assert notes.get() == ["mine"]


def test_session_state_keeps_what_is_set_and_only_marks_a_change(app):
    notes = SessionState("test.notes", default=[])
    with app.test_request_context():
        mine = notes.get()
        mine.append("a")
        notes.set(mine)
        mine.append("not set")
        assert notes.get() == ["a"]
        assert session.modified
        session.modified = False
        notes.set(["a"])
        assert not session.modified


def test_global_state_update_is_atomic_in_memory(app):
    counter = GlobalState("test.counter", default=0)

    def bump():
        with app.app_context():
            for _ in range(500):
                counter.update(lambda value: value + 1)

    in_threads(bump, [()] * 8)
    with app.app_context():
        assert counter.get() == 4000
