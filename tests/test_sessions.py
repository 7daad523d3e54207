"""Sessions in the embedded database: written when they change, pushed forward now and then while in
use, and not written by a request that changes nothing."""

import sqlalchemy as sa

from conftest import HTMX, ScriptedModel, conversation, new_client, sessions_table, set_expiry, turn_id
from html_tree import parse, text_of
from webapp.database import utcnow


def stored(app):
    """Every stored session: its data and expiry, by session id."""
    with app.app_context():
        engine, table = sessions_table(app)
        with engine.connect() as connection:
            return {row.session_id: (row.data, row.expiry) for row in connection.execute(sa.select(table))}



def test_a_request_that_changes_nothing_writes_nothing(app):
    client = new_client(app)
    client.get("/chat")  # the chat keys its history by the session: the first visit marks it kept
    before = stored(app)
    assert len(before) == 1
    for response in (client.get("/scores"), client.get("/scores", headers=HTMX), client.get("/chat")):
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    assert stored(app) == before


def test_a_change_is_written_at_once(app):
    client = new_client(app)
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
    assert len(stored(app)) == 2 and old_sid in stored(app)  # a new session; the cleanup takes the old


def test_a_request_needs_one_database_connection_at_a_time(make_app):
    # A request whose view left a transaction open (an expired ORM object reloaded, say) still
    # saves its session: a pool of one connection is enough, so a full pool cannot deadlock.
    app = make_app(CHAT_MODEL=ScriptedModel("hi"), SQLALCHEMY_ENGINE_OPTIONS={
        "pool_size": 1, "max_overflow": 0, "pool_timeout": 2})
    client = new_client(app)
    sent = client.post("/chat", data={"message": "hello"}, headers=HTMX)
    assert sent.status_code == 200 and "Set-Cookie" in sent.headers
    turn = turn_id(sent.get_data(as_text=True))
    assert client.post(f"/chat/replies/{turn}", headers=HTMX).status_code == 200
    assert conversation(client.get("/chat").get_data(as_text=True)) == [("You", "hello"), ("Bot", "hi")]
