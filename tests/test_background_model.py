"""The chat model's handle: pages served before the model is loaded, replies once it is."""

import logging
import subprocess
import sys
import textwrap

from conftest import HTMX, log, new_client, send, turn_id
from html_tree import text_of
from webapp import ROOT
from webapp.background_model import BackgroundModel
from webapp.chat_model import ChatModel


def test_pages_are_served_before_torch_is_even_imported(tmp_path):
    check = textwrap.dedent(f"""
        import sys
        from webapp import create_app

        app = create_app({{"TESTING": True, "SECRET_KEY": "test",
                          "SQLALCHEMY_DATABASE_URI": "sqlite:///{tmp_path / 'db.sqlite3'}"}})
        client = app.test_client()
        assert client.get("/").status_code == 200
        chat = client.get("/chat")
        assert chat.status_code == 200 and b"hxstate-chat, 10 M parameters" in chat.data
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print(type(app.extensions["chat_model"].get()).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ChatModel"]


def test_the_first_reply_loads_the_model_and_waits_for_it(make_app, tiny_model_dir):
    app = make_app(CHAT_MODEL=str(tiny_model_dir), CHAT_MAX_NEW_TOKENS=5)
    handle = app.extensions["chat_model"]
    assert isinstance(handle, BackgroundModel) and not handle._started
    client = new_client(app)
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    assert client.post(f"/chat/replies/{turn}", headers=HTMX).status_code == 200
    assert isinstance(handle.get(), ChatModel) and handle.get().max_new_tokens == 5
    assert [who for who, _ in log(client)] == ["You", "Bot"]


def test_a_model_that_cannot_load_fails_each_reply_and_keeps_the_message(make_app, tmp_path, caplog):
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    app = make_app(CHAT_MODEL=str(missing))
    client = new_client(app)
    assert "Replies come from no-such-model." in text_of(client.get("/chat").get_data(as_text=True))
    turn = turn_id(send(client, "are you there?").get_data(as_text=True))
    with caplog.at_level(logging.ERROR):
        failed = client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert failed.status_code == 500 and "could not answer" in failed.get_data(as_text=True)
    assert "could not load the chat model" in caplog.text and str(missing) in caplog.text
    assert log(client) == [("You", "are you there?")]


def test_a_served_model_is_kept_out_of_garbage_collections(tmp_path, tiny_model_dir):
    # In a process of its own: what it freezes stays frozen for the process's life.
    check = textwrap.dedent(f"""
        import gc, runpy
        from webapp import create_app
        from webapp.background_model import start_loading

        config = runpy.run_path("gunicorn.conf.py")
        app = create_app({{"TESTING": True, "SECRET_KEY": "test", "CHAT_MODEL": "{tiny_model_dir}",
                          "SQLALCHEMY_DATABASE_URI": "sqlite:///{tmp_path / 'db.sqlite3'}"}})
        assert gc.get_freeze_count() == 0
        start_loading(app, 1, then=config["keep_out_of_collections"])  # as a lone gunicorn worker
        app.extensions["chat_model"].get()
        print(gc.get_freeze_count())
    """)
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100_000  # torch's and transformers' objects among them
