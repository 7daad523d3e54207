"""The shipped chat model's costs beside an earlier one: the app's cold start, a reply, the weights.

    .venv/bin/python bench/model.py [--runs 5] [--baseline REV]

For the shipped `models/hxstate-chat` and, with `--baseline`, the same folder at a git revision
(for example the commit before a new model landed):
- cold start: `scripts/serve` on a free port, from the command to the first `200` of `GET /`
  (imports, the model's loading, gunicorn's fork), median of `--runs`;
- a 40-token reply: `ChatModel.reply` with 40 new tokens forced (min = max), torch threads as a
  single gunicorn worker sets them, median of `--runs` after a warm-up;
- the size of the weights file.
Goals (issue 14): cold start <= 3 s on 2 cores, a 40-token reply well under a second, weights <= 24 MiB.
"""

import argparse
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHIPPED = ROOT / "models" / "hxstate-chat"
CONVERSATION = ["hi", "hello! how are you?", "i'm good, what did you do today?"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cold_start(model, folder):
    """Seconds from `scripts/serve` to the first page."""
    port = free_port()
    env = {**os.environ, "HXSTATE_BIND": f"127.0.0.1:{port}", "HXSTATE_CHAT_MODEL": str(model),
           "HXSTATE_SECRET_KEY": secrets.token_hex(32),
           "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.sqlite3'}"}
    started = time.perf_counter()
    server = subprocess.Popen([str(ROOT / "scripts" / "serve")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"scripts/serve exited with {server.returncode} for {model}")
                time.sleep(0.01)
    finally:
        server.terminate()
        server.wait(timeout=60)


def reply_seconds(model, runs):
    """Median seconds of a 40-token reply, and the reply."""
    import torch

    from webapp.chat_model import ChatModel

    torch.set_num_threads(os.cpu_count() or 1)
    chat = ChatModel(str(model), max_new_tokens=40, min_new_tokens=40, seed=0)
    chat.reply(CONVERSATION)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        text = chat.reply(CONVERSATION)
        times.append(time.perf_counter() - started)
    return statistics.median(times), text


def baseline_folder(revision, folder):
    """The model folder as it was at a git revision, written under `folder`."""
    target = folder / f"hxstate-chat@{revision}"
    target.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{revision}:models/hxstate-chat"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        content = subprocess.run(["git", "show", f"{revision}:models/hxstate-chat/{name}"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        (target / name).write_bytes(content)
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision whose models/hxstate-chat to measure too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        models = [("shipped", SHIPPED)]
        if args.baseline:
            models.append((f"at {args.baseline}", baseline_folder(args.baseline, folder)))
        rows = []
        for name, model in models:
            starts = [cold_start(model, folder) for _ in range(args.runs)]
            seconds, text = reply_seconds(model, args.runs)
            size = (model / "model.safetensors").stat().st_size / 2 ** 20
            rows.append((name, statistics.median(starts), max(starts), seconds, size, text))
    print(f"{'model':<22}{'cold start s (max)':>20}{'40-token reply s':>18}{'weights MiB':>13}")
    for name, start, slowest, seconds, size, _ in rows:
        print(f"{name:<22}{start:>12.2f} ({slowest:.2f}){seconds:>18.3f}{size:>13.1f}")
    for name, *_, text in rows:
        print(f"{name}: {text!r}")


if __name__ == "__main__":
    main()
