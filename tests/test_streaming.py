"""Streamed replies: words arrive as they are generated, and the history keeps exactly what streamed."""

import re
import threading
import time
from contextlib import contextmanager
from html import unescape

import pytest

from conftest import (HTMX, Browser, ScriptedModel, events, free_port, gunicorn, new_client, serve, stop,
                      wait_until_serving)
from test_chat import log, send
from webapp import ROOT, generation
from webapp.chat_model import ChatModel
from webapp.pages import chat as chat_page
from webapp.pages.chat import MODEL_FAILED

STREAM = {**HTMX, "Accept": "text/html, text/event-stream"}


class SteppedModel(ScriptedModel):
    """Writes each reply a word at a time, one word each time the test releases a step."""

    def __init__(self, *words):
        super().__init__()
        self.words = words
        self.steps = threading.Semaphore(0)
        self.jobs = []

    def generate(self, jobs):
        self.jobs += jobs
        for job in jobs:
            text = ""
            for word in self.words:
                assert self.steps.acquire(timeout=30)
                text = f"{text} {word}".strip()
                job.publish(text)
            job.finish(text)


def pieces(data):
    """The text pieces that the stream's partial events append to the reply."""
    return [unescape(piece) for piece in re.findall(r'hx-swap="beforeend">(.*?)</hx-partial>', data, re.S)]


def sent_turn(browser, message):
    """Send a message over HTTP; return its turn id."""
    page = browser.request("POST", "/chat", f"message={message}")
    return re.search(r'id="exchange-(\d+)"', page).group(1)


def saved_reply(browser, turn):
    """The stored reply to `turn` as a fresh page load shows it, or None while there is none."""
    page = browser.request("GET", "/chat", htmx=False, new_connection=True)
    found = re.search(rf'<p class="bubble bot[^"]*" id="reply-{turn}"><span class="who">Bot:</span> (.*?)</p>',
                      page, re.S)
    return unescape(found.group(1)) if found else None


@contextmanager
def one_message(make_app, model):
    """Serve an app answering with `model` and send it a message; yield the browser, the message's
    turn id and a second connection of the same browser to read the reply on."""
    with serve(make_app(CHAT_MODEL=model)) as url:
        browser = Browser(int(url.rsplit(":", 1)[1]))
        reader = Browser(browser.port, browser.cookie, browser.token)
        try:
            yield browser, sent_turn(browser, "hello"), reader
        finally:
            reader.close()
            browser.close()


def test_first_words_arrive_before_the_reply_is_finished_and_the_history_keeps_what_streamed(make_app):
    model = SteppedModel("streamed", "word", "by", "word")
    with one_message(make_app, model) as (browser, turn, reader):
        stream = events(reader.stream(f"/chat/replies/{turn}"))
        model.steps.release()
        first = next(stream)
        assert pieces(first) == ["streamed"]
        assert saved_reply(browser, turn) is None  # generation has not ended: nothing stored yet
        assert f'id="reply-{turn}"' in browser.request("GET", "/chat", htmx=False)
        model.steps.release(3)
        rest = list(stream)
        assert "".join(pieces(first) + [p for data in rest for p in pieces(data)]) == "streamed word by word"
        assert re.search(rf'<p class="bubble bot" id="reply-{turn}">.*streamed word by word</p>', rest[-1])
        assert saved_reply(browser, turn) == "streamed word by word"


def test_a_browser_that_leaves_mid_stream_finds_the_whole_reply_on_refresh(make_app):
    model = SteppedModel("kept", "after", "you", "left")
    with one_message(make_app, model) as (browser, turn, reader):
        response = reader.stream(f"/chat/replies/{turn}")
        model.steps.release()
        assert pieces(next(events(response))) == ["kept"]
        response.close()
        reader.close()
        model.steps.release(3)
        deadline = time.monotonic() + 20
        while (reply := saved_reply(browser, turn)) is None:
            assert time.monotonic() < deadline, "the reply was never stored"
            time.sleep(0.05)
        assert reply == "kept after you left"


def test_a_refresh_mid_stream_follows_the_same_generation(make_app):
    model = SteppedModel("one", "generation", "only")
    with one_message(make_app, model) as (browser, turn, first):
        first_events = events(first.stream(f"/chat/replies/{turn}"))
        model.steps.release()
        assert pieces(next(first_events)) == ["one"]
        second = Browser(browser.port, browser.cookie, browser.token)
        second_events = events(second.stream(f"/chat/replies/{turn}"))
        assert pieces(next(second_events)) == ["one"]  # what was written so far, at once
        model.steps.release(2)
        for stream in (first_events, second_events):
            assert re.search(r'<p class="bubble bot" id="reply-\d+">.*one generation only</p>', list(stream)[-1])
        assert len(model.jobs) == 1 and saved_reply(browser, turn) == "one generation only"
        assert browser.request("GET", "/chat", htmx=False).count('class="bubble bot"') == 1
        second.close()


def test_a_real_model_streams_the_text_it_stores(make_app, monkeypatch):
    monkeypatch.setattr(chat_page, "STREAM_INTERVAL", 0)
    app = make_app(CHAT_MODEL=str(ROOT / "models" / "hxstate-chat"))
    app.extensions["chat_model"].model.register_forward_hook(lambda *_: time.sleep(0.01))
    client = new_client(app)
    sent = send(client, "tell me a joke")
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    response = client.post(f"/chat/replies/{turn}", headers=STREAM)
    assert response.mimetype == "text/event-stream" and response.status_code == 200
    data = response.get_data(as_text=True).split("\n\n")
    streamed = [piece for event in data for piece in pieces(event)]
    assert len(streamed) > 3  # token by token, not in one piece
    [(_, reply)] = [entry for entry in log(client) if entry[0] == "Bot"]
    assert "".join(streamed) == unescape(reply)


def test_a_reply_past_the_time_limit_is_stored_with_a_mark(make_app, tiny_model_dir):
    model = ChatModel(str(tiny_model_dir), max_new_tokens=40, min_new_tokens=40)
    model.model.register_forward_hook(lambda *_: time.sleep(0.05))  # 40 tokens take 2 s
    client = new_client(make_app(CHAT_MODEL=model, CHAT_TIME_LIMIT=0.5))
    sent = send(client, "hello")
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    assert "cut off: the reply reached its time limit" in streamed
    html = client.get("/chat").get_data(as_text=True)
    assert re.search(rf'<p class="bubble bot stopped" id="reply-{turn}">.*cut off: the reply reached its '
                     rf'time limit', html, re.S)
    # The mark is stored with the turn: a second request returns the stored reply, not a new one.
    again = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    assert "cut off" in again and "hx-partial" not in again


def test_a_failure_in_the_generating_thread_ends_the_stream_with_a_retry(make_app):
    class Broken(ScriptedModel):
        def generate(self, jobs):
            jobs[0].publish("half a")
            raise RuntimeError("CUDA out of memory")

    client = new_client(make_app(CHAT_MODEL=Broken()))
    sent = send(client, "hello")
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    final = streamed.strip().split("\n\n")[-1]
    assert MODEL_FAILED in final and "Retry</button>" in final and "CUDA" not in streamed
    assert log(client) == [("You", "hello")]  # no half reply stored


def test_a_stuck_model_ends_the_stream_after_the_time_limit(make_app, monkeypatch):
    monkeypatch.setattr(generation, "STALL_GRACE", 0.2)
    released = threading.Event()

    class Stuck(ScriptedModel):
        def generate(self, jobs):
            released.wait(30)

    client = new_client(make_app(CHAT_MODEL=Stuck(), CHAT_TIME_LIMIT=0.3))
    sent = send(client, "hello")
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    try:
        streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    finally:
        released.set()
    assert MODEL_FAILED in streamed and "Retry</button>" in streamed
    assert log(client) == [("You", "hello")]


@pytest.mark.browser
def test_browser_shows_the_reply_while_it_is_written(browser, make_app):
    model = SteppedModel("written", "while", "you", "watch")
    with serve(make_app(CHAT_MODEL=model)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/chat")
        page.fill("#message", "hello")
        page.press("#message", "Enter")
        model.steps.release(2)
        page.locator(".reply-text", has_text="written while").wait_for()
        assert page.locator(".typing").is_visible()
        model.steps.release(2)
        page.locator("p.bubble.bot", has_text="written while you watch").wait_for()
        assert page.locator(".typing").count() == 0
        page.reload()
        page.locator("p.bubble.bot", has_text="written while you watch").wait_for()
        context.close()


def test_gunicorn_streams_each_token_as_it_is_generated(app_env, slow_model_dir):
    port = free_port()
    server = gunicorn(app_env, HXSTATE_BIND=f"127.0.0.1:{port}", HXSTATE_CHAT_MODEL=str(slow_model_dir),
                      HXSTATE_CHAT_MAX_NEW_TOKENS="300", HXSTATE_CHAT_MIN_NEW_TOKENS="300",
                      HXSTATE_CHAT_NO_REPEAT_NGRAM_SIZE="0")
    try:
        wait_until_serving(server, port)
        browser = Browser(port)
        turn = sent_turn(browser, "hello")
        reader = Browser(port, browser.cookie, browser.token)
        stream = events(reader.stream(f"/chat/replies/{turn}"))
        first = next(stream)
        assert pieces(first) and saved_reply(browser, turn) is None
        rest = list(stream)
        assert len(rest) > 10
        streamed = "".join(pieces(first) + [p for data in rest for p in pieces(data)])
        assert saved_reply(browser, turn) == streamed.strip()
        reader.close()
        browser.close()
    finally:
        stop(server)
