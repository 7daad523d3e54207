"""The score board page: global state that every visitor shares."""

from flask import Blueprint, current_app, redirect, request, url_for

from ..limits import limited
from ..rendering import render, wants_fragment
from ..score_board import current_board
from ..score_chart import bar_chart
from ..score_values import InvalidScore, format_score, parse_score
from ..state import SessionState

bp = Blueprint("scores", __name__)
bp.add_app_template_filter(format_score, "score")
bp.add_app_template_filter(bar_chart, "bar_chart")

TITLE = "Score board"
DESCRIPTION = "Global state: submit a score; everyone sees the same top scores."

last_score = SessionState("scores.last", default=None)


def _render(fragment, status=200, **context):
    """Render the board page, or one of its fragments for htmx."""
    board = context.pop("board", None) or current_board().snapshot()
    return render("scores/page.html", fragment, status, board=board, last_score=last_score,
                  poll_seconds=current_app.config["SCORE_POLL_SECONDS"], **context)


@bp.get("/scores")
def index():
    """Show the board page; htmx polls the same URL for the board fragment."""
    board = current_board().snapshot()
    return _render("scores/_board.html", board=board, fragment_etag=board.etag)


@bp.post("/scores")
@limited("SCORE_RATE_LIMIT")
def submit():
    """Add a score; htmx gets a fresh form and the new board, a plain form a redirect."""
    text = request.form.get("score", "")
    try:
        value = parse_score(text, current_app.config["SCORE_MAX_ABS"])
    except InvalidScore as error:
        return _render("scores/_form.html", 422, error=str(error), value=text)
    board = current_board().submit(value)
    last_score.set(value)
    if wants_fragment():
        return _render("scores/_submitted.html", board=board)
    return redirect(url_for("scores.index"), 303)


@bp.get("/scores.json")
def data():
    """The board for programs: the top scores and the submission count."""
    board = current_board().snapshot()
    return board.as_json()
