"""The store contract: every store behaves the same on the embedded backend and on Redis."""

import random
import sqlite3
import threading
import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from werkzeug.exceptions import ServiceUnavailable

from conftest import ScriptedModel, chat, in_threads, log, new_client, set_expiry
from webapp.database import Database, FifoLock, utcnow
from webapp.score_board import Board, BoardScore


@pytest.fixture(params=["embedded", "redis"])
def make_stores(request, make_app):
    """Build an app on one backend (either, in turn) and return it; later calls share its stores."""
    def make(**config):
        settings = {"SESSION_CLEANUP_EVERY": 0, "CHAT_MODEL": ScriptedModel(), "CHAT_LOCK_WAIT": 0.2,
                    **config}
        if request.param == "redis":
            settings.update(request.getfixturevalue("redis_config"))
        return make_app(**settings)
    return make


def stores(app):
    return app.extensions["stores"]


def within(app, action, *args):
    """Run `action(*args)` inside an app context, as a request would."""
    with app.app_context():
        return action(*args)


def user_texts(app, sid):
    history = stores(app).history
    return within(app, lambda: [exchange.user.text for exchange in history.exchanges(sid)])


# Score board

def test_an_empty_board_shows_nothing_and_counts_zero(make_stores):
    app = make_stores()
    board = within(app, stores(app).board.snapshot)
    assert board.top == () and board.count == 0


def test_equal_scores_are_all_kept_and_the_submit_returns_the_board_it_left(make_stores):
    app = make_stores()
    for value in (5.0, 5.0, 1.0):
        after = within(app, stores(app).board.submit, value)
    assert after.top == (5.0, 5.0, 1.0) and after.count == 3
    assert within(app, stores(app).board.snapshot) == after
    # On a full board, a score equal to the lowest or below it is counted only; a higher one is kept.
    assert [within(app, stores(app).board.submit, value) for value in (1.0, 0.5, 2.0)] == [
        Board((5.0, 5.0, 1.0), 4), Board((5.0, 5.0, 1.0), 5), Board((5.0, 5.0, 2.0), 6)]
    again = make_stores()  # a restart: what was stored is what the process showed
    assert within(again, stores(again).board.snapshot) == Board((5.0, 5.0, 2.0), 6)


def test_concurrent_submits_give_the_exact_board_and_storage_stays_bounded(make_stores):
    app = make_stores()
    board = stores(app).board
    rng = random.Random(3)
    # Whole numbers in a narrow range, so that equal scores meet at the bottom of the board too.
    batches = [[float(rng.randint(-1000, 1000)) for _ in range(100)] for _ in range(8)]

    def submit(batch):
        with app.app_context():
            for value in batch:
                board.submit(value)

    in_threads(submit, [(batch,) for batch in batches])
    every = [value for batch in batches for value in batch]
    snapshot = within(app, board.snapshot)
    assert snapshot.top == tuple(sorted(every, reverse=True)[:3]) and snapshot.count == 800
    assert stored_scores(app) <= 3
    again = make_stores()  # a restart reads the board that was stored, not the one the process kept
    assert within(again, stores(again).board.snapshot) == snapshot


def test_a_board_another_writer_changed_meanwhile_is_read_back_not_assumed(make_stores):
    app = make_stores()
    for value in (5.0, 4.0, 3.0):
        within(app, stores(app).board.submit, value)
    other = make_stores()  # the same store, as another process would have it
    within(other, stores(other).board.submit, 10.0)
    # Below the lowest score this process knows, and a count it did not expect.
    assert within(app, stores(app).board.submit, 1.0) == Board((10.0, 5.0, 4.0), 5)
    assert within(app, stores(app).board.submit, 4.5) == Board((10.0, 5.0, 4.5), 6)
    again = make_stores()
    assert within(again, stores(again).board.snapshot) == Board((10.0, 5.0, 4.5), 6)


def stored_scores(app):
    """How many scores the backend keeps (not how many were submitted)."""
    if app.config["REDIS_URL"]:
        with redis.Redis.from_url(app.config["REDIS_URL"]) as client:
            return client.zcard(app.config["REDIS_KEY_PREFIX"] + "scores:top")
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        with engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(BoardScore)).scalar()


def test_the_board_and_the_values_outlive_the_app(make_stores):
    first = make_stores()
    within(first, stores(first).board.submit, 42.0)
    within(first, stores(first).values.update, "visits", 0, lambda n: n + 1)
    again = make_stores()  # a new process on the same stores: a restart
    assert within(again, stores(again).board.snapshot).top == (42.0,)
    assert within(again, stores(again).values.get, "visits", 0) == 1


# Global values

def test_a_value_starts_from_its_default_and_keeps_json(make_stores):
    app = make_stores()
    values = stores(app).values
    assert within(app, values.get, "words", {"total": 0}) == {"total": 0}
    assert within(app, values.update, "words", {"total": 0}, lambda v: {**v, "list": [1, "a"]}) == {
        "total": 0, "list": [1, "a"]}
    assert within(app, values.get, "words", None) == {"total": 0, "list": [1, "a"]}


def test_concurrent_updates_lose_nothing(make_stores):
    app = make_stores()
    values = stores(app).values

    def add(times):
        with app.app_context():
            for _ in range(times):
                values.update("counter", 0, lambda n: n + 1)

    in_threads(add, [(50,)] * 8)
    assert within(app, values.get, "counter", 0) == 400


# Chat history

def test_turns_keep_their_order_and_replies_pair_with_their_messages(make_stores):
    app = make_stores()
    history = stores(app).history

    def talk():
        first = history.add_user_turn("s1", "one")
        second = history.add_user_turn("s1", "two")
        history.add_reply("s1", second.id, "reply to two")
        history.add_reply("s1", first.id, "reply to one", "stopped")
        return history.exchanges("s1")

    exchanges = within(app, talk)
    assert [(e.user.text, e.reply.text, e.reply.note) for e in exchanges] == [
        ("one", "reply to one", "stopped"), ("two", "reply to two", None)]
    assert exchanges[0].user.id < exchanges[1].user.id


def test_the_cap_keeps_the_newest_exchanges_with_or_without_their_replies(make_stores):
    app = make_stores(CHAT_HISTORY_MAX_TURNS=6)
    history = stores(app).history

    def pending_then_answered():
        for k in range(5):
            history.add_user_turn("pending", f"m{k}")  # no reply yet to any of them
        for k in range(5):
            turn = history.add_user_turn("answered", f"m{k}")
            history.add_reply("answered", turn.id, f"r{k}")

    within(app, pending_then_answered)
    assert user_texts(app, "pending") == ["m2", "m3", "m4"]
    assert user_texts(app, "answered") == ["m2", "m3", "m4"]
    replies = within(app, lambda: [e.reply.text for e in history.exchanges("answered")])
    assert replies == ["r2", "r3", "r4"]


def test_concurrent_appends_keep_every_message_with_its_own_id(make_stores):
    app = make_stores(CHAT_HISTORY_MAX_TURNS=200)
    history = stores(app).history
    ids = []

    def append(writer):
        with app.app_context():
            for k in range(10):
                ids.append(history.add_user_turn("shared", f"{writer}-{k}").id)

    in_threads(append, [(writer,) for writer in range(6)])
    texts = user_texts(app, "shared")
    assert sorted(texts) == sorted(f"{w}-{k}" for w in range(6) for k in range(10))
    assert len(set(ids)) == 60
    for writer in range(6):  # each writer's messages in the order it wrote them
        assert [t for t in texts if t.startswith(f"{writer}-")] == [f"{writer}-{k}" for k in range(10)]


def test_clear_forgets_one_session_only(make_stores):
    app = make_stores()
    history = stores(app).history

    def talk_then_clear():
        history.add_user_turn("gone", "bye")
        history.add_user_turn("kept", "hello")
        history.clear("gone")

    within(app, talk_then_clear)
    assert user_texts(app, "gone") == [] and user_texts(app, "kept") == ["hello"]


def test_undo_regenerate_and_feedback_change_only_their_turns(make_stores):
    app = make_stores()
    history = stores(app).history

    def edit():
        first = history.add_user_turn("s", "first")
        history.add_reply("s", first.id, "a")
        last = history.add_user_turn("s", "last")
        history.add_reply("s", last.id, "b")
        history.set_feedback("s", first.id, "like")
        history.remove_reply("s", last.id)
        assert [e.reply.text if e.reply else None for e in history.exchanges("s")] == ["a", None]
        assert history.remove_last_exchange("s") == "last"
        history.add_reply("s", last.id, "to a message that is gone")
        return history.exchanges("s")

    [only] = within(app, edit)
    assert (only.user.text, only.reply.text, only.reply.feedback) == ("first", "a", "like")
    assert within(app, history.remove_last_exchange, "nobody") is None


def numbers(app, sid):
    """The numbers of a session's conversations, newest first."""
    return [each.number for each in within(app, stores(app).history.conversations, sid)]


def test_a_session_keeps_several_conversations_each_listed_by_its_first_message_newest_first(make_stores):
    app = make_stores()
    history = stores(app).history

    def talk():
        first = history.add_user_turn("s", "about cats")
        history.add_user_turn("s", "about dogs", conversation=7)
        history.add_reply("s", first.id, "meow")  # the first conversation is now the last one used
        history.add_user_turn("other", "not mine", conversation=7)
        return history.conversations("s")

    listed = within(app, talk)
    assert [(each.number, each.title) for each in listed] == [(0, "about cats"), (7, "about dogs")]
    assert listed[0].used >= listed[1].used
    texts = within(app, lambda: [[e.user.text for e in history.exchanges("s", n)] for n in (0, 7)])
    assert texts == [["about cats"], ["about dogs"]]
    within(app, history.clear, "s", 7)
    assert numbers(app, "s") == [0] and numbers(app, "other") == [7]
    assert within(app, history.remove_last_exchange, "s", 7) is None


def test_past_the_cap_the_least_recently_used_conversations_go(make_stores):
    app = make_stores(CHAT_MAX_CONVERSATIONS=3)
    history = stores(app).history

    def talk():
        for number in (1, 2, 3):
            history.add_user_turn("s", f"chat {number}", conversation=number)
        history.add_user_turn("s", "chat 1 again", conversation=1)  # chat 2 is now the least recent
        history.add_user_turn("s", "chat 4", conversation=4)

    within(app, talk)
    assert numbers(app, "s") == [4, 1, 3]
    assert within(app, history.exchanges, "s", 2) == []


def test_every_conversation_of_a_session_ends_with_it(make_stores):
    app = make_stores()
    client = new_client(app)
    chat(client, "in the first")
    assert client.post("/chat/new").status_code == 303
    chat(client, "in the second")
    sid = client.get_cookie("session").value
    assert len(numbers(app, sid)) == 2
    expire_sessions(app)
    assert numbers(app, sid) == [] and user_texts(app, sid) == []


def test_redis_pushes_the_expiry_of_every_conversation_of_a_session_forward_together(make_app, redis_config):
    app = make_app(**redis_config, CHAT_MODEL=ScriptedModel())
    history = stores(app).history
    prefix = redis_config["REDIS_KEY_PREFIX"]
    within(app, history.add_user_turn, "s", "long ago")
    within(app, history.add_user_turn, "s", "today", 5)
    with redis.Redis.from_url(redis_config["REDIS_URL"]) as client:
        client.expire(prefix + "chat:s", 10)  # as if its last use were long ago
        within(app, history.add_user_turn, "s", "today again", 5)
        lifetime = app.permanent_session_lifetime.total_seconds()
        assert [client.ttl(key) > lifetime - 60 for key in (prefix + "chat:s", prefix + "chat:s:5", prefix + "chats:s")] == [True] * 3


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_conversation_kept_before_there_could_be_several_is_the_first_one(backend, make_app, request, tmp_path):
    if backend == "redis":  # a history list, with no list of conversations yet
        redis_config = request.getfixturevalue("redis_config")
        app = make_app(**redis_config, CHAT_MODEL=ScriptedModel())
        with redis.Redis.from_url(redis_config["REDIS_URL"]) as client:
            client.rpush(redis_config["REDIS_KEY_PREFIX"] + "chat:old", '{"id": 1, "role": "user", "text": "from before"}')
    else:  # embedded: a database whose chat_turns table has no conversation column
        import sqlite3
        with sqlite3.connect(tmp_path / "hxstate.sqlite3") as db:
            db.execute("CREATE TABLE chat_turns (id INTEGER PRIMARY KEY, sid VARCHAR(255) NOT NULL, role VARCHAR(8) NOT NULL, "
                       "text TEXT NOT NULL, reply_to INTEGER, note VARCHAR(40), feedback VARCHAR(8), created DATETIME NOT NULL)")
            db.execute("INSERT INTO chat_turns (sid, role, text, created) VALUES ('old', 'user', 'from before', '2026-01-01 00:00:00.000000')")
        app = make_app(CHAT_MODEL=ScriptedModel())
    history = stores(app).history
    assert [(each.number, each.title) for each in within(app, history.conversations, "old")] == [(0, "from before")]
    assert within(app, lambda: [e.user.text for e in history.exchanges("old")]) == ["from before"]


def expire_sessions(app):
    """Let the lifetime of every stored session pass, as each backend lets it."""
    if app.config["REDIS_URL"]:
        with redis.Redis.from_url(app.config["REDIS_URL"]) as client:
            keys = list(client.scan_iter(match=app.config["REDIS_KEY_PREFIX"] + "*"))
            for key in keys:
                client.pexpire(key, 1)
            while client.exists(*keys):  # Redis ends each key a millisecond from now
                pass
    else:
        set_expiry(app, utcnow() - timedelta(minutes=1))
        assert app.test_cli_runner().invoke(args=["cleanup-sessions"]).exit_code == 0


def test_a_history_ends_with_its_session(make_stores):
    app = make_stores()
    client = new_client(app)
    chat(client, "soon forgotten")
    sid = client.get_cookie("session").value
    assert user_texts(app, sid) == ["soon forgotten"]
    expire_sessions(app)
    assert user_texts(app, sid) == []
    assert log(client) == []


# Reply locks

def test_a_held_lock_keeps_others_out_until_another_thread_releases_it(make_stores):
    app = make_stores()
    locks = stores(app).locks
    release = within(app, locks.acquire, "s")
    with pytest.raises(ServiceUnavailable):
        within(app, locks.acquire, "s")  # waits CHAT_LOCK_WAIT, then gives up
    within(app, locks.acquire, "other")()  # other sessions are not held up
    releaser = threading.Thread(target=within, args=(app, release))
    releaser.start()
    releaser.join()
    with app.app_context(), locks.hold("s"):
        pass


def test_the_embedded_write_lock_lets_writers_in_in_the_order_they_came():
    lock, entered = FifoLock(), []

    def write(k):
        with lock:
            entered.append(k)

    with lock:
        threads = []
        for k in range(8):
            threads.append(threading.Thread(target=write, args=(k,)))
            threads[-1].start()
            deadline = time.monotonic() + 30
            while len(lock._waiting) <= k:  # this writer is queued before the next one comes
                assert time.monotonic() < deadline, "a writer never queued"
                time.sleep(0.001)
    for thread in threads:
        thread.join()
    assert entered == list(range(8))
    with lock:  # free again, and taken at once
        pass


def test_each_thread_keeps_its_embedded_connection_until_a_statement_fails(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", pool_size=1, max_overflow=0)
    db = Database(engine)

    def connection():
        with db.read() as kept:
            return kept

    first = connection()
    assert connection() is first and engine.pool.checkedout() == 0  # kept by the thread, not the pool
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(connection()))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first
    with pytest.raises(sqlite3.OperationalError), db.write() as failing:
        failing.execute("CREATE TABLE t (x)")
        failing.execute("SELECT nothing FROM nowhere")
    assert connection() is not first  # a connection that failed is closed, and a new one opened
    with db.write() as writing:  # the failed transaction was rolled back: its table is not there
        writing.execute("CREATE TABLE t (x)")
    fresh = Database(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", poolclass=NullPool))
    with fresh.read() as one, fresh.read() as two:  # NullPool: every use opens its own
        assert one is not two
