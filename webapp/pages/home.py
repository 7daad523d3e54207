"""The home page: a list of the registered pages."""

from flask import Blueprint, render_template

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    """List every registered page with its description."""
    return render_template("home/page.html")
