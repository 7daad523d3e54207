"""The UI in real Chromium, judged by checkers nobody here wrote: axe-core and the Nu HTML Checker.

Also: keyboard use, two browsers at once, pages without JavaScript, no full reload during htmx
interactions, and the README screenshots in docs/, which these tests write.
"""

import json
import re
import shutil
import subprocess
import threading
from urllib.parse import unquote, urlsplit

import pytest

from conftest import HTMX, ROOT, ScriptedModel, new_client, serve
from webapp.chat_model import ModelError

CHECKERS = ROOT / "tests" / "js" / "node_modules"
AXE = CHECKERS / "axe-core" / "axe.min.js"
VNU = CHECKERS / "vnu-jar" / "build" / "dist" / "vnu.jar"
SCHEMES = ("light", "dark")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
FRAGMENT_PAGE = ("<!doctype html><html lang=en><head><meta charset=utf-8><title>x</title></head>"
                 "<body>{}</body></html>")


def checker(path):
    """A checker file from tests/js; missing, it fails the test, never skips it."""
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: scripts/test installs the checkers "
                    f"pinned in tests/js/package.json (npm ci); the UI checks are never skipped.")
    return path


@pytest.fixture(scope="module")
def axe_source():
    """The source of axe-core, to run inside pages."""
    return checker(AXE).read_text()


def serious_violations(page, axe_source):
    """What axe-core finds serious or critical in the page as it is now, as readable strings."""
    # Evaluated through the DevTools protocol: an injected <script> would be blocked by the CSP,
    # which these pages keep enforcing (no bypass_csp), so a violation in them still shows.
    if not page.evaluate("typeof axe === 'object'"):
        page.evaluate(axe_source)
    return page.evaluate("""async () => {
        const {violations} = await axe.run(document, {resultTypes: ["violations"]});
        return violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .flatMap(v => v.nodes.map(n => `${v.id} (${v.impact}) at ${n.target.join(" ")}: ${n.failureSummary}`));
    }""")


def watch_csp(page):
    """Record every CSP violation the page reports into window.__violations."""
    page.add_init_script("window.__violations = [];"
                         "document.addEventListener('securitypolicyviolation',"
                         " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")


class HeldModel:
    """Answers from a script once the test lets it; exceptions in the script are raised."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.go = threading.Event()
        self.go.set()

    def reply(self, texts):
        assert self.go.wait(30)
        answer = self.answers.pop(0) if self.answers else f"you said {texts[-1]}"
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.browser
@pytest.mark.parametrize("scheme", SCHEMES)
def test_axe_finds_nothing_serious_on_any_page_before_or_after_interacting(browser, make_app,
                                                                          axe_source, scheme):
    model = HeldModel("Hello! How can I help?", ModelError("down"))
    with serve(make_app(CHAT_MODEL=model)) as url:
        context = browser.new_context(color_scheme=scheme, viewport=DESKTOP)
        page = context.new_page()
        watch_csp(page)
        found = {}

        def check(state):
            found[state] = serious_violations(page, axe_source)

        for path in ("/", "/scores", "/chat", "/words", "/no-such-page"):
            page.goto(url + path)
            check(path)

        page.goto(f"{url}/scores")
        for score in ("1e15", "-42.5", "7"):
            page.fill("#score", score)
            page.press("#score", "Enter")
            page.locator("#last-score", has_text=score if score != "1e15" else "1000000000000000").wait_for()
        check("/scores with a board")
        page.evaluate("document.querySelector('#score').type = 'text'")
        page.fill("#score", "lots")
        page.press("#score", "Enter")
        page.locator("#score-error").wait_for()
        check("/scores with a refused score")

        page.goto(f"{url}/chat")
        page.fill("#message", "hello")
        page.press("#message", "Enter")
        page.locator(".bubble.bot", has_text="Hello! How can I help?").wait_for()
        model.go.clear()
        page.fill("#message", "are you there?")
        page.press("#message", "Enter")
        page.locator(".typing").wait_for()
        check("/chat while the bot is typing")
        model.go.set()
        page.locator(".bubble.bot.failed button").wait_for()
        check("/chat with a reply that failed")
        page.fill("#message", "   ")
        page.press("#message", "Enter")
        page.locator("#message-error").wait_for()
        check("/chat with a refused message")

        page.goto(f"{url}/words")
        page.fill("#text", "the quick brown fox")
        page.click("#word-counter button[type=submit]")
        page.locator("#my-words", has_text="4").wait_for()
        check("/words with counts")
        page.fill("#text", "   ")
        page.click("#word-counter button[type=submit]")
        page.locator("#text-error").wait_for()
        check("/words with a refused text")

        assert page.evaluate("window.__violations") == []
        context.close()
    assert {state: problems for state, problems in found.items() if problems} == {}


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
