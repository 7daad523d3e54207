"""The word counter: per-browser text and counts beside a tally shared by everyone."""

import pytest

from conftest import HTMX, in_threads, new_client
from html_tree import parse


def counts(client):
    """This browser's words and texts counted, and the words everyone counted, as the page shows them."""
    page = parse(client.get("/words").get_data(as_text=True))
    return tuple(int(page.find(id=name).text) for name in ("my-words", "my-submissions", "all-words"))


def kept_text(client):
    """The text in the box of a freshly loaded page."""
    return parse(client.get("/words").get_data(as_text=True)).find("textarea", id="text").raw_text


def test_each_browser_keeps_its_own_text_while_the_tally_is_shared(app):
    alice, bob = new_client(app), new_client(app)
    assert alice.post("/words", data={"text": "one two three"}, headers=HTMX).status_code == 200
    bob.post("/words", data={"text": "four five"}, headers=HTMX)
    alice.post("/words", data={"text": "six"}, headers=HTMX)
    assert counts(alice) == (1, 2, 6)
    assert counts(bob) == (2, 1, 6)
    assert kept_text(bob) == "four five"  # a refresh keeps it
    assert kept_text(alice) == "six"


def test_plain_form_redirects_back(client):
    response = client.post("/words", data={"text": "no javascript here"})
    assert response.status_code == 303 and response.headers["Location"] == "/words"
    assert counts(client) == (3, 1, 3)


@pytest.mark.parametrize("text", ["", "   \n", "w " * 2600])
def test_bad_text_is_refused_and_nothing_changes(client, text):
    client.post("/words", data={"text": "kept words"}, headers=HTMX)
    response = client.post("/words", data={"text": text}, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and parse(html).find(id="text-error") and "<html" not in html
    assert counts(client) == (2, 1, 2)


def tally_from_threads(app, threads=8, posts=25):
    clients = [new_client(app) for _ in range(threads)]

    def post(client):
        for _ in range(posts):
            assert client.post("/words", data={"text": "a b c"}, headers=HTMX).status_code == 200

    in_threads(post, [(client,) for client in clients])
    return clients


def test_the_tally_loses_no_concurrent_update(app):
    clients = tally_from_threads(app)
    assert counts(clients[0]) == (3, 25, 8 * 25 * 3)


def test_the_tally_is_shared_by_every_process_on_redis(make_app, redis_config):
    first, second = make_app(**redis_config), make_app(**redis_config)
    tally_from_threads(first, threads=4)
    clients = tally_from_threads(second, threads=4)
    assert counts(clients[0])[2] == 2 * 4 * 25 * 3


def test_open_pages_poll_the_tally_and_an_unchanged_one_answers_304(client):
    client.post("/words", data={"text": "one two"}, headers=HTMX)
    poll = client.get("/words", headers=HTMX)
    tally = parse(poll.get_data(as_text=True)).find(id="tally")
    assert poll.status_code == 200 and tally.find(id="all-words").text == "2"
    assert tally["data-hx-trigger"] == "every 1s" and poll.headers["ETag"]
    assert client.get("/words", headers={**HTMX, "If-None-Match": poll.headers["ETag"]}).status_code == 304
    client.post("/words", data={"text": "three"}, headers=HTMX)
    changed = client.get("/words", headers={**HTMX, "If-None-Match": poll.headers["ETag"]})
    assert changed.status_code == 200 and parse(changed.get_data(as_text=True)).find(id="all-words").text == "3"


def test_browser_tally_updates_in_every_open_page(browser, live_server):
    watcher, counter = browser.new_page(), browser.new_context().new_page()
    for page in (watcher, counter):
        page.goto(f"{live_server}/words")
    counter.fill("#text", "four words right here")
    counter.click("#word-counter button")
    counter.locator("#all-words", has_text="4").wait_for()  # at once, in the page that counted
    watcher.locator("#all-words", has_text="4").wait_for()  # by its next poll, without a reload
    watcher.close()
    counter.context.close()
