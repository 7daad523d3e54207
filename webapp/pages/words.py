"""The word counter: an example page built only from the public state API (see README)."""

from flask import Blueprint, current_app, redirect, request, url_for

from ..limits import limited
from ..rendering import render, wants_fragment
from ..state import GlobalState, SessionState
from ..text_input import clean, shows_something

bp = Blueprint("words", __name__)

TITLE = "Word counter"
DESCRIPTION = "Both at once: your own text and counts per browser, a tally of all words shared by everyone."

my_text = SessionState("words.text", default="")
my_counts = SessionState("words.counts", default={"words": 0, "submissions": 0})
all_words = GlobalState("words.total", default=0)


def _render(fragment, status=200, **context):
    """Render the counter page, or one of its fragments for htmx."""
    context.setdefault("total", all_words.get())
    return render("words/page.html", fragment, status, text=context.pop("text", my_text.get()),
                  counts=my_counts.get(), poll_seconds=current_app.config["WORDS_POLL_SECONDS"],
                  **context)


@bp.get("/words")
def index():
    """Show this browser's text and counts, and everyone's tally; htmx polls the same URL for the tally."""
    total = all_words.get()
    return _render("words/_tally.html", total=total, fragment_etag=f"words-{total}")


@bp.post("/words")
@limited("WORDS_RATE_LIMIT")
def count():
    """Count the words of a text: for this browser, and into everyone's tally."""
    text = clean(request.form.get("text", ""))
    limit = current_app.config["WORDS_MAX_CHARS"]
    if not shows_something(text) or len(text) > limit:
        error = (f"Texts are limited to {limit} characters; this one has {len(text)}."
                 if shows_something(text) else "Type some words to count.")
        return _render("words/_counter.html", 422, text=text, error=error)
    words = len(text.split())
    my_text.set(text)
    counts = my_counts.get()
    my_counts.set({"words": words, "submissions": counts["submissions"] + 1})
    all_words.update(lambda total: total + words)
    if wants_fragment():
        return _render("words/_counted.html")
    return redirect(url_for("words.index"), 303)
