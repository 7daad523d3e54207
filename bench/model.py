"""The shipped chat model's costs: the app's cold start and first reply, a reply, the weights.

    .venv/bin/python bench/model.py [--runs 5] [--baseline REV] [--code REV]

For the shipped `models/hxstate-chat` and, with `--baseline`, the same folder at a git revision
(for example the commit before a new model landed); with `--code`, also the app's code at a git
revision (a temporary worktree sharing this `.venv`) serving the shipped model, so that two
versions of the start-up are measured side by side in one run:
- cold start: `scripts/serve` on a free port, from the command to the first `200` of `GET /`
  (imports, the app's set-up, gunicorn's fork), median of `--runs`;
- first reply: from the same command to the end of the first chat reply (a plain form post, which
  answers once the reply is stored), so that whatever loading a page skips is counted here;
- a 40-token reply: `ChatModel.reply` with 40 new tokens forced (min = max), torch threads as a
  single gunicorn worker sets them, median of `--runs` after a warm-up;
- the size of the weights file.
Goals (issue 14): cold start <= 3 s on 2 cores, a 40-token reply well under a second, weights <= 24 MiB.
"""

import argparse
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
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


def cold_start(model, folder, root=ROOT):
    """Seconds from `scripts/serve` (of the tree at `root`) to the first page, and to the first reply."""
    port = free_port()
    env = {**os.environ, "HXSTATE_BIND": f"127.0.0.1:{port}", "HXSTATE_CHAT_MODEL": str(model),
           "HXSTATE_SECRET_KEY": secrets.token_hex(32),
           "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / f'bench-{port}.sqlite3'}"}
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([str(root / "scripts" / "serve")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/", timeout=5) as response:
                    if response.status == 200:
                        first_page = time.perf_counter() - started
                        break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"scripts/serve exited with {server.returncode} for {model}")
                time.sleep(0.01)
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(f"{base}/chat", timeout=60) as response:
            token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode()).group(1)
        form = urllib.parse.urlencode({"message": CONVERSATION[0], "csrf_token": token}).encode()
        with browser.open(f"{base}/chat", data=form, timeout=120) as response:
            response.read()  # answered once the reply is stored (post/redirect/get)
        return first_page, time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)


@contextmanager
def worktree(revision, folder):
    """The repository at `revision` in a temporary git worktree that uses this tree's `.venv`."""
    path = folder / f"code@{revision}"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        (path / ".venv").symlink_to(ROOT / ".venv")
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


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
    parser.add_argument("--code", help="a git revision whose app code to start too, with the shipped model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary, ExitStack() as stack:
        folder = Path(temporary)
        runs = [("this tree", SHIPPED, ROOT)]
        if args.baseline:
            runs.append((f"model at {args.baseline}", baseline_folder(args.baseline, folder), ROOT))
        if args.code:
            runs.append((f"code at {args.code}", SHIPPED, stack.enter_context(worktree(args.code, folder))))
        rows = []
        for round_ in range(args.runs):  # alternate, so that a busy moment costs every row alike
            for number, (name, model, root) in enumerate(runs):
                if round_ == 0:
                    rows.append([])
                rows[number].append(cold_start(model, folder, root))
        replies = {model: reply_seconds(model, args.runs) for _, model, _ in runs}
    print(f"{'what':<24}{'cold start s (max)':>20}{'first reply s (max)':>21}{'40-token reply s':>18}"
          f"{'weights MiB':>13}")
    for (name, model, _), starts in zip(runs, rows):
        pages, firsts = zip(*starts)
        size = (model / "model.safetensors").stat().st_size / 2 ** 20
        print(f"{name:<24}{statistics.median(pages):>12.2f} ({max(pages):.2f}){statistics.median(firsts):>13.2f}"
              f" ({max(firsts):.2f}){replies[model][0]:>18.3f}{size:>13.1f}")
    for name, model, _ in runs:
        print(f"{name}: {replies[model][1]!r}")


if __name__ == "__main__":
    main()
