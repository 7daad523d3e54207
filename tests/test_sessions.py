"""Sessions: stored only once they hold state, read only by the requests that use them, written when
they change and pushed forward now and then while in use, in the embedded database and in Redis."""

import pickle
import time
from datetime import timedelta

import flask_wtf.csrf
import itsdangerous
import pytest
import redis
import sqlalchemy as sa

from conftest import (HTMX, ScriptedModel, conversation, csrf_token, new_client, sessions_table, set_expiry,
                      turn_id)
from html_tree import parse, text_of
from webapp import sessions
from webapp.database import Base, utcnow


def stored(app):
    """Every stored session: its data and expiry, by session id."""
    with app.app_context():
        engine, table = sessions_table(app)
        with engine.connect() as connection:
            return {row.session_id: (row.data, row.expiry) for row in connection.execute(sa.select(table))}



def test_a_request_that_changes_nothing_writes_nothing(app):
    client = new_client(app)
    client.post("/scores", data={"score": "7"}, headers=HTMX)  # state: the session is kept
    before = stored(app)
    assert len(before) == 1
    for response in (client.get("/scores"), client.get("/scores", headers=HTMX), client.get("/chat")):
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    assert stored(app) == before


def test_a_change_is_written_at_once(app):
    client = new_client(app)
    client.post("/scores", data={"score": "6"}, headers=HTMX)
    [(data, expiry)] = stored(app).values()
    response = client.post("/scores", data={"score": "7"}, headers=HTMX)
    assert response.status_code == 200 and "Set-Cookie" in response.headers
    [(new_data, new_expiry)] = stored(app).values()
    assert new_data != data and new_expiry >= expiry
    assert parse(client.get("/scores").get_data(as_text=True)).find(id="last-score").text == "7"


def test_setting_the_same_value_again_writes_nothing(app):
    client = new_client(app)
    client.post("/scores", data={"score": "7"}, headers=HTMX)
    before = stored(app)
    response = client.post("/scores", data={"score": "7"}, headers=HTMX)
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    assert stored(app) == before
    assert parse(client.get("/scores").get_data(as_text=True)).find(id="score-count").text == "2"


def test_a_session_in_use_is_pushed_forward_once_a_little_of_its_lifetime_has_passed(app):
    client = new_client(app)
    client.post("/scores", data={"score": "7"}, headers=HTMX)
    lifetime, refresh_after = app.permanent_session_lifetime, app.config["SESSION_REFRESH_AFTER"]
    recent = utcnow() + lifetime * (1 - refresh_after / 2)
    set_expiry(app, recent)
    assert "Set-Cookie" not in client.get("/scores").headers
    assert [expiry for _, expiry in stored(app).values()] == [recent]

    older = utcnow() + lifetime * (1 - 2 * refresh_after)
    set_expiry(app, older)
    response = client.get("/scores")
    assert "Expires=" in response.headers["Set-Cookie"]
    [(_, expiry)] = stored(app).values()
    assert expiry > utcnow() + lifetime * (1 - refresh_after / 2)


def test_an_expired_session_is_not_used(app):
    client = new_client(app)
    client.post("/scores", data={"score": "7"}, headers=HTMX)
    [old_sid] = stored(app)
    set_expiry(app, utcnow())
    page = client.get("/scores").get_data(as_text=True)
    assert "Your last score" not in text_of(page)
    assert list(stored(app)) == [old_sid]  # no new session until it holds state; the cleanup takes the old


def test_a_request_needs_one_database_connection_at_a_time(make_app):
    # Every store ends its transaction before it returns (an expired ORM object read afterwards
    # would open another), so a request holds one connection at a time, even while it saves its
    # session: a pool of one connection is enough, and a full pool cannot deadlock.
    app = make_app(CHAT_MODEL=ScriptedModel("hi"), SQLALCHEMY_ENGINE_OPTIONS={
        "pool_size": 1, "max_overflow": 0, "pool_timeout": 2})
    client = new_client(app)
    sent = client.post("/chat", data={"message": "hello"}, headers=HTMX)
    assert sent.status_code == 200 and "Set-Cookie" in sent.headers
    turn = turn_id(sent.get_data(as_text=True))
    assert client.post(f"/chat/replies/{turn}", headers=HTMX).status_code == 200
    assert conversation(client.get("/chat").get_data(as_text=True)) == [("You", "hello"), ("Bot", "hi")]


@pytest.fixture(params=["embedded", "redis"])
def backend_app(request, make_app):
    """An app on one backend (either, in turn), and a function that counts what it has stored."""
    if request.param == "embedded":
        app = make_app(SESSION_CLEANUP_EVERY=0)

        def count():
            with app.app_context():
                engine = app.extensions["sqlalchemy"].engine
                with engine.connect() as connection:
                    return sum(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                               for table in Base.metadata.sorted_tables)
        return app, count
    config = request.getfixturevalue("redis_config")
    app = make_app(**config)

    def count():
        with redis.Redis.from_url(config["REDIS_URL"]) as client:
            return len(list(client.scan_iter(match=config["REDIS_KEY_PREFIX"] + "*")))
    return app, count


def test_cookieless_visitors_store_nothing_yet_get_forms_that_post(backend_app):
    app, count = backend_app
    before = count()
    for k in range(1000):  # a crawler: no cookies kept between requests
        response = app.test_client(use_cookies=False).get(("/", "/scores", "/chat", "/no-such-page")[k % 4])
        assert response.status_code == (404 if k % 4 == 3 else 200)
        assert not any(c.startswith("session=") for c in response.headers.getlist("Set-Cookie"))
    assert count() == before
    # Its forms carry a CSRF proof that works: the first post with state keeps the session.
    client = new_client(app)
    assert count() == before
    assert client.post("/scores", data={"score": "5"}, headers=HTMX).status_code == 200
    assert client.get_cookie("session") is not None and client.get_cookie("csrf") is None
    assert parse(client.get("/scores").get_data(as_text=True)).find(id="last-score").text == "5"


class UnreadableSessions:
    """A session store that fails the test if anything reads or writes it."""

    def load(self, sid):
        raise AssertionError("the session store was read")

    def save(self, sid, values, lifetime):
        raise AssertionError("the session store was written")


def test_polls_and_the_json_board_never_touch_the_session_store(backend_app):
    app, _ = backend_app
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    etag = client.get("/scores", headers=HTMX).headers["ETag"]
    stored_sessions, app.session_interface.store = app.session_interface.store, UnreadableSessions()
    try:
        poll = client.get("/scores", headers={**HTMX, "If-None-Match": etag})
        assert poll.status_code == 304 and "Set-Cookie" not in poll.headers
        board = client.get("/scores.json")
        assert board.status_code == 200 and board.json == {"top": [5], "count": 1}
        assert "Set-Cookie" not in board.headers
    finally:
        app.session_interface.store = stored_sessions


def test_redis_sessions_are_written_only_when_they_change_or_are_due(make_app, redis_config):
    app = make_app(**redis_config)
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    key = redis_config["REDIS_KEY_PREFIX"] + "session:" + client.get_cookie("session").value
    lifetime = app.permanent_session_lifetime
    recent = lifetime * (1 - app.config["SESSION_REFRESH_AFTER"] / 2)  # not yet due to be pushed
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as store:
        store.pexpire(key, recent)
        data = store.get(key)
        for response in (client.get("/scores"), client.get("/scores", headers=HTMX), client.get("/chat")):
            assert response.status_code == 200 and "Set-Cookie" not in response.headers
        assert store.get(key) == data and store.pttl(key) <= recent.total_seconds() * 1000
        assert client.post("/scores", data={"score": "6"}, headers=HTMX).headers["Set-Cookie"]
        assert store.get(key) != data
        assert store.pttl(key) > (lifetime - timedelta(minutes=1)).total_seconds() * 1000


def test_a_sessions_csrf_token_is_signed_once_and_still_checked(app, monkeypatch):
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    first = csrf_token(client.get("/scores").get_data(as_text=True))
    # An hour later Flask-WTF would sign the same token anew, with the new time.
    later = time.time() + 3600
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(later))
    assert csrf_token(client.get("/scores").get_data(as_text=True)) == first
    sessions._signed_csrf.cache_clear()  # as in another worker, which signs it an hour later
    assert csrf_token(client.get("/scores").get_data(as_text=True)) == first
    assert client.post("/scores", data={"score": "6"}, headers={**HTMX, "X-CSRFToken": first}).status_code == 200
    forged = first[:-2] + ("AA" if not first.endswith("AA") else "BB")
    assert client.post("/scores", data={"score": "7"}, headers={**HTMX, "X-CSRFToken": forged}).status_code == 400
    stranger = new_client(app)  # another browser's token is its own
    assert csrf_token(stranger.get("/scores").get_data(as_text=True)) != first


def test_the_issued_csrf_token_passes_unchecked_and_any_other_is_checked_by_flask_wtf(app, monkeypatch):
    checked = []
    validate = flask_wtf.csrf.validate_csrf
    monkeypatch.setattr(flask_wtf.csrf, "validate_csrf", lambda token: checked.append(token) or validate(token))
    client = new_client(app)  # it sends the token its page gave it
    issued = client.environ_base["HTTP_X_CSRFTOKEN"]
    assert client.post("/scores", data={"score": "5"}, headers=HTMX).status_code == 200
    assert checked == []
    # The same session's token signed at another time is as good, once Flask-WTF has checked it.
    serializer = itsdangerous.URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token")
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(time.time()) + 60)
    resigned = serializer.dumps(serializer.loads(issued))
    assert resigned != issued
    assert client.post("/scores", data={"score": "6"}, headers={**HTMX, "X-CSRFToken": resigned}).status_code == 200
    assert checked == [resigned]
    other = new_client(app).environ_base["HTTP_X_CSRFTOKEN"]  # issued, but to another browser
    assert client.post("/scores", data={"score": "7"}, headers={**HTMX, "X-CSRFToken": other}).status_code == 400
    # Over HTTPS, Flask-WTF also wants a referrer of this site, with the issued token too.
    secure = {"base_url": "https://localhost", "headers": HTMX, "data": {"score": "8"}}
    assert client.post("/scores", **secure).status_code == 400
    assert client.post("/scores", **{**secure, "headers": {**HTMX, "Referer": "https://localhost/scores"}}).status_code == 200
    assert client.get("/scores.json").get_json()["count"] == 3


def test_a_cleanup_during_a_new_browsers_first_message_keeps_the_message(make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("hi"), SESSION_CLEANUP_EVERY=0)
    history = app.extensions["stores"].history
    add_user_turn = history.add_user_turn

    def add_then_clean_up(sid, text, conversation=0):  # another request's cleanup, right after the message is stored
        turn = add_user_turn(sid, text, conversation)
        history.delete_expired()
        return turn

    history.add_user_turn = add_then_clean_up
    client = new_client(app)
    sent = client.post("/chat", data={"message": "hello"}, headers=HTMX)
    assert sent.status_code == 200
    assert client.post(f"/chat/replies/{turn_id(sent.get_data(as_text=True))}", headers=HTMX).status_code == 200
    assert conversation(client.get("/chat").get_data(as_text=True)) == [("You", "hello"), ("Bot", "hi")]


class Touch:
    """Unpickled, it creates a file: proof that a stored session was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_stored_session_that_is_not_json_is_never_unpickled(make_app, request, tmp_path, backend):
    # Whoever can write to a shared store must not run code in the app through it.
    config = request.getfixturevalue("redis_config") if backend == "redis" else {}
    app = make_app(SESSION_CLEANUP_EVERY=0, **config)
    client = new_client(app)
    client.post("/scores", data={"score": "5"}, headers=HTMX)
    sid = client.get_cookie("session").value
    proof = tmp_path / "unpickled"
    payload = pickle.dumps({"scores.last": Touch(proof)})
    if backend == "redis":
        with redis.Redis.from_url(config["REDIS_URL"]) as store:
            store.set(config["REDIS_KEY_PREFIX"] + "session:" + sid, payload, ex=3600)
    else:
        with app.app_context():
            engine, table = sessions_table(app)
            with engine.begin() as connection:
                connection.execute(table.update().values(data=payload))
    page = client.get("/scores")
    assert page.status_code == 200 and "Your last score" not in text_of(page.get_data(as_text=True))
    assert not proof.exists()
