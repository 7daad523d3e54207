"""The machine's limit for a score submit: a bare Flask handler doing the submit's work, nothing else.

No session, CSRF check, rate limit or template: it parses the form's score, keeps the top three
under a lock and answers them as a small HTML list. `bench/compare_gradio.py` serves it with
gunicorn's gthread worker, as hxstate is served:

    .venv/bin/gunicorn -k gthread -w 1 --threads 8 --chdir bench 'bare_flask:create_app()'
"""

import heapq
import threading

from flask import Flask, request


def create_app():
    """A Flask app with one score board in memory: POST /scores adds a score, GET /scores shows it."""
    app = Flask(__name__)
    lowest_first = []
    lock = threading.Lock()

    def board():
        items = "".join(f"<li>{score:g}</li>" for score in sorted(lowest_first, reverse=True))
        return f'<ol id="board">{items}</ol>'

    @app.get("/scores")
    def index():
        """The board."""
        with lock:
            return board()

    @app.post("/scores")
    def submit():
        """Add a score and answer the new board."""
        value = float(request.form["score"])
        with lock:
            if len(lowest_first) < 3:
                heapq.heappush(lowest_first, value)
            elif value > lowest_first[0]:
                heapq.heapreplace(lowest_first, value)
            return board()

    return app
