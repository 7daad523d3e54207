"""Score board throughput under gunicorn beside a bare Flask handler: submits/s, latency and CPU, side by side.

Starts `gunicorn wsgi:app` (the checked-in config, one gthread worker) and the bare handler of
`bench/bare_flask.py` under the same worker and thread count, each on a free loopback port, and drives
them with keep-alive HTTP clients in threads, the way browsers post the htmx form. Rows: submits at
several concurrencies; at the highest, a board poll that re-renders (200), one answered from its ETag
(304) and `/scores.json`, each beside a bare GET of the bare handler's board. Each row gives req/s,
p50 and p99, the server's CPU ms per request (which the machine's noise disturbs less than rates)
and the share of a core the benchmark's clients used: the median of `--rounds` runs over every row,
every other one with the servers in the opposite order, and each ratio the median of a row's ratios
to the bare handler's row of the same round. With `--code REV ...`, the app's code at those git
revisions runs too (in a temporary worktree, on this tree's `.venv`), row by row, so that a change is
judged in one run. Ends with the goals of a submit and a poll against the bare handler.

    .venv/bin/python bench/scores.py [--seconds 5] [--concurrency 1 8 32] [--rounds 3] [--threads N]
                                     [--code REV ...]
"""

import argparse
import http.client
import os
import re
import runpy
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
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
           # Counted, as a deployment counts them, but never reached: every client shares one address.
           **{f"HXSTATE_{kind}_RATE_LIMIT": "1000000/minute" for kind in ("SCORE", "CHAT", "WORDS", "ADDRESS")},
           **{f"HXSTATE_{name}": str(value) for name, value in settings.items()}}
    if threads:
        env["HXSTATE_THREADS"] = str(threads)
    server = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "wsgi:app"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return listening(server, port, "gunicorn")


def listening(server, port, name):
    """`server` once it accepts connections on `port` (within two minutes), or stop the benchmark."""
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"{name} did not start")


class Browser:
    """One keep-alive connection with its own cookies (a CSRF cookie, then a session) and CSRF token."""

    def __init__(self, port):
        self.origin = f"http://127.0.0.1:{port}"  # a browser's posts say where they come from
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.jar = {}
        self.conn.request("GET", "/scores")
        response = self.conn.getresponse()
        html = response.read().decode()
        self.keep_cookies(response)
        self.token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    @property
    def cookie(self):
        """The Cookie header this browser sends."""
        return "; ".join(f"{name}={value}" for name, value in self.jar.items())

    def keep_cookies(self, response):
        """Keep the cookies a response sets, and forget those it deletes."""
        for header in response.headers.get_all("Set-Cookie") or []:
            name, value = header.split(";", 1)[0].split("=", 1)
            if value and "Max-Age=0" not in header:
                self.jar[name] = value
            else:
                self.jar.pop(name, None)

    def headers(self, **extra):
        """What htmx sends with a post from this browser."""
        return {"Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie,
                "X-CSRFToken": self.token, "Origin": self.origin, "HX-Request": "true",
                "HX-Request-Type": "partial", **extra}

    def submit(self, value):
        self.conn.request("POST", "/scores", body=f"score={value}", headers=self.headers())
        response = self.conn.getresponse()
        response.read()
        self.keep_cookies(response)
        assert response.status == 200, response.status

    def send(self, message):
        """Post a chat message as htmx does; return the id of the turn whose reply it then asks for."""
        self.conn.request("POST", "/chat", body=urllib.parse.urlencode({"message": message}),
                          headers=self.headers())
        response = self.conn.getresponse()
        sent = response.read().decode()
        assert response.status == 200, (response.status, sent)
        self.keep_cookies(response)  # the first message gives the browser its session
        return re.search(r'id="exchange-(\d+)"', sent).group(1)

    def chat(self, message):
        """Send a chat message as a plain form does: the answer comes once the reply is written, so
        the model is loaded by then (a lone worker loads it in the background as it starts)."""
        self.conn.request("POST", "/chat", body=f"message={message}", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie,
            "X-CSRFToken": self.token, "Origin": self.origin})
        response = self.conn.getresponse()
        response.read()
        self.keep_cookies(response)
        assert response.status == 303, response.status

    def get(self, path, headers=None):
        """A GET with this browser's cookies; return the response, read."""
        self.conn.request("GET", path, headers={"Cookie": self.cookie, **(headers or {})})
        response = self.conn.getresponse()
        response.read()
        assert response.status in (200, 304), response.status
        return response

    def poll(self, etag=None):
        headers = {"HX-Request": "true", "HX-Request-Type": "partial"}
        if etag:
            headers["If-None-Match"] = etag
        return self.get("/scores", headers)


class BareClient:
    """A keep-alive client of the bare Flask handler (bench/bare_flask.py): the same form post."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def submit(self, value):
        self.conn.request("POST", "/scores", body=f"score={value}",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    def get(self, path, headers=None):
        self.conn.request("GET", "/scores")  # the bare handler's one page, whatever is asked
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        return response

    def poll(self, etag=None):
        return self.get("/scores")


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


def cpu_seconds(pid):
    """CPU seconds (user and system) used so far by a gunicorn master and its workers."""
    from scale import tree_pids  # bench/scale.py imports this module

    total = 0
    for process in tree_pids(pid):
        with open(f"/proc/{process}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def measured(server, port, concurrency, seconds, action, client):
    """`run`, with the server's CPU ms per request and the share of a core the clients used."""
    server_cpu, client_cpu, wall = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
    rate, p50, p99 = run(port, concurrency, seconds, action, client)
    wall = time.perf_counter() - wall
    requests = rate * seconds
    return {"rate": rate, "p50": p50, "p99": p99,
            "server_ms": (cpu_seconds(server.pid) - server_cpu) * 1000 / max(requests, 1),
            "client_core": (time.process_time() - client_cpu) / wall}


def start_bare(port, threads):
    """The bare Flask handler under the same gunicorn worker as hxstate."""
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-k", "gthread", "-w", "1", "--threads",
         str(threads), "-b", f"127.0.0.1:{port}", "bare_flask:create_app()"],
        cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return listening(server, port, "the bare handler")


ROWS = {  # what, and the action each client repeats
    "submit (POST /scores)": lambda b, i: b.submit(i % 1000),
    "poll, board re-rendered": lambda b, i: b.poll(),
    "poll, unchanged (304)": None,  # needs the board's ETag: see main
    "GET /scores.json": lambda b, i: b.get("/scores.json"),
}


def config_threads():
    """The thread count of the checked-in gunicorn config (HXSTATE_THREADS or its default)."""
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"]


def goals(summary, names, n):
    """The goals of a score submit and a poll against the bare handler, each with the figure reached
    (a ratio: the median over the rounds of the row against the bare handler's row of its round)."""
    lines = []
    for name in names:
        submit = summary[name, "submit (POST /scores)", n]
        rate, cpu = submit["x rate"], submit["x cpu"]
        checks = [
            (f"submit at {n} clients >= 0.5 x bare submits/s, or server CPU <= 2 x bare",
             f"{rate:.2f} x, CPU {cpu:.2f} x", rate >= 0.5 or cpu <= 2),
            (f"submit p99 at {n} clients <= 150 ms", f"{submit['p99']:.0f} ms", submit["p99"] <= 150)]
        for what in ("poll, unchanged (304)", "GET /scores.json"):
            ratio = summary[name, what, n]["x rate"]
            checks.append((f"{what} >= 0.8 x a bare GET", f"{ratio:.2f} x", ratio >= 0.8))
        lines += [f"- {name}: {goal}: {reached} ({'met' if met else 'missed'})" for goal, reached, met in checks]
    return "\n".join(lines)


def paired(ours, theirs):
    """The median of the ratios of `ours` to `theirs`, figures taken in the same rounds, in order (so
    that the machine's drift between rounds cancels out)."""
    return statistics.median(a / b for a, b in zip(ours, theirs))


def summarize(rounds):
    """Per row, the median over the rounds of each figure, and of its ratio to the bare handler's row
    of the same round (paired, so that the machine's drift between rounds cancels out)."""
    summary = {}
    for (name, key, clients), rows in rounds.items():
        row = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        bare = rounds.get(("bare Flask", key if key == "submit (POST /scores)" else "GET", clients))
        if bare and name != "bare Flask":
            row["x rate"] = paired([r["rate"] for r in rows], [b["rate"] for b in bare])
            row["x cpu"] = paired([r["server_ms"] for r in rows], [b["server_ms"] for b in bare])
        summary[name, key, clients] = row
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=None,
                        help="gunicorn threads (default: the checked-in config's)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times over every row, every other time the servers the other way round")
    parser.add_argument("--code", nargs="+", default=[], metavar="REV",
                        help="git revisions whose app code to measure beside this tree's")
    args = parser.parse_args()
    threads = args.threads or config_threads()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        roots = {"this tree": ROOT}
        for revision in args.code:
            roots[f"code at {revision}"] = stack.enter_context(worktree(revision, Path(folder)))
        port = free_port()
        bare = start_bare(port, threads)
        stack.callback(bare.wait)
        stack.callback(bare.terminate)
        servers = {"bare Flask": (bare, port, BareClient)}
        for name, root in roots.items():
            port = free_port()
            server = start_server(port, threads, root=root,
                                  SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(folder) / f'{port}.sqlite3'}")
            stack.callback(server.wait)
            stack.callback(server.terminate)
            servers[name] = (server, port, Browser)
        for server, port, client in servers.values():  # warm up: the model, first requests, lazy imports
            if client is Browser:
                client(port).chat("hello")
            run(port, 8, 1, ROWS["submit (POST /scores)"], client)
        print(f"gunicorn: 1 worker x {threads} threads; {os.cpu_count()} CPUs; {args.rounds} rounds of "
              f"{args.seconds:g} s per row, medians; the clients run on the same CPUs\n")
        n = max(args.concurrency)
        plan = [("submit (POST /scores)", c) for c in args.concurrency]
        plan += [(what, n) for what in ("poll, board re-rendered", "poll, unchanged (304)", "GET /scores.json")]
        rounds = {}
        for round_ in range(args.rounds):
            # Every other round the other way round, so that no server always runs first.
            order = list(servers.items())[::-1 if round_ % 2 else 1]
            for what, clients in plan:
                for name, (server, port, client) in order:
                    if client is BareClient and what != "submit (POST /scores)":
                        if len(rounds.get((name, "GET", clients), ())) > round_:
                            continue
                        key, action = "GET", lambda b, i: b.get("/scores")
                    else:
                        key, action = what, ROWS[what]
                        if what == "poll, unchanged (304)":
                            tag = Browser(port).poll().getheader("ETag")
                            action = lambda b, i, tag=tag: b.poll(tag)  # noqa: E731
                    rounds.setdefault((name, key, clients), []).append(
                        measured(server, port, clients, args.seconds, action, client))
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        summary = summarize(rounds)
        print(f"{'code':<22}{'what':<26}{'clients':>8}{'req/s':>9}{'x bare':>8}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'CPU ms/req':>11}{'x bare':>8}{'client core':>12}")
        for (name, key, clients), row in summary.items():
            label = "GET /scores (bare)" if key == "GET" else key
            ratio = lambda k: f"{row[k]:.2f}" if k in row else "1.00"  # noqa: E731
            print(f"{name:<22}{label:<26}{clients:>8}{row['rate']:>9.0f}{ratio('x rate'):>8}{row['p50']:>9.2f}"
                  f"{row['p99']:>9.2f}{row['server_ms']:>11.2f}{ratio('x cpu'):>8}{row['client_core']:>11.0%}")
        print()
        print(goals(summary, list(roots), n))


if __name__ == "__main__":
    main()
