"""State shared through Redis: the same board and chat as the embedded stores, across processes."""

import http.client
import json
import os
import random
import signal
import threading

import pytest
import redis

from conftest import (HTMX, ScriptedModel, board_json, chat, conversation, free_port, gunicorn, in_threads,
                      log, new_client, send, stop, turn_id, wait_until_serving)
from html_tree import parse, text_of
from stepped_model import WORDS
from webapp.score_board import RedisScoreBoard


def test_redis_board_shows_what_the_memory_board_shows(make_app, redis_config):
    rng = random.Random(3)
    values = [str(rng.choice([rng.randint(-50, 50), round(rng.uniform(-1e3, 1e3), 2)]))
              for _ in range(300)]
    memory, shared = new_client(make_app()), new_client(make_app(**redis_config))
    assert isinstance(shared.application.extensions["stores"].board, RedisScoreBoard)
    for value in values:
        memory.post("/scores", data={"score": value}, headers=HTMX)
        shared.post("/scores", data={"score": value}, headers=HTMX)
    assert board_json(shared) == board_json(memory)
    assert board_json(shared)["count"] == 300
    fragments = [c.get("/scores", headers=HTMX).get_data(as_text=True) for c in (memory, shared)]
    assert fragments[0] == fragments[1]


def test_redis_board_keeps_equal_scores_and_bounded_memory(make_app, redis_config):
    client = new_client(make_app(**redis_config))
    for value in ["5", "5", "1", "5", "2"] * 40:
        client.post("/scores", data={"score": value}, headers=HTMX)
    assert board_json(client) == {"top": [5, 5, 5], "count": 200}
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as store:
        assert store.zcard(redis_config["REDIS_KEY_PREFIX"] + "scores:top") == 3


def test_redis_board_is_exact_under_concurrency(make_app, redis_config):
    app = make_app(**redis_config)
    rng = random.Random(11)
    batches = [[rng.randint(-10**6, 10**6) for _ in range(50)] for _ in range(16)]
    clients = [new_client(app) for _ in batches]

    def submit(client, batch):
        for value in batch:
            assert client.post("/scores", data={"score": str(value)}, headers=HTMX).status_code == 200

    in_threads(submit, zip(clients, batches))
    every = [value for batch in batches for value in batch]
    assert board_json(clients[0]) == {"top": sorted(every, reverse=True)[:3], "count": 800}


def test_key_prefix_keeps_two_deployments_apart(make_app, redis_config):
    other = {**redis_config, "REDIS_KEY_PREFIX": redis_config["REDIS_KEY_PREFIX"] + "other:"}
    first, second = new_client(make_app(**redis_config)), new_client(make_app(**other))
    first.post("/scores", data={"score": "9"}, headers=HTMX)
    assert board_json(first) == {"top": [9], "count": 1}
    assert board_json(second) == {"top": [], "count": 0}


def test_chat_on_redis_is_per_browser_and_survives_a_restart(make_app, redis_config):
    app = make_app(CHAT_MODEL=ScriptedModel("hello alice", "hello bob"), **redis_config)
    alice, bob = new_client(app), new_client(app)
    chat(alice, "I am Alice")
    chat(bob, "I am Bob")
    assert log(alice) == [("You", "I am Alice"), ("Bot", "hello alice")]
    assert log(bob) == [("You", "I am Bob"), ("Bot", "hello bob")]
    restarted = make_app(CHAT_MODEL=ScriptedModel(), **redis_config).test_client()
    restarted.set_cookie("session", alice.get_cookie("session").value)
    assert log(restarted) == [("You", "I am Alice"), ("Bot", "hello alice")]
    alice.post("/chat/clear", headers=HTMX)
    assert log(alice) == [] and len(log(bob)) == 2


def test_undo_and_regenerate_on_redis_touch_only_the_newest_exchange(make_app, redis_config):
    app = make_app(CHAT_MODEL=ScriptedModel("r1", "r2", "r2 again", "bob's"), **redis_config)
    alice, bob = new_client(app), new_client(app)
    chat(alice, "m1")
    turn = turn_id(send(alice, "m2").get_data(as_text=True))
    alice.post(f"/chat/replies/{turn}", headers=HTMX)
    assert alice.post(f"/chat/replies/{turn}/regenerate").status_code == 303
    assert log(alice) == [("You", "m1"), ("Bot", "r1"), ("You", "m2"), ("Bot", "r2 again")]
    chat(bob, "hi")
    assert alice.post("/chat/undo").status_code == 303
    assert parse(alice.get("/chat").get_data(as_text=True)).find("textarea", id="message").raw_text == "m2"
    assert log(alice) == [("You", "m1"), ("Bot", "r1")]
    assert log(bob) == [("You", "hi"), ("Bot", "bob's")]


def test_feedback_on_redis_is_kept_with_the_reply(make_app, redis_config):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("rate me"), **redis_config))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    client.post(f"/chat/replies/{turn}", headers=HTMX)
    client.post(f"/chat/replies/{turn}/feedback", data={"feedback": "dislike"}, headers=HTMX)
    bubble = parse(client.get("/chat").get_data(as_text=True)).find("div", id=f"reply-{turn}")
    assert [b.text for b in bubble.find_all("button") if b.get("aria-pressed") == "true"] == ["Dislike"]
    assert log(client) == [("You", "hello"), ("Bot", "rate me")]


def test_session_and_history_expire_in_redis(make_app, redis_config):
    app = make_app(PERMANENT_SESSION_LIFETIME=600, CHAT_MODEL=ScriptedModel(), **redis_config)
    client = new_client(app)
    chat(client, "hi")
    sid = client.get_cookie("session").value
    prefix = redis_config["REDIS_KEY_PREFIX"]
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as store:
        assert 0 < store.ttl(prefix + "session:" + sid) <= 600
        assert 0 < store.ttl(prefix + "chat:" + sid) <= 600


def message_under_held_lock(app, redis_config, lock_timeout):
    """Send a message, then take its session's reply lock as another worker would; return both."""
    client = new_client(app)
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    sid = client.get_cookie("session").value
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as store:
        lock = store.lock(redis_config["REDIS_KEY_PREFIX"] + "chat:lock:" + sid, timeout=lock_timeout)
        assert lock.acquire()
    return client, turn


def test_a_dead_workers_lock_expires(make_app, redis_config):
    app = make_app(CHAT_MODEL=ScriptedModel("after the lock"), CHAT_LOCK_WAIT=10, **redis_config)
    # A worker killed while generating leaves its lock behind, with the timeout it took it with.
    client, turn = message_under_held_lock(app, redis_config, lock_timeout=1)
    answered = client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert answered.status_code == 200 and conversation(answered.get_data(as_text=True)) == [
        ("Bot", "after the lock")]


def test_a_held_lock_makes_the_reply_wait_then_answer_busy(make_app, redis_config):
    app = make_app(CHAT_MODEL=ScriptedModel(), CHAT_LOCK_WAIT=0.5, **redis_config)
    client, turn = message_under_held_lock(app, redis_config, lock_timeout=30)
    busy = client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert busy.status_code == 503 and "still busy" in text_of(busy.get_data(as_text=True))
    assert log(client) == [("You", "hello")]


def test_redis_outage_is_a_503_and_the_app_recovers(make_app, private_redis):
    app = make_app(REDIS_URL=private_redis.url, CHAT_MODEL=ScriptedModel("kept reply"))
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    chat(client, "kept message")
    private_redis.stop()

    for response in (client.get("/scores"), client.get("/scores.json"), client.get("/chat"),
                     client.post("/scores", data={"score": "6"}, headers=HTMX),
                     client.post("/chat", data={"message": "lost?"}, headers=HTMX)):
        html = response.get_data(as_text=True)
        assert response.status_code == 503, html
        assert "cannot be reached right now" in text_of(html) and "Traceback" not in html
        assert response.headers["Retry-After"] == "5"
    fragment = client.post("/scores", data={"score": "6"}, headers=HTMX)
    assert fragment.headers["HX-Retarget"] == "#alerts" and "<html" not in fragment.get_data(as_text=True)
    assert client.get("/").status_code == 200

    private_redis.start()
    assert board_json(client) == {"top": [5], "count": 1}
    assert log(client) == [("You", "kept message"), ("Bot", "kept reply")]
    assert client.post("/scores", data={"score": "7"}, headers=HTMX).status_code == 200
    assert board_json(client) == {"top": [7, 5], "count": 2}


def worker_pids(access_log, path):
    """The worker processes that answered `path`, from gunicorn's access log (`%(p)s %(U)s`)."""
    return {line.split()[0] for line in access_log.read_text().splitlines()
            if line.split()[1:2] == [path]}


@pytest.fixture
def redis_server_env(app_env, redis_config, tmp_path):
    """Settings for gunicorn on Redis, with an access log naming the worker of each request."""
    port = free_port()
    log = tmp_path / "access.log"
    env = {**app_env, "HXSTATE_REDIS_URL": redis_config["REDIS_URL"],
           "HXSTATE_REDIS_KEY_PREFIX": redis_config["REDIS_KEY_PREFIX"],
           "HXSTATE_BIND": f"127.0.0.1:{port}", "HXSTATE_WORKERS": "3", "HXSTATE_THREADS": "8"}
    return env, port, log, ["--access-logfile", str(log), "--access-logformat", "%(p)s %(U)s %(s)s"]


def test_three_gunicorn_workers_share_one_board(redis_server_env, browsers):
    env, port, access_log, args = redis_server_env
    server = gunicorn(env, *args)
    try:
        wait_until_serving(server, port)
        rng = random.Random(5)
        batches = [[rng.randint(-10**9, 10**9) for _ in range(50)] for _ in range(32)]

        def submit(batch):
            browser = browsers(port)
            for value in batch:
                browser.request("POST", "/scores", f"score={value}")

        in_threads(submit, [(batch,) for batch in batches])
        every = [value for batch in batches for value in batch]
        expected = {"top": sorted(every, reverse=True)[:3], "count": 1600}
        reader = browsers(port)
        for _ in range(300):
            assert json.loads(reader.request("GET", "/scores.json", new_connection=True)) == expected
            if len(worker_pids(access_log, "/scores.json")) == 3:
                break
        assert len(worker_pids(access_log, "/scores.json")) == 3
    finally:
        stop(server)


def test_chat_moves_between_workers_and_survives_a_killed_one(redis_server_env, server_steps, browsers):
    env, port, access_log, args = redis_server_env
    env = {**env, "HXSTATE_CHAT_TIME_LIMIT": "3", "HXSTATE_CHAT_LOCK_TIMEOUT": "9"}
    server = server_steps.gunicorn(env, *args)
    reply = " ".join(WORDS)
    try:
        wait_until_serving(server, port)
        bystander = browsers(port)
        for k in range(2):
            sent = bystander.request("POST", "/chat", f"message=hello+{k}", new_connection=True)
            server_steps.release(len(WORDS))
            bystander.request("POST", f"/chat/replies/{turn_id(sent)}", new_connection=True)
            server_steps.started()
        before = bystander.request("GET", "/chat", new_connection=True)
        assert conversation(before) == [("You", "hello 0"), ("Bot", reply),
                                        ("You", "hello 1"), ("Bot", reply)]
        for _ in range(100):  # until the session has been served by several workers
            if len(worker_pids(access_log, "/chat")) >= 2:
                break
            assert bystander.request("GET", "/chat", new_connection=True) == before
        assert len(worker_pids(access_log, "/chat")) >= 2

        victim = browsers(port)
        turn = turn_id(victim.request("POST", "/chat", "message=interrupted"))
        failures = []

        def ask_for_reply():
            try:
                browsers(port, victim.cookie, victim.token).request("POST", f"/chat/replies/{turn}")
            except (OSError, http.client.HTTPException) as error:
                failures.append(error)

        asking = threading.Thread(target=ask_for_reply)
        asking.start()
        os.kill(server_steps.started(), signal.SIGKILL)  # the worker generating the reply
        asking.join(timeout=60)
        assert failures, "the reply finished before its worker was killed"

        assert bystander.request("GET", "/chat", new_connection=True) == before
        page = victim.request("GET", "/chat", new_connection=True)
        assert conversation(page) == [("You", "interrupted")]
        pending = parse(page).find(id=f"reply-{turn}")
        assert pending.tag == "form" and "pending" in pending.classes
        server_steps.release(len(WORDS))
        answered = victim.request("POST", f"/chat/replies/{turn}", new_connection=True)
        assert conversation(answered) == [("Bot", reply)]
    finally:
        stop(server)
