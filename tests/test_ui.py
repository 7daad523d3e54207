"""The UI in real Chromium, judged by checkers nobody here wrote: axe-core and the Nu HTML Checker.

Also: keyboard use, two browsers at once, pages without JavaScript, no new document loaded by htmx
interactions, live regions, a phone's width, and the README screenshots in docs/, which these
tests compare with the pages and write when HXSTATE_UPDATE_SCREENSHOTS=1.
"""

import json
import os
import re
import shutil
import subprocess
from urllib.parse import unquote, urlsplit

import pytest

from conftest import HTMX, ROOT, HeldModel, ScriptedModel, new_client, serve, turn_id, type_message, watch_csp
from webapp.chat_model import ModelError
from webapp.score_values import format_score

CHECKERS = ROOT / "tests" / "js" / "node_modules"
AXE = CHECKERS / "axe-core" / "axe.min.js"
VNU = CHECKERS / "vnu-jar" / "build" / "dist" / "vnu.jar"
DOCS = ROOT / "docs"
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
    rules_passed, problems = page.evaluate("""async () => {
        const {passes, violations} = await axe.run(document);
        return [passes.length, violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .flatMap(v => v.nodes.map(n => `${v.id} (${v.impact}) at ${n.target.join(" ")}: ${n.failureSummary}`))];
    }""")
    assert rules_passed > 10  # axe really looked at the page
    return problems


def submit_score(page, score):
    """Type a score, press Enter and wait until the page shows it as this browser's last score."""
    page.fill("#score", score)
    page.press("#score", "Enter")
    shown = re.escape(format_score(float(score)))
    page.locator("#last-score", has_text=re.compile(f"^{shown}$")).wait_for()


@pytest.mark.browser
@pytest.mark.parametrize("scheme", SCHEMES)
def test_axe_finds_nothing_serious_on_any_page_before_or_after_interacting(browser, make_app,
                                                                          axe_source, scheme):
    model = HeldModel("Hello! How can I help?", ModelError("down"), held=False)
    with serve(make_app(CHAT_MODEL=model)) as url:
        context = browser.new_context(color_scheme=scheme, viewport=DESKTOP)
        page = context.new_page()
        watch_csp(page)
        found = {}

        def check(state):
            found[state] = serious_violations(page, axe_source) + page.evaluate("window.__violations")

        for path in ("/", "/scores", "/chat", "/words", "/no-such-page"):
            page.goto(url + path)
            check(path)

        page.goto(f"{url}/scores")
        for score in ("1e15", "-42.5", "7"):
            submit_score(page, score)
        check("/scores with a board")
        page.fill("#score", "lots")
        page.press("#score", "Enter")
        page.locator("#score-error").wait_for()
        check("/scores with a refused score")

        page.goto(f"{url}/chat")
        type_message(page, "hello")
        page.locator(".bubble.bot", has_text="Hello! How can I help?").wait_for()
        model.go.clear()
        type_message(page, "are you there?")
        page.locator(".typing").wait_for()
        check("/chat while the bot is typing")
        model.go.set()
        page.locator(".bubble.bot.failed button").wait_for()
        check("/chat with a reply that failed")
        type_message(page, "   ")
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
    turn = turn_id(sent.get_data(as_text=True))
    fragment("reply", client.post(f"/chat/replies/{turn}", headers=HTMX))
    sent = client.post("/chat", data={"message": "and again"}, headers=HTMX)
    turn = turn_id(sent.get_data(as_text=True))
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


def test_every_page_fragment_and_stylesheet_is_valid(make_app, tmp_path):
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
    for path in (ROOT / "static" / "app.css", ROOT / "static" / "favicon.svg"):
        names[str(path)] = path.name
    control = tmp_path / "control.html"  # one known mistake: a checker that checks nothing fails
    control.write_text(FRAGMENT_PAGE.format('<img src="a.png">'))
    names[str(control)] = "control"
    # One Java process for every document: the checker takes seconds to start.
    result = subprocess.run([java, "-jar", str(vnu), "--errors-only", "--also-check-css",
                             "--also-check-svg", "--format", "json", *names],
                            capture_output=True, text=True, timeout=300)
    messages = json.loads(result.stderr)["messages"]
    errors = [f"{names.get(unquote(urlsplit(m.get('url', '')).path), m.get('url'))}: {m['message']}"
              f" [{m.get('extract', '').strip()}]" for m in messages]
    assert len(errors) == 1 and errors[0].startswith("control: An “img” element must have an “alt”"), errors
    assert result.returncode == 1


def focused(page):
    """The focused element (its id, label or text) and whether a focus ring of 2 px or more shows."""
    return page.evaluate("""() => {
        const element = document.activeElement, style = getComputedStyle(element);
        const name = element.id || element.getAttribute("aria-label") || element.textContent.trim();
        return [name, style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2];
    }""")


@pytest.mark.browser
def test_keyboard_alone_submits_sends_and_clears_with_focus_always_visible(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("hello to you"))) as url:
        page = browser.new_page()
        page.goto(f"{url}/")
        page.keyboard.press("Tab")
        assert focused(page) == ["Skip to content", True]
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert focused(page) == ["Score board", True]  # the first link inside <main>
        page.keyboard.press("Enter")
        page.wait_for_url(f"{url}/scores")
        assert focused(page) == ["score", True]
        page.keyboard.type("12")
        page.keyboard.press("Enter")
        page.locator("#board li", has_text="12").wait_for()
        assert focused(page) == ["score", True] and page.input_value("#score") == ""

        page.goto(f"{url}/chat")
        assert focused(page) == ["message", True]
        page.keyboard.type("hi there")
        page.keyboard.press("Enter")
        page.locator(".bubble.bot", has_text="hello to you").wait_for()
        assert focused(page) == ["message", True]
        controls = []
        for _ in range(5):  # the newest reply's controls, last first
            page.keyboard.press("Shift+Tab")
            controls.append(focused(page))
        assert controls == [["Undo", True], ["Regenerate", True], ["dislike-1", True], ["like-1", True],
                            ["Copy", True]]
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # Like, then the keys go on from it: the swap keeps the focus
        page.get_by_role("button", name="Like", exact=True, pressed=True).wait_for()
        assert focused(page) == ["like-1", True]
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
        assert focused(page) == ["Conversation history", True]  # the log scrolls with the keys
        for _ in range(7):
            page.keyboard.press("Tab")
        assert focused(page) == ["Send", True]
        page.keyboard.press("Tab")
        assert focused(page) == ["Clear", True]
        page.keyboard.press("Enter")
        page.locator("#chat-log:empty").wait_for(state="attached")
        page.reload()
        assert page.locator(".bubble").count() == 0
        page.close()


def in_view(page, selector, within=None):
    """Whether the element is wholly inside the box of `within`, or of the window."""
    return page.evaluate("""([selector, within]) => {
        const box = document.querySelector(selector).getBoundingClientRect();
        const frame = within ? document.querySelector(within).getBoundingClientRect()
                             : {top: 0, bottom: innerHeight};
        return box.top >= frame.top - 1 && box.bottom <= frame.bottom + 1;
    }""", [selector, within])


@pytest.mark.browser
def test_chat_keeps_the_newest_message_and_the_box_in_view_on_a_phone(browser, make_app):
    newest = "#chat-log > li:last-child > .bubble:last-child"
    with serve(make_app(CHAT_MODEL=ScriptedModel())) as url:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{url}/chat")
        for number in range(1, 9):
            type_message(page, f"message number {number}")
            page.locator(newest, has_text=f"reply {number}").wait_for()
            assert in_view(page, newest, ".chat-window"), number
            assert in_view(page, ".chat-window") and in_view(page, "#message"), number
        assert not in_view(page, "#chat-log > li:first-child", ".chat-window")  # it did scroll
        page.reload()
        page.locator(newest, has_text="reply 8").wait_for()
        assert in_view(page, newest, ".chat-window") and in_view(page, "#message")
        page.close()


@pytest.mark.browser
def test_two_browsers_share_the_board_but_each_keeps_its_own_chat(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("hi Alice", "hi Bob"))) as url:
        alice, bob = browser.new_context().new_page(), browser.new_context().new_page()
        for page in (alice, bob):
            page.goto(f"{url}/scores")
        alice.fill("#score", "31")
        alice.press("#score", "Enter")
        bob.locator("#board li", has_text="31").wait_for()  # by the board's own polling
        bob.fill("#score", "-4")
        bob.press("#score", "Enter")
        alice.locator("#board li", has_text="-4").wait_for()
        for page, mine in ((alice, "31"), (bob, "-4")):
            page.reload()
            assert page.locator("#last-score").inner_text() == mine
            assert page.locator("#board li").all_inner_texts() == ["31", "-4"]

        for page, name in ((alice, "Alice"), (bob, "Bob")):
            page.goto(f"{url}/chat")
            assert page.locator(".bubble").count() == 0
            type_message(page, f"I am {name}")
            page.locator(".bubble.bot", has_text=f"hi {name}").wait_for()
        for page, name in ((alice, "Alice"), (bob, "Bob")):
            page.reload()
            assert page.locator(".bubble .text").all_inner_texts() == [f"I am {name}", f"hi {name}"]
        alice.context.close()
        bob.context.close()


@pytest.mark.browser
def test_both_pages_work_through_plain_forms_without_javascript(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("a plain reply"))) as url:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{url}/scores")
        page.fill("#score", "99")
        with page.expect_navigation():
            page.press("#score", "Enter")
        assert page.locator("#board li").all_inner_texts() == ["99"]
        assert page.locator("#last-score").inner_text() == "99"

        page.goto(f"{url}/chat")
        page.fill("#message", "no scripts here")
        with page.expect_navigation():
            page.click("text=Send")
        assert page.locator(".bubble .text").all_inner_texts() == ["no scripts here", "a plain reply"]
        with page.expect_navigation():
            page.click("text=Clear")
        assert page.locator(".bubble").count() == 0

        page.goto(f"{url}/words")
        page.fill("#text", "three plain words")
        with page.expect_navigation():
            page.click("#word-counter button")
        assert page.locator("#my-words").inner_text() == "3"
        context.close()


def listed(page):
    """The titles in the page's list of conversations, as shown (newest first)."""
    return page.locator(".conversation-list .title").all_inner_texts()


def shown(page):
    """The texts of the conversation the page shows."""
    return page.locator("#chat-log .bubble .text").all_inner_texts()


@pytest.mark.browser
def test_several_conversations_start_switch_and_delete_without_leaving_the_page(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("cats reply", "dogs reply"))) as url:
        page = browser.new_page(viewport=DESKTOP)
        watch_csp(page)
        page.goto(f"{url}/chat")
        page.evaluate("window.__sameDocument = true")
        type_message(page, "about cats")
        page.locator(".bubble.bot", has_text="cats reply").wait_for()
        page.locator(".conversation-list .title", has_text="about cats").wait_for()  # listed with its first message

        page.click("text=New chat")
        page.locator("#chat-log:empty").wait_for(state="attached")
        assert listed(page) == ["about cats"]  # a new conversation is listed once it holds a message
        type_message(page, "about dogs")
        page.locator(".bubble.bot", has_text="dogs reply").wait_for()
        page.locator(".conversation-list li", has_text="about dogs").wait_for()
        assert listed(page) == ["about dogs", "about cats"]  # newest first

        page.click(".conversation-list a:has-text('about cats')")
        page.locator(".conversation-list a[aria-current=page]", has_text="about cats").wait_for()
        assert shown(page) == ["about cats", "cats reply"]
        assert page.evaluate("window.__sameDocument") is True  # swapped by htmx, not reloaded

        item = page.locator(".conversation-list li", has_text="about dogs")
        item.locator("summary").click()
        item.locator("text=Yes, delete").click()
        item.wait_for(state="detached")
        assert listed(page) == ["about cats"] and shown(page) == ["about cats", "cats reply"]
        page.reload()
        assert listed(page) == ["about cats"] and shown(page) == ["about cats", "cats reply"]
        assert page.evaluate("window.__violations") == []
        page.close()


@pytest.mark.browser
def test_several_conversations_work_through_links_and_forms_without_javascript(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("first reply", "second reply"))) as url:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{url}/chat")
        for message in ("the first one", "the second one"):
            with page.expect_navigation():
                page.click("text=New chat")
            assert shown(page) == []
            page.fill("#message", message)
            with page.expect_navigation():
                page.click("text=Send")
        assert listed(page) == ["the second one", "the first one"]
        assert shown(page) == ["the second one", "second reply"]
        with page.expect_navigation():
            page.click(".conversation-list a:has-text('the first one')")
        assert shown(page) == ["the first one", "first reply"]
        with page.expect_navigation():  # Clear empties the conversation shown, and only it
            page.click("text=Clear")
        assert shown(page) == [] and listed(page) == ["the second one"]
        item = page.locator(".conversation-list li", has_text="the second one")
        item.locator("summary").click()  # the confirmation opens without any script
        with page.expect_navigation():
            item.locator("text=Yes, delete").click()
        assert listed(page) == [] and shown(page) == []
        context.close()


@pytest.mark.browser
def test_the_list_of_conversations_folds_on_a_phone_and_opens_on_demand(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel())) as url:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{url}/chat")
        type_message(page, "hello from a phone")
        page.locator(".bubble.bot", has_text="reply 1").wait_for()
        assert page.locator(".conversations").get_attribute("open") is None
        assert not page.locator(".conversation-list").is_visible() and page.locator("#message").is_visible()
        page.click(".conversations > summary")
        page.locator(".conversation-list .title", has_text="hello from a phone").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        desktop = browser.new_page(viewport=DESKTOP)
        desktop.goto(f"{url}/chat")
        assert desktop.locator(".conversations").get_attribute("open") is not None
        desktop.close()
        page.close()


@pytest.mark.browser
def test_htmx_interactions_never_load_a_new_document(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("no reload needed"))) as url:
        page = browser.new_page()
        # Playwright's framenavigated also reports history.replaceState, which htmx calls once to
        # mark the page; the protocol's own event fires only when a new document is loaded.
        documents, navigations, tokens = [], [], []
        protocol = page.context.new_cdp_session(page)
        protocol.send("Page.enable")
        protocol.on("Page.frameNavigated", lambda event: "parentId" not in event["frame"]
                    and documents.append(event["frame"]["url"]))
        page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
        page.on("request", lambda request: request.method == "POST"
                and tokens.append(request.headers.get("x-csrftoken")))

        def scores():
            page.fill("#score", "5")
            page.press("#score", "Enter")
            page.locator("#board li", has_text="5").wait_for()
            page.fill("#score", "1e16")
            page.press("#score", "Enter")
            page.locator("#score-error").wait_for()

        def chat():
            type_message(page, "hello")
            page.locator(".bubble.bot", has_text="no reload needed").wait_for()
            page.click("text=Clear")
            page.locator("#chat-log:empty").wait_for(state="attached")

        def words():
            page.fill("#text", "one two")
            page.click("#word-counter button")
            page.locator("#my-words", has_text="2").wait_for()

        for path, interact in (("/scores", scores), ("/chat", chat), ("/words", words)):
            page.goto(url + path)
            assert documents == [url + path]
            documents.clear()
            navigations.clear()
            page.evaluate("window.__sameDocument = true")
            interact()
            assert documents == [], path
            assert set(navigations) <= {url + path}, path  # the address never changed
            assert page.evaluate("window.__sameDocument") is True
        assert len(tokens) == 6 and all(tokens)  # the CSRF header htmx inherits from <body>
        page.close()


@pytest.mark.browser
def test_replies_and_board_changes_arrive_inside_live_regions_that_were_already_there(browser, make_app):
    # Screen readers announce changes only inside a live region that existed before the change.
    kept = "selector => document.querySelector(selector).closest('[aria-live=polite]').kept === true"
    with serve(make_app(CHAT_MODEL=ScriptedModel("announced reply"))) as url:
        page, other = browser.new_context().new_page(), browser.new_context().new_page()
        page.goto(f"{url}/scores")
        page.evaluate("document.querySelector('#board').closest('[aria-live=polite]').kept = true")
        other.goto(f"{url}/scores")
        other.fill("#score", "8")
        other.press("#score", "Enter")
        page.locator("#board li", has_text="8").wait_for()
        assert page.evaluate(kept, "#board")
        page.fill("#score", "9")
        page.press("#score", "Enter")
        page.locator("#board li", has_text="9").wait_for()
        assert page.evaluate(kept, "#board")

        page.goto(f"{url}/chat")
        page.evaluate("document.querySelector('#chat-log').closest('[aria-live=polite]').kept = true")
        type_message(page, "hello")
        page.locator(".bubble.bot", has_text="announced reply").wait_for()
        assert page.evaluate(kept, ".bubble.bot")
        page.context.close()
        other.context.close()


@pytest.mark.browser
def test_a_phone_never_scrolls_sideways_even_with_huge_scores_and_long_words(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("y" * 200))) as url:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{url}/scores")
        for score in ("-1e15", "123456789012345.67", "1e15", "-999999999999999.9"):
            submit_score(page, score)
        page.goto(f"{url}/chat")
        type_message(page, "x" * 200)
        page.locator(".bubble.bot", has_text="yyyy").wait_for()
        page.goto(f"{url}/words")
        page.fill("#text", "z" * 300)
        page.click("#word-counter button")
        page.locator("#my-words", has_text="1").wait_for()
        for path in ("/", "/scores", "/chat", "/words", "/no-such-page"):
            page.goto(url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        page.close()


# Set to refresh the screenshots in docs/; otherwise each is compared with the page as it is now.
UPDATE_SCREENSHOTS = os.environ.get("HXSTATE_UPDATE_SCREENSHOTS") == "1"
REFRESH = "refresh docs/ with `HXSTATE_UPDATE_SCREENSHOTS=1 scripts/test tests/test_ui.py -k screenshots`"
SCREENSHOTS = (("scores", "light", "desktop"), ("scores", "dark", "phone"),
               ("chat", "light", "desktop"), ("chat", "dark", "phone"))


def png_size(png):
    """The width and height of a PNG image, from its header."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.browser
def test_readme_screenshots_show_both_pages_in_both_schemes(browser, make_app, axe_source, tmp_path):
    model = ScriptedModel("Hi! I am a small model trained on a chat corpus. Ask me anything.",
                          "I like talking to people.",
                          "Why did the chicken cross the road? To get to the other side.")
    with serve(make_app(CHAT_MODEL=model)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/scores")
        for score in ("42", "17.5", "-8"):
            submit_score(page, score)
        page.goto(f"{url}/chat")
        for number, message in enumerate(("hello", "what do you like?", "tell me a joke"), 1):
            type_message(page, message)
            page.locator(f"#chat-log > li:nth-child({number}) > .bubble.bot:not(form)").wait_for()
        this_browser = context.storage_state()
        context.close()

        for name, scheme, device in SCREENSHOTS:
            viewport = {"desktop": DESKTOP, "phone": PHONE}[device]
            context = browser.new_context(color_scheme=scheme, viewport=viewport,
                                          storage_state=this_browser, reduced_motion="reduce")
            page = context.new_page()
            page.goto(f"{url}/{name}")
            assert serious_violations(page, axe_source) == [], (name, scheme)
            path = DOCS / f"{name}-{scheme}-{device}.png"
            shot = page.screenshot(path=tmp_path / path.name, full_page=True, animations="disabled",
                                   caret="hide")
            assert png_size(shot)[0] == viewport["width"]
            if UPDATE_SCREENSHOTS:
                path.write_bytes(shot)
            else:
                # Pixels differ with each machine's fonts; the size says whether the layout still fits.
                assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {REFRESH}"
                assert png_size(path.read_bytes()) == png_size(shot), (
                    f"{path.relative_to(ROOT)} is {png_size(path.read_bytes())}, the page now "
                    f"{png_size(shot)} (see {tmp_path / path.name}): {REFRESH}")
            context.close()
