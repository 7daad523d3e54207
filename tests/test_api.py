"""The HTTP API for programs, against gunicorn with a real HTTP client: conversations started,
continued, streamed and read back by key; scores; and JSON errors that store nothing."""

import http.client
import json
import os
import re
import sqlite3

import pytest
import redis

from conftest import ROOT, ScriptedModel, free_port, gunicorn_serving, stop, wait_until_serving
from stepped_model import WORDS

JSON = {"Content-Type": "application/json"}


def call(port, method, path, body=None, raw=None, headers=None):
    """(status, headers, JSON body) of one request on a new connection, with no cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body)
    connection.request(method, path, body=data, headers={**(JSON if body is not None else {}), **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, response.headers, json.loads(payload) if payload else None


def stored(database):
    """How many sessions and chat turns the server's database holds."""
    with sqlite3.connect(database) as connection:
        return tuple(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("sessions", "chat_turns"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn serving the shipped model, rate limits on but loose; yields (port, database)."""
    folder = tmp_path_factory.mktemp("api")
    env = {"HXSTATE_SECRET_KEY": "f3a9c1d27be84e6a90d5c4b1e7f2a8d3c6b9e0f1a2d4c7b8",
           "HXSTATE_CHAT_MODEL": str(ROOT / "models" / "hxstate-chat"), "HXSTATE_CHAT_MAX_NEW_TOKENS": "12",
           "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'hxstate.sqlite3'}"}
    with gunicorn_serving({**os.environ, **env}) as port:
        yield port, folder / "hxstate.sqlite3"


def test_a_conversation_starts_continues_and_is_read_back_by_its_key(server):
    port, _ = server
    status, headers, first = call(port, "POST", "/api/chat", {"message": "Hi! How are you?"})
    assert status == 200, first
    key = first["conversation"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key) and isinstance(first["reply"], str)
    assert "Set-Cookie" not in headers  # a program needs no cookie
    status, _, second = call(port, "POST", "/api/chat", {"message": "What do you do for fun?", "conversation": key})
    assert status == 200 and second["conversation"] == key
    _, _, other = call(port, "POST", "/api/chat", {"message": "Another chat"})
    assert other["conversation"] != key

    status, _, read = call(port, "GET", f"/api/chat/{key}")
    assert status == 200
    assert [(turn["role"], turn["text"]) for turn in read["turns"]] == [
        ("user", "Hi! How are you?"), ("bot", first["reply"]),
        ("user", "What do you do for fun?"), ("bot", second["reply"])]
    assert [turn["text"] for turn in call(port, "GET", f"/api/chat/{other['conversation']}")[2]["turns"]] == [
        "Another chat", other["reply"]]


def test_a_score_submitted_by_a_program_is_on_the_board(server):
    port, _ = server
    before = call(port, "GET", "/scores.json")[2]
    status, _, board = call(port, "POST", "/api/scores", {"score": 1e12})
    assert status == 200 and board["top"][0] == 10 ** 12 and board["count"] == before["count"] + 1
    status, _, board = call(port, "POST", "/api/scores", {"score": "-3.5"})
    assert status == 200 and board["count"] == before["count"] + 2
    assert call(port, "GET", "/scores.json")[2] == board


@pytest.mark.parametrize("request_, status, says", [
    (dict(raw="message=hello", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "JSON"),
    (dict(raw='{"message": "hello"}'), 415, "JSON"),  # no Content-Type at all
    (dict(raw="[1, 2]", headers=JSON), 400, "JSON object"),
    (dict(raw='{"message": ', headers=JSON), 400, "JSON object"),
    (dict(raw=json.dumps({"message": "x" * 70_000}), headers=JSON), 413, "too large"),
    (dict(body={"message": "   "}), 422, "Type a message"),
    (dict(body={"message": "\u200b\u200b"}), 422, "invisible"),
    (dict(body={"message": "x" * 1001}), 422, "1000 characters"),
    (dict(body={"message": 42}), 422, "as text"),
    (dict(body={"message": "hello", "conversation": "not-a-key"}), 404, "no conversation"),
    (dict(body={"message": "hello", "conversation": "A" * 43}), 404, "no conversation"),
    (dict(body={"message": "hello"}, headers={"Origin": "http://evil.example"}), 403, "other sites"),
])
def test_a_bad_chat_request_gets_a_json_error_and_stores_nothing(server, request_, status, says):
    port, database = server
    before = stored(database)
    got, headers, body = call(port, "POST", "/api/chat", **request_)
    assert got == status, body
    assert headers["Content-Type"] == "application/json" and says in body["error"]
    assert headers["Content-Security-Policy"]
    assert stored(database) == before


@pytest.mark.parametrize("score, says", [(True, "as a number"), (None, "as a number"), ("abc", "a number"),
                                         ("1e400", "too large"), (1e300, "too large"), ("١٢٣", "a number")])
def test_a_bad_score_gets_a_json_error_and_changes_no_board(server, score, says):
    port, _ = server
    before = call(port, "GET", "/scores.json")[2]
    status, _, body = call(port, "POST", "/api/scores", {"score": score})
    assert status == 422 and says in body["error"]
    assert call(port, "GET", "/scores.json")[2] == before


def test_an_unknown_or_expired_key_reads_nothing(server):
    port, _ = server
    for key in ("A" * 43, "short", "../../scores"):
        status, _, body = call(port, "GET", f"/api/chat/{key}")
        assert status == 404 and "error" in body


def test_a_browser_session_is_not_a_conversation_key(server):
    port, database = server
    with sqlite3.connect(database) as db:  # a browser's stored session, as its chat keeps it
        db.execute("INSERT INTO sessions (session_id, data, expiry) VALUES "
                   "('session:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB', '{\"x\": 1}', '2999-01-01 00:00:00.000000')")
    status, _, body = call(port, "GET", "/api/chat/" + "B" * 43)
    assert status == 404, body


def events(response):
    """(event, data) of each server-sent event of a streamed response, as it arrives."""
    name, data = "message", []
    for line in iter(response.readline, b""):
        line = line.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def test_a_reply_streams_piece_by_piece_as_it_is_written_and_ends_with_done(app_env, server_steps):
    port = free_port()
    server = server_steps.gunicorn({**app_env, "HXSTATE_CHAT_STREAM_PACE": "0"}, HXSTATE_BIND=f"127.0.0.1:{port}")
    try:
        wait_until_serving(server, port)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/api/chat", body=json.dumps({"message": "hello"}),
                           headers={**JSON, "Accept": "text/event-stream"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        stream = events(response)
        pieces = []
        for k in range(len(WORDS)):
            server_steps.release(1)  # one more word written: it must come through before the next
            while "".join(pieces) != " ".join(WORDS[:k + 1]):
                name, data = next(stream)
                assert name == "message", (name, data)
                pieces.append(data)
        name, data = next(stream)
        done = json.loads(data)
        assert name == "done" and done["reply"] == " ".join(WORDS) and done["note"] is None
        connection.close()
        status, _, read = call(port, "GET", f"/api/chat/{done['conversation']}")
        assert status == 200 and read["turns"][-1]["text"] == " ".join(WORDS)
    finally:
        stop(server)


def test_a_busy_model_and_the_rate_limit_answer_json_with_retry_after_and_store_nothing(app_env, tmp_path):
    database = tmp_path / "hxstate.sqlite3"
    with gunicorn_serving(app_env, HXSTATE_CHAT_QUEUE_SIZE="0", HXSTATE_RATELIMIT_ENABLED="true",
                          HXSTATE_CHAT_RATE_LIMIT="2/minute") as port:
        for _ in range(2):  # no room in the queue: every reply is refused at once
            status, headers, body = call(port, "POST", "/api/chat", {"message": "hello"})
            assert status == 503 and "busy" in body["error"] and headers["Retry-After"] == "5"
        status, headers, body = call(port, "POST", "/api/chat", {"message": "hello"})
        assert status == 429 and "faster" in body["error"] and 1 <= int(headers["Retry-After"]) <= 60
        assert stored(database) == (0, 0)


def test_the_chat_rate_limit_counts_per_conversation_and_per_address_for_new_ones(make_app):
    app = make_app(CHAT_MODEL=ScriptedModel(), RATELIMIT_ENABLED=True, CHAT_RATE_LIMIT="2/minute",
                   ADDRESS_RATE_LIMIT="100/minute")
    client = app.test_client()

    def post(**body):
        response = client.post("/api/chat", json={"message": "hello", **body})
        return response.status_code, response.get_json()

    status, started = post()  # counted under the address: it names no conversation yet
    key = started["conversation"]
    assert [post(conversation=key)[0] for _ in range(3)] == [200, 200, 429]
    assert post()[0] == 200  # the address's second new conversation
    status, refused = post()
    assert status == 429 and "try again in" in refused["error"]
    assert post(conversation=key)[0] == 429  # still over its own limit


def test_a_conversation_on_redis_is_kept_like_a_browsers_and_expires_with_its_key(app_env, redis_config):
    env = {**app_env, "HXSTATE_REDIS_URL": redis_config["REDIS_URL"],
           "HXSTATE_REDIS_KEY_PREFIX": redis_config["REDIS_KEY_PREFIX"]}
    with gunicorn_serving(env) as port:
        status, _, first = call(port, "POST", "/api/chat", {"message": "hello"})
        assert status == 200
        key = first["conversation"]
        status, _, second = call(port, "POST", "/api/chat", {"message": "again", "conversation": key})
        assert status == 200
        assert [turn["text"] for turn in call(port, "GET", f"/api/chat/{key}")[2]["turns"]] == [
            "hello", first["reply"], "again", second["reply"]]
        with redis.Redis.from_url(redis_config["REDIS_URL"]) as client:
            prefix = redis_config["REDIS_KEY_PREFIX"]
            kept = [prefix + "session:" + key, prefix + "chat:" + key]
            assert all(0 < client.ttl(each) for each in kept)  # both expire, as a browser's session and chat do
            client.delete(*kept)  # as if its lifetime had passed
        assert call(port, "GET", f"/api/chat/{key}")[0] == 404
        assert call(port, "POST", "/api/chat", {"message": "still there?", "conversation": key})[0] == 404
