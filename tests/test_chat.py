"""The chat page: per-browser history, restarts, concurrency, the model's prompt, bad input, browser."""

import time
from datetime import timedelta

import pytest

from conftest import (HTMX, HeldModel, ScriptedModel, chat, conversation, failed_reply, in_threads, log,
                      new_client, send, serve, set_expiry, turn_id, type_message)
from html_tree import parse, text_of
from webapp.chat_model import ChatModel, ModelError
from webapp.database import utcnow
from webapp.generation import Job


def test_two_browsers_keep_separate_histories(make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("hi alice", "hi bob"))
    alice, bob = new_client(app), new_client(app)
    assert chat(alice, "I am Alice").status_code == 200
    assert chat(bob, "I am Bob").status_code == 200
    assert log(alice) == [("You", "I am Alice"), ("Bot", "hi alice")]
    assert log(bob) == [("You", "I am Bob"), ("Bot", "hi bob")]
    assert log(alice) == [("You", "I am Alice"), ("Bot", "hi alice")]  # a refresh shows it again


def test_clear_empties_only_this_browser(make_app):
    app = make_app(CHAT_MODEL=ScriptedModel())
    alice, bob = new_client(app), new_client(app)
    chat(alice, "one")
    chat(bob, "two")
    cleared = alice.post("/chat/clear", headers=HTMX)
    chat_log = parse(cleared.get_data(as_text=True)).find(id="chat-log")
    assert cleared.status_code == 200 and chat_log is not None
    assert chat_log.find(class_="exchange") is None
    assert log(alice) == []
    assert log(bob) == [("You", "two"), ("Bot", "reply 2")]


def test_history_survives_a_restart(make_app):
    first = make_app(CHAT_MODEL=ScriptedModel("still here"))
    client = new_client(first)
    chat(client, "remember me")
    cookie = client.get_cookie("session").value
    restarted = make_app(CHAT_MODEL=ScriptedModel())
    browser = restarted.test_client()
    browser.set_cookie("session", cookie)
    assert log(browser) == [("You", "remember me"), ("Bot", "still here")]


def test_prompt_holds_the_conversation_in_order(make_app):
    model = ScriptedModel("first answer", "second answer")
    client = new_client(make_app(CHAT_MODEL=model))
    chat(client, "first question")
    chat(client, "second question")
    assert model.prompts == [["first question"],
                             ["first question", "first answer", "second question"]]


def test_twenty_concurrent_requests_of_one_session_lose_nothing(app):
    owner = new_client(app)
    owner.post("/scores", data={"score": "1"}, headers=HTMX)  # a session is kept once it holds state
    cookie = owner.get_cookie("session").value
    clients = []
    for _ in range(20):
        client = app.test_client()
        client.set_cookie("session", cookie)
        client.environ_base.update(owner.environ_base)
        clients.append(client)
    statuses = []

    def talk(client, k):
        statuses.append(chat(client, f"message {k}").status_code)

    in_threads(talk, [(c, k) for k, c in enumerate(clients)])
    assert statuses == [200] * 20
    shown = log(owner)
    assert [who for who, _ in shown] == ["You", "Bot"] * 20
    assert sorted(text for who, text in shown if who == "You") == sorted(
        f"message {k}" for k in range(20))


def test_reply_is_generated_once(make_app):
    model = ScriptedModel("only once")
    client = new_client(make_app(CHAT_MODEL=model))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    for _ in range(2):
        again = client.post(f"/chat/replies/{turn}", headers=HTMX)
        assert conversation(again.get_data(as_text=True)) == [("Bot", "only once")]
    assert len(model.prompts) == 1


def test_another_browsers_message_cannot_be_answered(app):
    alice, mallory = new_client(app), new_client(app)
    turn = turn_id(send(alice, "private").get_data(as_text=True))
    response = mallory.post(f"/chat/replies/{turn}", headers=HTMX)
    assert response.status_code == 404
    assert "no longer in this chat" in text_of(response.get_data(as_text=True))
    assert log(mallory) == []


def test_htmx_send_echoes_the_message_with_a_pending_reply(app):
    response = send(new_client(app), "echo this")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    fragment = parse(html)
    [appended] = fragment.find_all(**{"data-hx-swap-oob": "beforeend:#chat-log"})
    [exchange] = appended.find_all("li", class_="exchange")
    assert conversation(html) == [("You", "echo this")]
    pending = exchange.find("form", class_="pending")
    assert pending.find(class_="typing") and pending["data-hx-trigger"] == "load, submit"
    assert fragment.find("textarea", id="message").text == ""  # the message box comes back empty
    assert "HX-Request" in response.vary


def test_chat_page_is_full_for_a_plain_get_and_the_log_for_htmx(client):
    page = client.get("/chat")
    fragment = client.get("/chat", headers=HTMX)
    assert "<html" in page.get_data(as_text=True)
    assert "<html" not in fragment.get_data(as_text=True)
    assert [(element.tag, element["id"]) for element in parse(fragment.get_data(as_text=True)).elements] == [
        ("ol", "chat-log")]
    assert "HX-Request" in page.vary and "HX-Request" in fragment.vary


def test_plain_forms_work_without_javascript(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("plain reply")))
    response = send(client, "no javascript", htmx=False)
    assert response.status_code == 303 and response.headers["Location"] == "/chat"
    assert log(client) == [("You", "no javascript"), ("Bot", "plain reply")]
    cleared = client.post("/chat/clear")
    assert cleared.status_code == 303
    assert log(client) == []


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "x" * 1001])
def test_bad_message_is_refused_and_history_kept(make_app, text, htmx):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("kept")))
    chat(client, "before")
    response = send(client, text, htmx=htmx)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    form = parse(html).find("form", id="chat-form")
    assert form.find(id="message-error") and form.find("textarea", id="message")["aria-invalid"] == "true"
    assert ("<html" in html) is not htmx
    assert log(client) == [("You", "before"), ("Bot", "kept")]


def test_message_limit_is_configurable(make_app):
    client = new_client(make_app(CHAT_MAX_MESSAGE_CHARS=5, CHAT_MODEL=ScriptedModel()))
    assert send(client, "12345").status_code == 200
    response = send(client, "123456")
    assert response.status_code == 422
    assert "limited to 5 characters; this one has 6" in text_of(response.get_data(as_text=True))


def test_markup_from_user_and_model_is_shown_as_text(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel('<img src=x onerror="alert(2)">')))
    chat(client, "<script>alert(1)</script>")
    html = client.get("/chat").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    page = parse(html)
    assert page.find("img") is None and all(script.get("src") for script in page.find_all("script"))
    assert conversation(html) == [("You", "<script>alert(1)</script>"),
                                  ("Bot", '<img src=x onerror="alert(2)">')]


def test_model_failure_keeps_the_message_and_offers_a_retry(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel(ModelError("boom"), "second try")))
    turn = turn_id(send(client, "are you there?").get_data(as_text=True))
    failed = client.post(f"/chat/replies/{turn}", headers=HTMX)
    html = failed.get_data(as_text=True)
    assert failed.status_code == 500
    assert "could not answer" in failed_reply(html, turn).text and "boom" not in html
    assert log(client) == [("You", "are you there?")]
    retried = client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert retried.status_code == 200
    assert log(client) == [("You", "are you there?"), ("Bot", "second try")]


def test_model_failure_without_javascript_is_shown_on_the_page(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel(ModelError("boom"))))
    response = send(client, "hello", htmx=False)
    html = response.get_data(as_text=True)
    assert response.status_code == 500 and "<html" in html
    assert "could not answer" in failed_reply(html, turn_id(html)).text


def test_stored_turns_are_capped(make_app):
    client = new_client(make_app(CHAT_HISTORY_MAX_TURNS=6, CHAT_MODEL=ScriptedModel()))
    for k in range(5):
        chat(client, f"m{k}")
    assert [text for who, text in log(client) if who == "You"] == ["m2", "m3", "m4"]
    assert len(log(client)) == 6


def test_expired_sessions_and_their_turns_are_removed(make_app):
    app = make_app(SESSION_CLEANUP_EVERY=0, CHAT_MODEL=ScriptedModel())
    gone = new_client(app)
    chat(gone, "soon forgotten")
    set_expiry(app, utcnow() - timedelta(minutes=1))  # as if its lifetime had passed
    live = new_client(app)
    chat(live, "still here")
    result = app.test_cli_runner().invoke(args=["cleanup-sessions"])
    assert result.exit_code == 0 and "2 turns" in result.output
    assert log(live) == [("You", "still here"), ("Bot", "reply 2")]
    assert log(gone) == []


def test_posts_remove_expired_sessions_by_themselves_and_pages_never_pay_for_it(make_app):
    app = make_app(SESSION_CLEANUP_EVERY=1, CHAT_MODEL=ScriptedModel())
    chat(new_client(app), "soon forgotten")
    set_expiry(app, utcnow() - timedelta(minutes=1))  # as if its lifetime had passed
    client = new_client(app)
    for path in ("/chat", "/scores", "/scores.json"):
        client.get(path)
    with app.app_context(), app.extensions["sqlalchemy"].engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM chat_turns").scalar() == 2  # still there
    client.post("/scores", data={"score": "1"}, headers=HTMX)  # any post now cleans up
    result = app.test_cli_runner().invoke(args=["cleanup-sessions"])
    assert result.exit_code == 0 and ": 0 turns" in result.output


def test_real_model_loads_offline_from_a_folder_and_answers(make_app, tiny_model_dir):
    app = make_app(CHAT_MODEL=str(tiny_model_dir), CHAT_MAX_NEW_TOKENS=5)
    client = new_client(app)
    assert chat(client, "hello").status_code == 200
    (you, bot) = log(client)
    assert you == ("You", "hello") and bot[0] == "Bot"
    model = app.extensions["chat_model"].get()  # loaded in the background by the first reply
    assert isinstance(model, ChatModel)
    job = Job(["hello"], time.monotonic() + 60)
    model.generate([job])
    assert 1 <= job.tokens <= 5 and job.text == bot[1]


def test_long_conversation_is_trimmed_to_the_context_window(tiny_model, make_app):
    budget = tiny_model.context_size - tiny_model.max_new_tokens
    turns = [f"turn number {k} says something rather long" for k in range(30)]
    ids = tiny_model.prompt_ids(turns)
    assert len(ids) <= budget
    assert ids[-1] == tiny_model.eos
    newest = tiny_model.tokenizer.encode(turns[-1]) + [tiny_model.eos]
    assert ids[-len(newest):] == newest
    huge = tiny_model.prompt_ids(["word " * 500])
    assert len(huge) == budget and huge[-1] == tiny_model.eos
    client = new_client(make_app())
    for turn in turns[:12]:
        assert chat(client, turn).status_code == 200
    assert len(log(client)) == 24


@pytest.mark.browser
def test_browser_chat_echoes_then_replies_and_keeps_history(browser, make_app):
    model = HeldModel("you said hello bot")
    with serve(make_app(CHAT_MODEL=model)) as url:
        alice = browser.new_context()
        page = alice.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "hello bot")
        page.locator(".bubble.user", has_text="hello bot").wait_for()
        page.locator(".typing").wait_for()
        assert page.input_value("#message") == ""
        assert page.evaluate("document.activeElement.id") == "message"
        model.go.set()
        page.locator(".bubble.bot", has_text="you said hello bot").wait_for()
        page.reload()
        page.locator(".bubble.bot", has_text="you said hello bot").wait_for()
        other = browser.new_context().new_page()
        other.goto(f"{url}/chat")
        assert other.locator(".bubble").count() == 0
        alice.close()
        other.context.close()


@pytest.mark.browser
def test_browser_shows_waiting_not_typing_while_the_model_is_busy(browser, make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("here at last"), CHAT_QUEUE_SIZE=0)  # every reply: busy
    with serve(app) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "anyone there?")
        banner = page.locator("#alerts .alert", has_text="The model is busy with other chats")
        banner.wait_for()
        pending = page.locator(".bubble.bot.pending")
        pending.get_by_text("waiting for the model").wait_for()
        assert not pending.locator(".typing").is_visible()
        assert "503" not in banner.inner_text()
        app.extensions["generation"].queue_size = 16  # the other chats are done
        pending.get_by_role("button", name="Get the reply").click()
        page.locator(".bubble.bot", has_text="here at last").wait_for()
        banner.wait_for(state="detached")
        page.close()


@pytest.mark.browser
def test_browser_message_box_takes_several_lines_and_counts_its_characters(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("two lines, got it"), CHAT_MAX_MESSAGE_CHARS=50)) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        assert page.get_attribute("#message", "maxlength") == "50"
        assert page.locator("#message-count").inner_text() == "0 of 50 characters"
        page.keyboard.type("first line")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("second")
        assert page.input_value("#message") == "first line\nsecond"
        assert page.locator("#message-count").inner_text() == "17 of 50 characters"
        page.keyboard.press("Enter")
        page.locator(".bubble.bot", has_text="two lines, got it").wait_for()
        assert page.locator(".bubble.user .text").inner_text() == "first line\nsecond"
        assert page.locator("#message-count").inner_text() == "0 of 50 characters"
        page.close()


@pytest.mark.browser
def test_browser_starter_prompts_send_themselves_and_come_back_after_clear(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("fine, thanks", "still here"))) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        starters = page.locator("#starters")
        starters.get_by_role("button", name="Hi! How are you?").click()
        page.locator(".bubble.bot", has_text="fine, thanks").wait_for()
        assert page.locator(".bubble.user .text").inner_text() == "Hi! How are you?"
        assert not starters.is_visible()
        page.reload()
        assert not starters.is_visible()
        page.get_by_role("button", name="Clear").click()
        starters.get_by_role("button", name="What do you do for fun?").wait_for()
        page.close()


def test_starter_prompts_work_as_plain_forms(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("fine, thanks")))
    empty = parse(client.get("/chat").get_data(as_text=True))
    [first, *_] = empty.find(id="starters").find_all("form")
    message = first.find("input", name="message")["value"]
    assert client.post(first["action"], data={"message": message}).status_code == 303
    assert log(client) == [("You", message), ("Bot", "fine, thanks")]
    assert parse(client.get("/chat").get_data(as_text=True)).find(id="starters").get("hidden") == ""


@pytest.mark.browser
def test_browser_copy_puts_a_reply_on_the_clipboard(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("copy **this** reply"))) as url:
        context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "something to copy?")
        reply = page.locator(".bubble.bot", has_text="copy this reply")
        reply.get_by_role("button", name="Copy").click()
        reply.get_by_role("button", name="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == "copy this reply"
        context.close()


@pytest.mark.browser
def test_browser_without_javascript_shows_no_copy_button(browser, make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("no script, no copy"))
    with serve(app) as url:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{url}/chat")
        page.fill("#message", "hello")
        with page.expect_navigation():
            page.click("text=Send")
        page.locator(".bubble.bot", has_text="no script, no copy").wait_for()
        assert page.get_by_role("button", name="Copy").count() == 0
        context.close()


def box(html):
    """What the message box of a chat page or fragment holds."""
    return parse(html).find("textarea", id="message").raw_text


def test_undo_takes_back_the_newest_exchange_and_puts_the_message_back(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("r1", "r2")))
    chat(client, "m1")
    chat(client, "m2")
    undone = client.post("/chat/undo", headers=HTMX)
    assert undone.status_code == 200 and box(undone.get_data(as_text=True)) == "m2"
    assert conversation(undone.get_data(as_text=True)) == [("You", "m1"), ("Bot", "r1")]
    assert log(client) == [("You", "m1"), ("Bot", "r1")]
    client.post("/chat/undo", headers=HTMX)
    assert log(client) == []
    assert box(client.post("/chat/undo", headers=HTMX).get_data(as_text=True)) == ""  # nothing left


def test_undo_without_javascript_puts_the_message_back_once(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("r1")))
    chat(client, "take this back")
    assert client.post("/chat/undo").status_code == 303
    assert box(client.get("/chat").get_data(as_text=True)) == "take this back"
    assert box(client.get("/chat").get_data(as_text=True)) == ""
    assert log(client) == []


def test_regenerate_replaces_the_newest_reply(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("r1", "first try", "second try")))
    chat(client, "m1")
    turn = turn_id(send(client, "m2").get_data(as_text=True))
    client.post(f"/chat/replies/{turn}", headers=HTMX)
    asked = client.post(f"/chat/replies/{turn}/regenerate", headers=HTMX)
    pending = parse(asked.get_data(as_text=True)).find("form", id=f"reply-{turn}")
    assert asked.status_code == 200 and "pending" in pending.classes  # it asks again as it loads
    assert log(client) == [("You", "m1"), ("Bot", "r1"), ("You", "m2")]
    client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert log(client) == [("You", "m1"), ("Bot", "r1"), ("You", "m2"), ("Bot", "second try")]


def test_only_the_newest_written_reply_can_be_regenerated(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("r1", "r2")))
    first = turn_id(send(client, "m1").get_data(as_text=True))
    client.post(f"/chat/replies/{first}", headers=HTMX)
    chat(client, "m2")
    refused = client.post(f"/chat/replies/{first}/regenerate", headers=HTMX)
    assert refused.status_code == 409 and refused.headers["HX-Retarget"] == "#alerts"
    assert log(client) == [("You", "m1"), ("Bot", "r1"), ("You", "m2"), ("Bot", "r2")]


def test_regenerate_without_javascript_replaces_the_reply_and_redirects(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("first try", "second try")))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    client.post(f"/chat/replies/{turn}", headers=HTMX)
    assert client.post(f"/chat/replies/{turn}/regenerate").status_code == 303
    assert log(client) == [("You", "hello"), ("Bot", "second try")]


@pytest.mark.browser
def test_browser_regenerate_and_undo_act_on_the_newest_exchange(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("r1", "r2", "r2 again"))) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        for text, reply in (("m1", "r1"), ("m2", "r2")):
            type_message(page, text)
            page.locator(".bubble.bot", has_text=reply).wait_for()
        newest = page.locator(".exchange").last
        assert page.get_by_role("button", name="Regenerate").count() == 1  # the newest only
        newest.get_by_role("button", name="Regenerate").click()
        newest.locator(".bubble.bot", has_text="r2 again").wait_for()
        newest.get_by_role("button", name="Undo").click()
        page.locator(".exchange", has_text="m2").wait_for(state="detached")
        assert page.input_value("#message") == "m2"
        assert page.locator(".bubble .text").all_inner_texts() == ["m1", "r1"]
        page.close()


def feedback_of(client, turn):
    """Which feedback button of the reply to `turn` the chat page shows as pressed."""
    bubble = parse(client.get("/chat").get_data(as_text=True)).find("div", id=f"reply-{turn}")
    return [button.text for button in bubble.find("form", class_="feedback").find_all("button")
            if button["aria-pressed"] == "true"]


def test_feedback_is_stored_with_the_reply_toggles_and_survives_a_refresh(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("rate me", "other")))
    turn = turn_id(send(client, "hello").get_data(as_text=True))
    client.post(f"/chat/replies/{turn}", headers=HTMX)
    liked = client.post(f"/chat/replies/{turn}/feedback", data={"feedback": "like"}, headers=HTMX)
    assert liked.status_code == 200 and "<html" not in liked.get_data(as_text=True)
    assert feedback_of(client, turn) == ["Like"]
    client.post(f"/chat/replies/{turn}/feedback", data={"feedback": "dislike"})
    assert feedback_of(client, turn) == ["Dislike"]
    assert client.post(f"/chat/replies/{turn}/feedback", data={"feedback": "dislike"}).status_code == 303
    assert feedback_of(client, turn) == []
    refused = client.post(f"/chat/replies/{turn}/feedback", data={"feedback": "love"}, headers=HTMX)
    assert refused.status_code == 422 and "like or dislike" in text_of(refused.get_data(as_text=True))
    assert log(client) == [("You", "hello"), ("Bot", "rate me")]


def test_feedback_belongs_to_its_browser(make_app):
    app = make_app(CHAT_MODEL=ScriptedModel("alice's reply"))
    alice, mallory = new_client(app), new_client(app)
    turn = turn_id(send(alice, "hello").get_data(as_text=True))
    alice.post(f"/chat/replies/{turn}", headers=HTMX)
    assert mallory.post(f"/chat/replies/{turn}/feedback", data={"feedback": "dislike"}).status_code == 404
    assert feedback_of(alice, turn) == []


@pytest.mark.browser
def test_browser_like_and_dislike_toggle_and_stay(browser, make_app):
    with serve(make_app(CHAT_MODEL=ScriptedModel("a likeable reply"))) as url:
        page = browser.new_page()
        page.goto(f"{url}/chat")
        type_message(page, "hello")
        reply = page.locator(".bubble.bot", has_text="a likeable reply")
        reply.get_by_role("button", name="Like", exact=True).click()
        reply.get_by_role("button", name="Like", exact=True, pressed=True).wait_for()
        page.reload()
        reply.get_by_role("button", name="Like", exact=True, pressed=True).wait_for()
        reply.get_by_role("button", name="Dislike", exact=True).click()
        reply.get_by_role("button", name="Dislike", exact=True, pressed=True).wait_for()
        assert reply.get_by_role("button", name="Like", exact=True, pressed=True).count() == 0
        page.close()


# Several conversations

def listed(client):
    """(number, title) of each conversation the chat page lists, newest first."""
    page = parse(client.get("/chat").get_data(as_text=True))
    return [(int(link["href"].split("c=")[1]), link.find("span", class_="title").text)
            for link in page.find("ol", class_="conversation-list").find_all("a")] \
        if page.find("ol", class_="conversation-list") else []


def shown(client, number):
    """The conversation a page that shows `number` shows."""
    return conversation(client.get(f"/chat?c={number}").get_data(as_text=True))


def test_each_action_acts_on_the_conversation_its_page_showed_and_no_other(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel()))
    chat(client, "first chat")
    assert client.post("/chat/new").headers["Location"] == "/chat"
    assert log(client) == []  # the new conversation is shown, empty
    chat(client, "second chat")
    [(second, _), (first, _)] = listed(client)
    assert first == 0 and second != 0
    # A tab still showing the first conversation: its posts say so, whatever this browser shows now.
    sent = client.post(f"/chat?c={first}", data={"message": "more in the first"}, headers=HTMX)
    client.post(f"/chat/replies/{turn_id(sent.get_data(as_text=True))}?c={first}", headers=HTMX)
    assert shown(client, first) == [("You", "first chat"), ("Bot", "reply 1"),
                                     ("You", "more in the first"), ("Bot", "reply 3")]
    assert shown(client, second) == [("You", "second chat"), ("Bot", "reply 2")]
    assert log(client) == shown(client, second)  # the one shown last is this browser's current one
    turn = turn_id(client.post(f"/chat?c={first}", data={"message": "undo me"}, headers=HTMX).get_data(as_text=True))
    assert client.post(f"/chat/undo?c={second}", headers=HTMX).status_code == 200  # the second's newest goes
    assert shown(client, second) == []
    assert client.post(f"/chat/replies/{turn}/regenerate?c={second}", headers=HTMX).status_code == 409
    assert client.post(f"/chat/clear?c={first}").status_code == 303
    assert shown(client, first) == [] and listed(client) == []


def test_new_conversations_are_listed_newest_first_by_their_first_message_and_deleted_one_at_a_time(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel(), CHAT_MAX_CONVERSATIONS=3))
    for text in ("one", "two", "three", "four"):
        client.post("/chat/new")
        chat(client, f"conversation {text} " + "x" * 60)
    # Titled by their first message, cut to 40 characters at a word's end.
    assert [title for _, title in listed(client)] == ["conversation four…", "conversation three…", "conversation two…"]
    [(four, _), (three, _), (two, _)] = listed(client)
    assert client.post(f"/chat/conversations/{three}/delete").status_code == 303
    assert [number for number, _ in listed(client)] == [four, two] and log(client)[0][1].startswith("conversation four")
    assert client.post(f"/chat/conversations/{four}/delete").status_code == 303  # the one shown
    assert [number for number, _ in listed(client)] == [two] and log(client)[0][1].startswith("conversation two")
    assert client.post(f"/chat/conversations/{two}/delete").status_code == 303
    assert listed(client) == [] and log(client) == []


@pytest.mark.parametrize("number", ["abc", "-1", "99999999999", "١"])
def test_a_conversation_number_that_is_not_one_is_a_404(client, number):
    assert client.get(f"/chat?c={number}").status_code == 404
    assert client.post(f"/chat?c={number}", data={"message": "hi"}, headers=HTMX).status_code == 404
