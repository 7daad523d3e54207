"""What a chat turn costs: raw `generate` vs the app's full turn (send + reply), side by side.

Both use the same model and the same conversation. The app's turn goes through Flask, the CSRF
check, the SQLite session and history stores and the template, the way a browser's two requests do.

    .venv/bin/python bench/chat.py [--turns 20] [--model models/hxstate-chat]
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webapp import ROOT, create_app  # noqa: E402

HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}
MESSAGES = ["hello", "how are you?", "what is your name?", "tell me a joke", "what do you like?"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--model", default=str(ROOT / "models" / "hxstate-chat"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"SECRET_KEY": "bench", "CHAT_MODEL": args.model, "RATELIMIT_ENABLED": False,
                          "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/bench.sqlite3"})
        model = app.extensions["chat_model"]
        client = app.test_client()
        page = client.get("/chat").get_data(as_text=True)
        client.environ_base["HTTP_X_CSRFTOKEN"] = re.search(
            r'name="csrf_token" value="([^"]+)"', page).group(1)
        raw, full, sends = [], [], []
        history = []
        for k in range(args.turns):
            message = MESSAGES[k % len(MESSAGES)]
            started = time.perf_counter()
            reply = model.reply(history + [message])
            raw.append(time.perf_counter() - started)

            started = time.perf_counter()
            sent = client.post("/chat", data={"message": message}, headers=HTMX)
            sends.append(time.perf_counter() - started)
            turn = re.search(r'id="exchange-(\d+)"', sent.get_data(as_text=True)).group(1)
            answered = client.post(f"/chat/replies/{turn}", headers=HTMX)
            full.append(time.perf_counter() - started)
            assert answered.status_code == 200
            history += [message, reply]

    def ms(values):
        return f"{statistics.median(values) * 1000:8.1f}{max(values) * 1000:9.1f}"

    print(f"model: {args.model}; {args.turns} turns of one growing conversation; {os.cpu_count()} CPUs\n")
    print(f"{'what':<36}{'p50 ms':>8}{'max ms':>9}")
    print(f"{'raw ChatModel.reply (generate)':<36}{ms(raw)}")
    print(f"{'app: message echoed (1st request)':<36}{ms(sends)}")
    print(f"{'app: full turn (both requests)':<36}{ms(full)}")
    overhead = [f - r for f, r in zip(full, raw)]
    print(f"{'app cost beyond generate':<36}{ms(overhead)}")
    print(f"\nfull turn / raw generate (p50): {statistics.median(full) / statistics.median(raw):.3f}")


if __name__ == "__main__":
    main()
