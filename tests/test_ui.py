"""The UI judged by checkers nobody here wrote: the Nu HTML Checker on every page and fragment."""

import json
import re
import shutil
import subprocess
from urllib.parse import unquote, urlsplit

import pytest

from conftest import HTMX, ROOT, ScriptedModel, new_client
from webapp.chat_model import ModelError

CHECKERS = ROOT / "tests" / "js" / "node_modules"
VNU = CHECKERS / "vnu-jar" / "build" / "dist" / "vnu.jar"
FRAGMENT_PAGE = ("<!doctype html><html lang=en><head><meta charset=utf-8><title>x</title></head>"
                 "<body>{}</body></html>")


def checker(path):
    """A checker file from tests/js; missing, it fails the test, never skips it."""
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: scripts/test installs the checkers "
                    f"pinned in tests/js/package.json (npm ci); the UI checks are never skipped.")
    return path


def served_documents(app):
    """Every full page and every fragment (in a minimal page) the app serves, as (name, html)."""
    client = new_client(app)
    documents = []

    def full(name, response, status=200):
        assert response.status_code == status, name
        documents.append((name, response.get_data(as_text=True)))

    def fragment(name, response, status=200):
        assert response.status_code == status, name
        html = response.get_data(as_text=True)
        assert "<html" not in html, name
        documents.append((f"{name} (fragment)", FRAGMENT_PAGE.format(html)))

    full("home", client.get("/"))
    full("scores, empty", client.get("/scores"))
    full("chat, empty", client.get("/chat"))
    full("words, empty", client.get("/words"))
    full("404 page", client.get("/no-such-page"), 404)
    full("CSRF refusal page", app.test_client().post("/scores", data={"score": "1"}), 400)

    fragment("score board, empty", client.get("/scores", headers=HTMX))
    for score in ("1e15", "-1e15", "0.5"):
        fragment(f"score {score} submitted", client.post("/scores", data={"score": score}, headers=HTMX))
    fragment("score board", client.get("/scores", headers=HTMX))
    fragment("score refused", client.post("/scores", data={"score": "lots"}, headers=HTMX), 422)
    full("scores, refused", client.post("/scores", data={"score": "lots"}), 422)
    full("scores, with a board", client.get("/scores"))

    fragment("chat log, empty", client.get("/chat", headers=HTMX))
    sent = client.post("/chat", data={"message": "hello <b>there</b>"}, headers=HTMX)
    fragment("message sent", sent)
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    fragment("reply", client.post(f"/chat/replies/{turn}", headers=HTMX))
    sent = client.post("/chat", data={"message": "and again"}, headers=HTMX)
    turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
    fragment("reply failed", client.post(f"/chat/replies/{turn}", headers=HTMX), 500)
    fragment("chat log", client.get("/chat", headers=HTMX))
    full("chat, with a failed reply", client.get("/chat"))
    fragment("message refused", client.post("/chat", data={"message": " "}, headers=HTMX), 422)
    full("chat, refused", client.post("/chat", data={"message": " "}), 422)
    full("chat, reply failed without JavaScript", client.post(f"/chat/replies/{turn}"), 500)
    fragment("chat cleared", client.post("/chat/clear", headers=HTMX))

    fragment("word counter", client.get("/words", headers=HTMX))
    fragment("words counted", client.post("/words", data={"text": "one two"}, headers=HTMX))
    fragment("words refused", client.post("/words", data={"text": " "}, headers=HTMX), 422)
    full("words, refused", client.post("/words", data={"text": " "}), 422)
    full("words, counted", client.get("/words"))

    fragment("404", client.get("/no-such-page", headers=HTMX), 404)
    fragment("CSRF refusal", app.test_client().post("/scores", data={"score": "1"}, headers=HTMX), 400)
    return documents


def test_every_page_and_fragment_is_valid_html(make_app, tmp_path):
    vnu = checker(VNU)
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is not installed (Debian: default-jre-headless; scripts/test installs it): "
                    "the Nu HTML Checker needs it, and the UI checks are never skipped.")
    app = make_app(CHAT_MODEL=ScriptedModel("hi <i>you</i>", ModelError("down"), ModelError("down")))
    names = {}
    for number, (name, html) in enumerate(served_documents(app)):
        path = tmp_path / f"document-{number}.html"
        path.write_text(html)
        names[str(path)] = name
    # One Java process for every document: the checker takes seconds to start.
    result = subprocess.run([java, "-jar", str(vnu), "--errors-only", "--format", "json", *names],
                            capture_output=True, text=True, timeout=300)
    messages = json.loads(result.stderr)["messages"]
    errors = [f"{names.get(unquote(urlsplit(m.get('url', '')).path), m.get('url'))}: {m['message']}"
              f" [{m.get('extract', '').strip()}]" for m in messages]
    assert errors == []
    assert result.returncode == 0
