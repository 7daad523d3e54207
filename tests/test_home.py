"""The home page lists every registered page."""

from html_tree import parse
from webapp.pages import PAGES


def test_home_lists_every_registered_page(client):
    home = parse(client.get("/").get_data(as_text=True))
    assert PAGES
    listed = [(item.find("a")["href"], item.text) for item in home.find("ul", class_="pages").find_all("li")]
    assert listed == [(f"/{page.bp.name}", f"{page.TITLE} — {page.DESCRIPTION}") for page in PAGES]


def test_navigation_marks_the_current_page(client):
    navigation = parse(client.get("/scores").get_data(as_text=True)).find("nav")
    assert [link["href"] for link in navigation.find_all("a") if link.get("aria-current") == "page"] == [
        "/scores"]


def test_home_says_what_each_page_shows_and_where_the_demos_come_from(client):
    lead = parse(client.get("/").get_data(as_text=True)).find("p", class_="lead").text
    assert "“State in Gradio”" in lead
    for words in ("global state", "session state", "both kinds"):
        assert words in lead
