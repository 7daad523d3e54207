"""What a person sees of a streamed reply: updates, first word and how long "typing…" shows.

    .venv/bin/python bench/streaming_view.py [--messages 5] [--intervals 0.05] [--tokens 40]
                                             [--paces 0 60 100 200]

For each setting, `gunicorn wsgi:app` serves the shipped model with the embedded defaults (one
worker), and Debian's Chromium (through Playwright) sends `--messages` messages on the chat page,
one after the other. A MutationObserver in the page stamps every change of the reply's text; per
reply it counts the updates the browser showed, the time from pressing Enter to the first word
and to the finished bubble, how long the typing indicator was visible and the reply's length in
characters. Figures are medians.
"""

import argparse
import itertools
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("HXSTATE_CHROMIUM", "/usr/bin/chromium")
MESSAGES = ["hi", "how are you?", "what do you do for fun?", "do you like movies?", "tell me about your day",
            "what is your favorite food?", "where are you from?", "bye"]
WATCH = """() => {
  window.__changes = [];
  new MutationObserver(() => {
    const text = document.querySelector('.bubble.pending .reply-text');
    const typing = document.querySelector('.bubble.pending.htmx-request .typing');
    window.__changes.push([performance.now(), text ? text.textContent.length : -1, !!typing]);
  }).observe(document.querySelector('#chat-log'), {subtree: true, childList: true, characterData: true,
                                                   attributes: true});
}"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(folder, interval, tokens, pace):
    """Start gunicorn with the shipped model and these stream settings; return it and its URL."""
    port = free_port()
    env = {**os.environ, "HXSTATE_BIND": f"127.0.0.1:{port}", "HXSTATE_SECRET_KEY": secrets.token_hex(32),
           "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / f'view-{port}.sqlite3'}",
           "HXSTATE_CHAT_STREAM_INTERVAL": str(interval), "HXSTATE_CHAT_MAX_NEW_TOKENS": str(tokens),
           "HXSTATE_CHAT_STREAM_PACE": str(pace),
           "HXSTATE_RATELIMIT_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "wsgi:app"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/", timeout=5).close()
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.1)


def watch_replies(browser, url, count):
    """Per reply: (updates shown, first word s, finished s, typing visible s, characters)."""
    page = browser.new_page()
    page.goto(f"{url}/chat")
    rows = []
    for number, message in enumerate((MESSAGES * count)[:count]):
        page.evaluate(WATCH)
        page.fill("#message", message)
        sent = page.evaluate("performance.now()")
        page.press("#message", "Enter")
        page.locator(".exchange").nth(number).locator("div.bubble.bot").wait_for()
        finished = page.evaluate("performance.now()")
        changes = page.evaluate("window.__changes")
        lengths = [(at, length) for at, length, _ in changes if length > 0]
        typing = [at for at, _, shown in changes if shown]
        updates = len({length for _, length in lengths})
        first = (lengths[0][0] - sent) / 1000 if lengths else float("nan")
        shown = (max(typing) - min(typing)) / 1000 if typing else 0.0
        length = len(page.locator(".exchange").nth(number).locator("div.bubble.bot .text").inner_text().strip())
        rows.append((updates, first, (finished - sent) / 1000, shown, length))
    page.close()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.05])
    parser.add_argument("--tokens", type=int, nargs="+", default=[40])
    parser.add_argument("--paces", type=float, nargs="+", default=[0, 60, 100, 200])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as temporary, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        for tokens, interval, pace in itertools.product(args.tokens, args.intervals, args.paces):
            server, url = serve(Path(temporary), interval, tokens, pace)
            try:
                watch_replies(browser, url, 1)  # the model loads on the first reply
                rows = watch_replies(browser, url, args.messages)
            finally:
                server.terminate()
                server.wait(timeout=60)
            results.append((tokens, interval, pace, *(statistics.median(column) for column in zip(*rows))))
        browser.close()
    print(f"{'max tokens':>10} {'interval s':>10} {'pace ch/s':>9} {'updates':>8} {'first word s':>13} "
          f"{'finished s':>11} {'typing shown s':>15} {'characters':>10}")
    for tokens, interval, pace, updates, first, finished, shown, length in results:
        print(f"{tokens:>10} {interval:>10} {pace:>9.0f} {updates:>8.0f} {first:>13.3f} {finished:>11.3f} "
              f"{shown:>15.3f} {length:>10.0f}")


if __name__ == "__main__":
    sys.exit(main())
