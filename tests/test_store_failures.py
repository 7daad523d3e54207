"""A store that fails (Redis gone, the instance folder unwritable) costs only the requests that need
it: they get the 503 page or fragment with every security header, nothing stored is lost, and the
app recovers by itself when the store is back."""

import dataclasses
import os
import subprocess
import threading
from contextlib import contextmanager

import pytest

from conftest import (HTMX, ScriptedModel, board_json, chat, events, failed_reply, free_port, gunicorn, log,
                      new_client, send, serve, stop, turn_id)
from html_tree import text_of
from stepped_model import SteppedModel
from webapp.security import CONTENT_SECURITY_POLICY
from webapp.store_errors import STORE_DOWN


def production_app(make_app, **config):
    """An app that handles its errors as outside tests (where they propagate to the test)."""
    return make_app(PROPAGATE_EXCEPTIONS=False, **config)


def assert_store_down(response, fragment, alert=True):
    """The 503 a store failure gets: the store message, the headers of every page, no trace; a
    fragment shown in the alerts (unless it is the failed reply, shown where the reply would be)."""
    html = response.get_data(as_text=True)
    assert response.status_code == 503, html
    assert STORE_DOWN in text_of(html) and "Traceback" not in html
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Retry-After"] == "5"
    assert ("<html" not in html) == fragment
    if fragment and alert:
        assert response.headers["HX-Retarget"] == "#alerts"


class DyingBoard:
    """The app's board, but the Redis it lives on goes away as a submit begins."""

    def __init__(self, board, server):
        self.board, self.server = board, server

    def submit(self, value):
        self.server.stop()
        return self.board.submit(value)

    def snapshot(self):
        return self.board.snapshot()


def test_redis_dying_during_a_limited_post_gives_the_503_with_its_headers(make_app, private_redis):
    # The rate limiter counted the post while Redis was there.
    app = production_app(make_app, REDIS_URL=private_redis.url, RATELIMIT_ENABLED=True)
    client = new_client(app)
    assert client.post("/scores", data={"score": "5"}, headers=HTMX).status_code == 200
    stores = app.extensions["stores"]
    app.extensions["stores"] = dataclasses.replace(stores, board=DyingBoard(stores.board, private_redis))
    assert_store_down(client.post("/scores", data={"score": "6"}, headers=HTMX), fragment=True)
    private_redis.start()
    assert_store_down(client.post("/scores", data={"score": "7"}), fragment=False)
    private_redis.start()
    app.extensions["stores"] = stores
    assert client.post("/scores", data={"score": "8"}, headers=HTMX).status_code == 200
    assert board_json(client) == {"top": [8, 5], "count": 2}


def test_a_limited_post_while_redis_is_down_gets_the_503_and_the_limit_counts_once_it_is_back(
        make_app, private_redis):
    app = production_app(make_app, REDIS_URL=private_redis.url, RATELIMIT_ENABLED=True,
                         SCORE_RATE_LIMIT="2/minute")
    client = new_client(app)
    private_redis.stop()
    assert_store_down(client.post("/scores", data={"score": "1"}, headers=HTMX), fragment=True)
    private_redis.start()
    assert [client.post("/scores", data={"score": str(value)}, headers=HTMX).status_code
            for value in (2, 3, 4)] == [200, 200, 429]
    assert board_json(client) == {"top": [3, 2], "count": 2}


class WatchedModel(SteppedModel):
    """A SteppedModel that tells the test when a batch has reached it."""

    def __init__(self, *words):
        super().__init__(*words)
        self.batch = threading.Event()

    def started(self):
        self.batch.set()


def test_a_chat_whose_reply_was_cut_by_a_redis_outage_works_once_redis_is_back(make_app, private_redis):
    model = WatchedModel("back", "again")
    # A wait long enough never to run out on a loaded machine, and far shorter than the lock's timeout.
    app = production_app(make_app, REDIS_URL=private_redis.url, CHAT_MODEL=model, CHAT_LOCK_WAIT=30, CHAT_LOCK_TIMEOUT=600)
    client = new_client(app)
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        client.post(f"/chat/replies/{turn}", headers=HTMX)))
    waiting.start()
    assert model.batch.wait(30), "the reply never reached the model"
    private_redis.stop()  # with the chat's lock saved, as a restarted server keeps it
    model.release(2)
    waiting.join()
    assert_store_down(answers[0], fragment=True, alert=False)
    failed_reply(answers[0].get_data(as_text=True), turn)

    private_redis.start()
    model.release(2)
    retried = client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert log(client) == [("You", "hello"), ("Bot", "back again")]


def test_a_stream_cut_by_a_redis_outage_ends_with_the_failed_reply_and_retry(make_app, private_redis, browsers):
    model = WatchedModel("cut", "short")
    app = production_app(make_app, REDIS_URL=private_redis.url, CHAT_MODEL=model, CHAT_STREAM_PACE=0)
    with serve(app) as url:
        browser = browsers(int(url.rsplit(":", 1)[1]))
        turn = turn_id(browser.request("POST", "/chat", "message=hello"))
        stream = events(browser.stream(f"/chat/replies/{turn}"))
        model.release()
        assert "cut" in text_of(next(stream))
        private_redis.stop()
        model.release()
        last = list(stream)[-1]
        failed_reply(last, turn)
        assert STORE_DOWN in text_of(last)

        private_redis.start()
        model.release(2)
        again = browsers(browser.port, browser.cookie, browser.token)
        assert "cut short" in text_of(again.request("POST", f"/chat/replies/{turn}"))


def unwritable(folder):
    """Make `folder` and the files in it unwritable, even by root (who ignores file modes)."""
    return unwritable_files([folder, *sorted(folder.iterdir())])


@contextmanager
def unwritable_files(paths):
    """Make `paths` unwritable, even by root."""
    root = os.geteuid() == 0
    for path in paths:
        if root:
            subprocess.run(["chattr", "+i", str(path)], check=True)
        else:
            path.chmod(path.stat().st_mode & ~0o222)
    try:
        yield
    finally:
        for path in paths:
            if root:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            else:
                path.chmod(path.stat().st_mode | 0o200)


@pytest.fixture
def instance(tmp_path):
    """An instance folder of this test's own, holding its database and secret key."""
    folder = tmp_path / "instance"
    folder.mkdir()
    return folder


def app_in(make_app, instance, **config):
    """An app whose instance folder is `instance`, as a deployment's is."""
    return production_app(make_app, SQLALCHEMY_DATABASE_URI=f"sqlite:///{instance / 'hxstate.sqlite3'}",
                    SESSION_CLEANUP_EVERY=1, **config)


def test_an_unwritable_instance_folder_fails_only_what_needs_state_and_recovers(make_app, instance):
    app = app_in(make_app, instance, CHAT_MODEL=ScriptedModel("kept reply"))
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    client.post("/words", data={"text": "one two"}, headers=HTMX)
    assert chat(client, "kept message").status_code == 200
    with unwritable(instance):
        stranger = app.test_client()
        assert stranger.get("/").status_code == 200  # a first visit stores nothing
        # The board is read from the process's memory between submits: it is still shown.
        assert board_json(stranger) == {"top": [5], "count": 1}
        assert_store_down(client.post("/words", data={"text": "three"}, headers=HTMX), fragment=True)
        assert_store_down(client.post("/scores", data={"score": "6"}, headers=HTMX), fragment=True)
        assert_store_down(client.post("/chat", data={"message": "lost?"}, headers=HTMX), fragment=True)
        # No state needed: they do not fail.
        for path in ("/static/app.css", "/no-such-page"):
            response = client.get(path)
            body = response.get_data(as_text=True)
            response.close()  # a static file's
            assert response.status_code in (200, 404) and STORE_DOWN not in body
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert app.test_client().get("/").status_code == 200
    assert board_json(client) == {"top": [5], "count": 1}
    assert log(client) == [("You", "kept message"), ("Bot", "kept reply")]
    assert client.post("/words", data={"text": "three"}, headers=HTMX).status_code == 200
    assert client.post("/scores", data={"score": "7"}, headers=HTMX).status_code == 200
    assert board_json(client) == {"top": [7, 5], "count": 2}


def test_an_unwritable_log_alone_fails_the_writes_with_sqlites_own_error_and_recovers(make_app, instance):
    # Only the -shm file is checked before each statement: SQLite answers for the others.
    app = app_in(make_app, instance)
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    log_file = instance / "hxstate.sqlite3-wal"
    with unwritable_files([log_file]):
        assert_store_down(client.post("/scores", data={"score": "6"}, headers=HTMX), fragment=True)
    assert client.post("/scores", data={"score": "7"}, headers=HTMX).status_code == 200
    assert board_json(client) == {"top": [7, 5], "count": 2}


def test_a_start_on_an_unwritable_instance_folder_stops_with_one_sentence(app_env, instance):
    env = {**app_env, "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'hxstate.sqlite3'}"}
    with unwritable(instance):
        server = gunicorn(env, "--bind", f"127.0.0.1:{free_port()}")
        try:
            output, _ = server.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            stop(server)
            raise
    assert server.returncode != 0
    assert "Traceback" not in output, output
    assert f"hxstate cannot write to its database {instance / 'hxstate.sqlite3'}" in output, output
