"""Score board throughput under gunicorn: submits/s and latency at several concurrencies, side by side.

Starts `gunicorn wsgi:app` (the checked-in config, one gthread worker) on a free loopback port and
drives it with keep-alive HTTP clients in threads, the way browsers post the htmx form. Also compares
a board poll that re-renders (200) with one answered from its ETag (304). With `--code REV`, the
app's code at that git revision runs too (in a temporary worktree, on this tree's `.venv`), each row
measured on both, one after the other, so that a change is judged in one run.

    .venv/bin/python bench/scores.py [--seconds 5] [--concurrency 1 8 32] [--threads 8] [--code REV]
"""

import argparse
import http.client
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from model import worktree  # bench/model.py: a revision's code in a temporary git worktree

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port, threads=None, workers=1, root=ROOT, **settings):
    """Start `gunicorn wsgi:app` from `root` with its checked-in config (its thread count unless
    `threads` is given); `settings` are HXSTATE_* variables."""
    env = {**os.environ, "HXSTATE_SECRET_KEY": secrets.token_hex(32), "HXSTATE_BIND": f"127.0.0.1:{port}",
           "HXSTATE_WORKERS": str(workers),
           "HXSTATE_RATELIMIT_ENABLED": "false",  # every benchmark client shares one address
           **{f"HXSTATE_{name}": str(value) for name, value in settings.items()}}
    if threads:
        env["HXSTATE_THREADS"] = str(threads)
    server = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "wsgi:app"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start")


class Browser:
    """One keep-alive connection with its own session cookie and CSRF token."""

    def __init__(self, port):
        self.origin = f"http://127.0.0.1:{port}"  # a browser's posts say where they come from
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", "/scores")
        response = self.conn.getresponse()
        html = response.read().decode()
        self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
        self.token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def submit(self, value):
        self.conn.request("POST", "/scores", body=f"score={value}", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie,
            "X-CSRFToken": self.token, "Origin": self.origin, "HX-Request": "true",
            "HX-Request-Type": "partial"})
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    def poll(self, etag=None):
        headers = {"HX-Request": "true", "HX-Request-Type": "partial"}
        if etag:
            headers["If-None-Match"] = etag
        self.conn.request("GET", "/scores", headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response


def run(port, concurrency, seconds, action, client=Browser):
    """Run `action(client, i)` in `concurrency` threads for `seconds`, each thread with its own
    `client(port)` (a Browser unless told); return rate, p50, p99 (ms)."""
    browsers = [client(port) for _ in range(concurrency)]
    latencies = [[] for _ in browsers]
    stop = time.monotonic() + seconds

    def loop(k):
        i = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            action(browsers[k], i)
            latencies[k].append(time.perf_counter() - started)
            i += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    every = sorted(x for per in latencies for x in per)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
    return len(every) / elapsed, statistics.median(every) * 1000, p99 * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads")
    parser.add_argument("--code", help="a git revision whose app code to measure beside this tree's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        roots = {"this tree": ROOT}
        if args.code:
            roots[f"code at {args.code}"] = stack.enter_context(worktree(args.code, Path(folder)))
        ports = {}
        for name, root in roots.items():
            ports[name] = port = free_port()
            server = start_server(port, args.threads, root=root,
                                  SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(folder) / f'{port}.sqlite3'}")
            stack.callback(server.wait)
            stack.callback(server.terminate)
        print(f"gunicorn: 1 worker x {args.threads} threads; {os.cpu_count()} CPUs; "
              f"{args.seconds:g} s per row\n")
        print(f"{'code':<24}{'what':<28}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for n in args.concurrency:
            for name, port in ports.items():
                rate, p50, p99 = run(port, n, args.seconds, lambda b, i: b.submit(i % 1000))
                print(f"{name:<24}{'submit (POST /scores)':<28}{n:>8}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}")
        n = max(args.concurrency)
        for label in ("poll, board re-rendered", "poll, unchanged (304)"):
            for name, port in ports.items():
                tag = Browser(port).poll().getheader("ETag") if "304" in label else None
                rate, p50, p99 = run(port, n, args.seconds, lambda b, i, tag=tag: b.poll(tag))
                print(f"{name:<24}{label:<28}{n:>8}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}")


if __name__ == "__main__":
    main()
