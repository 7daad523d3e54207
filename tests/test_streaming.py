"""Streamed replies: words arrive as they are generated, and the history keeps exactly what streamed."""

import threading
import time
from contextlib import contextmanager

import pytest

from conftest import (HTMX, STREAM, ScriptedModel, conversation, events, failed_reply, free_port, gunicorn,
                      log, new_client, said, send, serve, stop, turn_id, type_message, wait_until_serving,
                      when_called)
from html_tree import parse
from stepped_model import WORDS, SteppedModel
from webapp.chat_markdown import render_markdown
from webapp.chat_model import ChatModel
from webapp.replies import MODEL_FAILED


def snapshots(data):
    """The reply's text so far, as each of the stream's partial events shows it in the bubble."""
    return [partial.raw_text.strip() for partial in parse(data).find_all("hx-partial")
            if partial.get("data-hx-target", "").startswith("#reply-text-")]


def growing(texts):
    """Whether each text extends the one before it."""
    return all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))


def finished_reply(html, turn):
    """What the finished reply to `turn` says in `html`, with its bubble's classes; None if none."""
    bubble = parse(html).find("div", id=f"reply-{turn}")
    return (said(bubble), bubble.classes) if bubble else None


def sent_turn(browser, message):
    """Send a message over HTTP; return its turn id."""
    return turn_id(browser.request("POST", "/chat", f"message={message}"))


def saved_reply(browser, turn):
    """The stored reply to `turn` as a fresh page load shows it, or None while there is none."""
    found = finished_reply(browser.request("GET", "/chat", htmx=False, new_connection=True), turn)
    return found[0] if found else None


@contextmanager
def one_message(app, browsers):
    """Serve `app` and send it a message; yield the browser, the message's turn id and a second
    connection of the same browser to read the reply on."""
    with serve(app) as url:
        browser = browsers(int(url.rsplit(":", 1)[1]))
        turn = sent_turn(browser, "hello")  # from now on the browser has a session
        yield browser, turn, browsers(browser.port, browser.cookie, browser.token)


def test_first_words_arrive_before_the_reply_is_finished_and_the_history_keeps_what_streamed(make_app,
                                                                                           browsers):
    model = SteppedModel("streamed", "word", "by", "word")
    with one_message(make_app(CHAT_MODEL=model), browsers) as (browser, turn, reader):
        stream = events(reader.stream(f"/chat/replies/{turn}"))
        model.release()
        first = next(stream)
        assert snapshots(first) == ["streamed"]
        assert saved_reply(browser, turn) is None  # generation has not ended: nothing stored yet
        pending = parse(browser.request("GET", "/chat", htmx=False)).find(id=f"reply-{turn}")
        assert pending.tag == "form" and "pending" in pending.classes
        model.release(3)
        rest = list(stream)
        texts = snapshots(first) + [text for data in rest for text in snapshots(data)]
        assert growing(texts) and texts[-1] == "streamed word by word"
        assert finished_reply(rest[-1], turn) == ("streamed word by word", {"bubble", "bot"})
        assert saved_reply(browser, turn) == "streamed word by word"


def test_a_browser_that_leaves_mid_stream_finds_the_whole_reply_on_refresh(make_app, browsers):
    model = SteppedModel("kept", "after", "you", "left")
    app = make_app(CHAT_MODEL=model)
    stored = when_called(app.extensions["stores"].history, "add_reply")
    with one_message(app, browsers) as (browser, turn, reader):
        response = reader.stream(f"/chat/replies/{turn}")
        model.release()
        assert snapshots(next(events(response))) == ["kept"]
        response.close()
        reader.close()
        model.release(3)
        assert stored.wait(30), "the reply was never stored"
        assert saved_reply(browser, turn) == "kept after you left"


def test_a_refresh_mid_stream_follows_the_same_generation(make_app, browsers):
    model = SteppedModel("one", "generation", "only")
    with one_message(make_app(CHAT_MODEL=model), browsers) as (browser, turn, first):
        first_events = events(first.stream(f"/chat/replies/{turn}"))
        model.release()
        assert snapshots(next(first_events)) == ["one"]
        second = browsers(browser.port, browser.cookie, browser.token)
        second_events = events(second.stream(f"/chat/replies/{turn}"))
        assert snapshots(next(second_events)) == ["one"]  # what was written so far, at once
        model.release(2)
        for stream in (first_events, second_events):
            assert finished_reply(list(stream)[-1], turn) == ("one generation only", {"bubble", "bot"})
        assert len(model.jobs) == 1 and saved_reply(browser, turn) == "one generation only"
        page = browser.request("GET", "/chat", htmx=False)
        assert conversation(page) == [("You", "hello"), ("Bot", "one generation only")]


class BeforeEachToken:
    """A real model that calls `before(jobs, token)` before each forward pass, that is before it
    makes each token (numbered from 1): the test decides what happens between two tokens."""

    def __init__(self, model, before):
        self.model, self.before, self.jobs, self.token = model, before, [], 0
        self._hook = model.model.register_forward_pre_hook(self._before_pass)

    def generate(self, jobs, more=None):
        self.jobs, self.token = jobs, 0
        self.model.generate(jobs, more)

    def _before_pass(self, *_):
        self.token += 1
        self.before(self.jobs, self.token)

    def remove(self):
        """Leave the model as it was."""
        self._hook.remove()


def test_a_real_model_streams_each_change_of_its_text_and_stores_what_streamed(make_app, shipped_model):
    read, reading = [""], threading.Condition()

    def wait_for_the_reader(jobs, token):  # each token only once the text before it has been read
        with reading:
            shown = parse(render_markdown(jobs[0].text)).raw_text.strip()
            assert reading.wait_for(lambda: read[-1] == shown, 30), "the reader fell behind"

    model = BeforeEachToken(shipped_model, wait_for_the_reader)
    try:
        client = new_client(make_app(CHAT_MODEL=model, CHAT_STREAM_INTERVAL=0, CHAT_STREAM_PACE=0))
        turn = turn_id(send(client, "tell me a joke").get_data(as_text=True))
        response = client.post(f"/chat/replies/{turn}", headers=STREAM, buffered=False)
        assert response.mimetype == "text/event-stream" and response.status_code == 200
        try:
            for data in events(response.response):
                with reading:
                    read.extend(snapshots(data))
                    reading.notify_all()
        finally:
            response.close()
    finally:
        model.remove()
    assert len(read) > 4 and growing(read)  # token by token, not in one piece
    [(_, reply)] = [entry for entry in log(client) if entry[0] == "Bot"]
    assert read[-1] == reply


def assert_cut_off(html, turn):
    """Check that `html` shows the reply to `turn` with the mark of a reply cut at its time limit."""
    bubble = parse(html).find("div", id=f"reply-{turn}")
    assert "stopped" in bubble.classes
    assert bubble.find("em", class_="note").text == "(cut off: the reply reached its time limit)"


def test_a_reply_past_the_time_limit_is_stored_with_a_mark(make_app, tiny_model_dir):
    def time_runs_out_at_the_fourth_token(jobs, token):
        if token == 4:
            for job in jobs:
                job.deadline = time.monotonic()  # as if the clock had reached the reply's time limit

    model = BeforeEachToken(ChatModel(str(tiny_model_dir), max_new_tokens=40, min_new_tokens=40),
                            time_runs_out_at_the_fourth_token)
    client = new_client(make_app(CHAT_MODEL=model))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    assert_cut_off(list(events([streamed]))[-1], turn)
    assert_cut_off(client.get("/chat").get_data(as_text=True), turn)
    assert model.jobs[0].tokens == 4
    # The mark is stored with the turn: a second request returns the stored reply, not a new one.
    again = client.post(f"/chat/replies/{turn}", headers=STREAM)
    assert again.mimetype == "text/html" and snapshots(again.get_data(as_text=True)) == []
    assert_cut_off(again.get_data(as_text=True), turn)


def test_a_failure_in_the_generating_thread_ends_the_stream_with_a_retry(make_app):
    class Broken(ScriptedModel):
        def generate(self, jobs, more=None):
            jobs[0].publish("half a")
            raise RuntimeError("CUDA out of memory")

    client = new_client(make_app(CHAT_MODEL=Broken()))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    final = list(events([streamed]))[-1]
    assert MODEL_FAILED in failed_reply(final, turn).text and "CUDA" not in streamed
    assert log(client) == [("You", "hello")]  # no half reply stored


def test_a_stuck_model_ends_the_stream_after_the_time_limit(make_app):
    released = threading.Event()

    class Stuck(ScriptedModel):
        def generate(self, jobs, more=None):
            jobs[0].deadline = time.monotonic()  # the time limit runs out as the model starts
            jobs[0].publish("half a")  # and the model stops answering after a word
            released.wait(30)

    client = new_client(make_app(CHAT_MODEL=Stuck(), CHAT_STALL_GRACE=0.2))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    try:
        streamed = client.post(f"/chat/replies/{turn}", headers=STREAM).get_data(as_text=True)
    finally:
        released.set()
    assert MODEL_FAILED in failed_reply(list(events([streamed]))[-1], turn).text
    assert log(client) == [("You", "hello")]


@pytest.mark.browser
def test_browser_shows_the_reply_while_it_is_written(browser, make_app):
    model = SteppedModel("written", "while", "you", "watch")
    with serve(make_app(CHAT_MODEL=model)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "hello")
        model.release(2)
        page.locator(".reply-text", has_text="written while").wait_for()
        assert page.locator(".typing").is_visible()
        model.release(2)
        page.locator("div.bubble.bot", has_text="written while you watch").wait_for()
        assert page.locator(".typing").count() == 0
        page.reload()
        page.locator("div.bubble.bot", has_text="written while you watch").wait_for()
        context.close()


def test_gunicorn_streams_each_word_as_it_is_written(app_env, server_steps, browsers):
    port = free_port()
    server = server_steps.gunicorn(app_env, HXSTATE_BIND=f"127.0.0.1:{port}")
    try:
        wait_until_serving(server, port)
        browser = browsers(port)
        turn = sent_turn(browser, "hello")
        reader = browsers(port, browser.cookie, browser.token)
        stream = events(reader.stream(f"/chat/replies/{turn}"))
        for number, word in enumerate(WORDS):
            server_steps.release()  # the next word is written only once the last one has arrived
            assert snapshots(next(stream)) == [" ".join(WORDS[:number + 1])]
            if number < len(WORDS) - 1:  # the model has not finished: nothing is stored yet
                assert saved_reply(browser, turn) is None
        *_, last = stream
        assert finished_reply(last, turn) == (" ".join(WORDS), {"bubble", "bot"})
        assert saved_reply(browser, turn) == " ".join(WORDS)
    finally:
        stop(server)


def test_a_gunicorn_worker_streams_what_a_real_model_writes_and_stores_it(app_env, browsers):
    port = free_port()
    server = gunicorn(app_env, HXSTATE_BIND=f"127.0.0.1:{port}", HXSTATE_CHAT_MIN_NEW_TOKENS="8")
    try:
        wait_until_serving(server, port)
        browser = browsers(port)
        turn = sent_turn(browser, "hello")
        *partial, last = events(browsers(port, browser.cookie, browser.token).stream(f"/chat/replies/{turn}"))
        texts = [text for data in partial for text in snapshots(data)]
        streamed = texts[-1]
        assert growing(texts) and streamed and finished_reply(last, turn) == (streamed, {"bubble", "bot"})
        assert saved_reply(browser, turn) == streamed
    finally:
        stop(server)


def test_stop_ends_the_reply_where_it_is_and_saves_it_marked(make_app, browsers):
    model = SteppedModel("one", "two", "three", "four")
    with one_message(make_app(CHAT_MODEL=model), browsers) as (browser, turn, reader):
        stream = events(reader.stream(f"/chat/replies/{turn}"))
        model.release()
        assert snapshots(next(stream)) == ["one"]
        browser.request("POST", f"/chat/replies/{turn}/stop")
        model.release()  # the model's next step finds its row stopped
        *_, last = stream
        assert finished_reply(last, turn) == ("one", {"bubble", "bot", "stopped"})
        assert parse(last).find("em", class_="note").text == "(stopped)"
        assert saved_reply(browser, turn) == "one"


def test_stop_refuses_a_reply_that_is_not_being_written(make_app):
    client = new_client(make_app(CHAT_MODEL=SteppedModel()))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    refused = client.post(f"/chat/replies/{turn}/stop", headers=HTMX)
    assert refused.status_code == 409 and refused.headers["HX-Retarget"] == "#alerts"


@pytest.mark.browser
def test_browser_stop_is_shown_while_writing_and_keeps_the_partial_reply(browser, make_app):
    model = SteppedModel("partial", "reply", "never", "finished")
    with serve(make_app(CHAT_MODEL=model)) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        assert page.get_by_role("button", name="Stop").count() == 0
        type_message(page, "go on")
        model.release()
        page.locator(".reply-text", has_text="partial").wait_for()
        with page.expect_response(lambda response: response.url.endswith("/stop")) as stopped:
            page.get_by_role("button", name="Stop").click()
        assert stopped.value.status == 204  # the server has the stop: let the model take its step
        model.release()
        page.locator(".bubble.bot.stopped", has_text="partial").wait_for()
        assert page.locator(".bubble.bot .note").inner_text() == "(stopped)"
        assert page.get_by_role("button", name="Stop").count() == 0
        page.reload()
        page.locator(".bubble.bot.stopped", has_text="partial").wait_for()
        page.close()


def test_stop_while_a_written_reply_is_still_being_shown_shows_all_of_it_unmarked(make_app):
    reply = " ".join(f"word{number}" for number in range(200))
    app = make_app(CHAT_MODEL=ScriptedModel(reply), CHAT_STREAM_PACE=1)  # 200 words at 1 character a second
    client = new_client(app)
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    response = client.post(f"/chat/replies/{turn}", headers=STREAM, buffered=False)
    try:
        stream = events(response.response)
        assert snapshots(next(stream)) == ["word0"]
        assert client.post(f"/chat/replies/{turn}/stop", headers=HTMX).status_code == 204
        rest = list(stream)
    finally:
        response.close()
    assert finished_reply(rest[-1], turn) == (reply, {"bubble", "bot"})  # no "stopped"
    assert log(client)[-1] == ("Bot", reply)
    assert client.post(f"/chat/replies/{turn}/stop", headers=HTMX).status_code == 409
