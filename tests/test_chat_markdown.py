"""The Markdown of chat bubbles: the safe subset renders, and no HTML ever gets through."""

from hypothesis import given
from hypothesis import strategies as st

from conftest import ScriptedModel, chat, log, new_client, send
from html_tree import parse
from webapp.chat_markdown import render_markdown

SAFE_TAGS = {"p", "br", "em", "strong", "code", "pre", "ul", "ol", "li", "a"}


def test_emphasis_code_lists_links_and_line_breaks_render():
    html = parse(render_markdown("*so* **very** `x = 1`\nnext line\n\n- one\n- two\n\n"
                                 "[docs](https://example.org/a)\n\n```\nprint(1)\n```"))
    assert html.find("em").text == "so" and html.find("strong").text == "very"
    assert html.find("code").text == "x = 1" and html.find("br")
    assert [item.text for item in html.find_all("li")] == ["one", "two"]
    link = html.find("a")
    assert link["href"] == "https://example.org/a" and link["rel"] == "nofollow noopener"
    assert html.find("pre").raw_text == "print(1)\n"


def test_raw_html_and_script_links_stay_text():
    html = render_markdown('<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))')
    tree = parse(html)
    assert {element.tag for element in list(tree.iter())[1:]} <= SAFE_TAGS
    assert tree.find("a") is None
    assert tree.raw_text.strip() == '<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))'


@given(st.text(alphabet=st.sampled_from(list("<>/=\"' *_`[]()-\n#!&;:abcjsvrpt")), max_size=80))
def test_no_markup_but_the_safe_subset_comes_out_of_any_message(text):
    tree = parse(render_markdown(text))
    elements = list(tree.iter())[1:]
    assert {element.tag for element in elements} <= SAFE_TAGS
    assert all(set(element.attrs) <= {"href", "rel"} for element in elements)
    assert all(element["href"].startswith(("http", "mailto:")) or ":" not in element["href"]
               for element in elements if element.tag == "a")


def test_both_bubbles_show_markdown_and_keep_the_text_as_written(make_app):
    client = new_client(make_app(CHAT_MODEL=ScriptedModel("sure: `ls -l`\n\n1. first\n2. second")))
    chat(client, "what is **ls**?\n<b>not bold</b>")
    page = parse(client.get("/chat").get_data(as_text=True))
    user, bot = page.find_all("div", class_="bubble")
    assert user.find("strong").text == "ls" and user.find("b") is None and "<b>not bold</b>" in user.raw_text
    assert bot.find("code").text == "ls -l" and [li.text for li in bot.find_all("li")] == ["first", "second"]
    assert log(client) == [("You", "what is ls?\n<b>not bold</b>"), ("Bot", "sure: ls -l\n\nfirst\nsecond")]
    assert send(client, "next").status_code == 200
