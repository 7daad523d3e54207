"""hxstate beside Gradio running the same two demos, in one run: prints the ratios, writes bench/RESULTS.md.

Starts on loopback hxstate (`gunicorn wsgi:app`: gunicorn.conf.py, embedded defaults), the two
demos of Gradio's State guide under Gradio (bench/gradio_demos.py, in .venv-bench), and a bare
Flask handler under the same gunicorn worker (bench/bare_flask.py) as the machine's limit for a
score submit; for a chat reply the limit is the model's `generate` in this process. Then, round
after round, alternating between them:

- score submits/s, p50/p99 latency and the server's CPU per submit at 1, 8 and 32 concurrent
  keep-alive clients, each sending what a browser sends: hxstate's htmx POST (session cookie, CSRF
  header, Origin), Gradio's queue (POST /gradio_api/queue/join, then the event stream of GET
  /gradio_api/queue/data);
- at 32 clients, hxstate's board polls answered 304 and /scores.json beside a bare GET;
- chat turns for 1 and 8 concurrent chatters, each with a conversation of its own: turn time
  (message sent -> reply complete), time to first token (-> first body chunk with reply text) and
  tokens/s, beside raw `generate` on the same prompts (8 chatters: one batch of 8 prompts); both
  servers stream the reply;
- the share of a core the benchmark's own clients used in every row;
- server memory after the run, and cold start (process started -> first page answered).

    scripts/bench [--seconds 10] [--rounds 3] [--turns 8] [--model models/hxstate-chat]

(scripts/bench creates .venv and .venv-bench, then runs this file with .venv/bin/python.)
"""

import argparse
import datetime
import html
import http.client
import json
import os
import platform
import re
import runpy
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio_demos  # noqa: E402
from scale import pss_kib, tree_pids  # noqa: E402
from scores import (ROOT, BareClient, Browser, free_port, measured, paired, run,  # noqa: E402
                    start_bare, start_server)

BENCH = ROOT / "bench"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
MESSAGES = ["hello", "how are you?", "what is your name?", "tell me a joke", "what do you like?",
            "do you like music?", "good bye", "what is your favourite book?"]
DEFAULTS = {"seconds": 10.0, "rounds": 3, "turns": 8}
CONCURRENCY = (1, 8, 32)
CHATTERS = (1, 8)
# hxstate's gunicorn settings (worker class, workers, threads), which the bare handler gets too.
GUNICORN = {name: value for name, value in runpy.run_path(str(ROOT / "gunicorn.conf.py")).items()
            if name in ("worker_class", "workers", "threads")}


# --- servers -----------------------------------------------------------------------------------

def wait_for_page(port, path, started, process, timeout=300, log=None):
    """Seconds from `started` until GET `path` answers 200; fail if the process exits first."""
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            output = log.read_text()[-3000:] if log else ""
            raise SystemExit(f"the server on port {port} exited with {process.returncode}\n{output}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"no answer on port {port} within {timeout} s")


class Server:
    """A server process on a loopback port, with how long it took to answer its first page."""

    def __init__(self, name, process, port, cold_start):
        self.name, self.process, self.port, self.cold_start = name, process, port, cold_start

    def memory_mib(self):
        """PSS and RSS of the server's processes, in MiB (PSS splits shared pages between them)."""
        pids = tree_pids(self.process.pid)
        rss = 0
        for pid in pids:
            with open(f"/proc/{pid}/status") as file:
                rss += int(re.search(r"^VmRSS:\s+(\d+) kB", file.read(), re.M).group(1))
        return sum(pss_kib(pid) for pid in pids) / 1024, rss / 1024

    def stop(self):
        self.process.terminate()
        self.process.wait()


def start_hxstate(folder, model):
    """hxstate as scripts/serve runs it, on a database of its own, streaming replies as fast as they
    are written, as Gradio does (by default it shows a fast model's reply at a reading pace)."""
    started = time.monotonic()
    port = free_port()
    process = start_server(port, CHAT_MODEL=model, CHAT_STREAM_PACE=0,
                           SQLALCHEMY_DATABASE_URI=f"sqlite:///{folder}/hxstate.sqlite3")
    return Server("hxstate", process, port, wait_for_page(port, "/scores", started, process))


def start_gradio(folder, model):
    """The Gradio demos, in the benchmark's own virtualenv."""
    started = time.monotonic()
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = Path(folder) / "gradio.log"
    with open(log, "ab") as output:
        process = subprocess.Popen([str(BENCH_PYTHON), str(BENCH / "gradio_demos.py"), "--port",
                                    str(port), "--model", str(model)], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    return Server("Gradio", process, port, wait_for_page(port, "/", started, process, log=log))


def start_limit(folder, model):
    """The bare Flask handler under a gunicorn worker set up as hxstate's (bench/scores.py)."""
    started = time.monotonic()
    port = free_port()
    process = start_bare(port, GUNICORN["threads"])
    return Server("bare Flask", process, port, wait_for_page(port, "/scores", started, process))


# --- clients: what a browser sends ----------------------------------------------------------------

def read_timed(response, started, has_text):
    """Read a response chunk by chunk; return the body and the seconds from `started` to the first
    chunk after which `has_text(body)` holds (None if it never does)."""
    body, first = b"", None
    while chunk := response.read1(65536):
        body += chunk
        if first is None and has_text(body):
            first = time.perf_counter() - started
    body += response.read()  # nothing left, but it marks the response done: the connection is reused
    return body.decode(), first


def reply_text(body, streamed=False):
    """The reply's text in what a reply request answered so far: the bot bubble of the HTML
    fragment or, for a text/event-stream, of its newest complete event (each event appends the new
    text; the last one is the whole finished bubble). The one place to adapt to another format."""
    if streamed:
        events = [event for event in body.split("\n\n")[:-1]  # the part after the last is unfinished
                  if event.strip() and not event.startswith(":")]
        body = "\n".join(line[5:].removeprefix(" ") for line in (events[-1] if events else "").splitlines()
                         if line.startswith("data:"))
    body = re.sub(r'<em class="note">.*?</em>', "", body, flags=re.S)  # "(cut off: ...)" is no text
    body = re.sub(r'<div class="reply-actions">.*', "", body, flags=re.S)  # Copy, Like, ... are no text
    text = html.unescape(re.sub(r"<[^>]*>", "", body))
    return " ".join(text.replace("Bot:", "", 1).split())


class HxstateChatter(Browser):
    """A browser on hxstate's chat page: the message, then the reply request it chains."""

    def turn(self, message):
        """Send one message and read its reply; return turn seconds, first-token seconds, reply."""
        started = time.perf_counter()
        turn = self.send(message)
        # htmx's event-stream extension asks for a stream; a server that does not stream ignores it.
        self.conn.request("POST", f"/chat/replies/{turn}",
                          headers=self.headers(Accept="text/event-stream, text/html"))
        response = self.conn.getresponse()
        streamed = "text/event-stream" in (response.getheader("Content-Type") or "")
        body, first = read_timed(response, started,
                                 lambda b: bool(reply_text(b.decode(errors="ignore"), streamed)))
        assert response.status == 200, (response.status, body)
        took = time.perf_counter() - started
        return took, took if first is None else first, reply_text(body, streamed)


class GradioBrowser:
    """A browser on the Gradio demos: one session hash, events as its page sends them, one connection."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.session_hash = secrets.token_hex(6)
        self.conn.request("GET", "/config")  # what the page's script loads first
        response = self.conn.getresponse()
        config = json.loads(response.read())
        self.events = {}  # function name -> (fn_index, trigger_id), as the page sends them
        for dependency in config["dependencies"]:
            if dependency.get("api_name") in ("track_score", "user", "bot"):
                targets = dependency["targets"]
                self.events[dependency["api_name"]] = (dependency["id"], targets[0][0] if targets else None)
        # `.then(bot)` is sent with the trigger of the event it follows: the message box's submit.
        self.events["bot"] = (self.events["bot"][0], self.events["user"][1])
        self.history = []

    def _body(self, name, data):
        fn_index, trigger_id = self.events[name]
        return json.dumps({"data": data, "event_data": None, "fn_index": fn_index,
                           "trigger_id": trigger_id, "session_hash": self.session_hash})

    def run(self, name, data):
        """Call an event that skips the queue (`queue=False`), as the page does; return its output."""
        self.conn.request("POST", "/gradio_api/run/predict", headers={"Content-Type": "application/json"},
                          body=self._body(name, data))
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return json.loads(body)["data"]

    def call(self, name, data, has_text=lambda body: False, started=None):
        """Join the queue with `data` and read the event stream until the event completes; return
        the output data and the seconds from `started` (or now) to the first chunk after which
        `has_text` holds."""
        started = started or time.perf_counter()
        self.conn.request("POST", "/gradio_api/queue/join", headers={"Content-Type": "application/json"},
                          body=self._body(name, data))
        response = self.conn.getresponse()
        joined = response.read()
        assert response.status == 200, (response.status, joined)
        self.conn.request("GET", f"/gradio_api/queue/data?session_hash={self.session_hash}")
        body, first = read_timed(self.conn.getresponse(), started, has_text)
        for line in body.splitlines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message.get("msg") == "process_completed":
                    assert message["success"], message
                    return message["output"]["data"], first
        raise AssertionError(f"no completed event in {body!r}")

    def submit(self, value):
        """Submit a score, as the Interface's Submit button does."""
        self.call("track_score", [value])

    def turn(self, message):
        """Send one chat message as the page does (`user` without the queue, then `bot` streaming
        through it); return as HxstateChatter.turn, the first token being the first streamed piece."""
        started = time.perf_counter()
        _, self.history = self.run("user", [message, self.history])
        [self.history], first = self.call(
            "bot", [self.history],
            lambda body: b'"process_generating"' in body or b'"process_completed"' in body, started)
        reply = self.history[-1]["content"]
        if not isinstance(reply, str):
            reply = "".join(part.get("text", "") for part in reply)
        took = time.perf_counter() - started
        return took, took if first is None else first, reply


# --- chat ---------------------------------------------------------------------------------------

def conversation(k, turns):
    """The messages of chatter `k`: the same list, started at a different place."""
    return [MESSAGES[(k + t) % len(MESSAGES)] for t in range(turns)]


def chat_run(make_chatter, chatters, turns, count_tokens):
    """`chatters` concurrent conversations of `turns` turns; return per-turn seconds, first-token
    seconds, tokens/s over the run, and the replies of conversation 0."""
    clients = [make_chatter() for _ in range(chatters)]
    results = [[] for _ in clients]

    def talk(k):
        for message in conversation(k, turns):
            results[k].append(clients[k].turn(message))

    threads = [threading.Thread(target=talk, args=(k,)) for k in range(chatters)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [r for per in results for r in per]
    if len(every) != chatters * turns:
        raise SystemExit("a chatter failed (see above)")
    tokens = sum(count_tokens(reply) for _, _, reply in every)
    return ([t for t, _, _ in every], [f for _, f, _ in every], tokens / elapsed,
            [reply for _, _, reply in results[0]])


class RawModel:
    """The limit for chat: the model's `generate` in this process, on the prompts the servers build."""

    def __init__(self, model):
        import torch

        self.torch = torch
        self.threads = torch.get_num_threads()
        self.tokenizer, self.model = gradio_demos.load(model)

    def count_tokens(self, text):
        """Tokens of a reply's text, counted the same way for every server."""
        return len(self.tokenizer.encode(text))

    def generate(self, conversations, first_token_only=False):
        """Replies to a batch of conversations, one `generate` call (prompts padded on the left)."""
        eos = self.tokenizer.eos_token_id
        prompts = [gradio_demos.prompt_ids(self.tokenizer, self.model.config.n_positions, texts)
                   for texts in conversations]
        width = max(len(p) for p in prompts)
        ids = self.torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
        mask = self.torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        settings = dict(gradio_demos.GENERATION)
        if first_token_only:
            settings["max_new_tokens"] = 1
        with self.torch.inference_mode():
            output = self.model.generate(ids, attention_mask=mask, pad_token_id=eos,
                                         eos_token_id=eos, **settings)
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]

    def run(self, chatters, turns):
        """The chatters' conversations turn by turn, all chatters in one batch; return as chat_run
        (the time to first token is a `generate` of one token on the same prompts). Each call is
        timed with torch's thread count and with one thread (which a machine busy with other work
        can make much faster), and the faster kept: the limit is the best the model can do."""
        histories = [[] for _ in range(chatters)]
        messages = [conversation(k, turns) for k in range(chatters)]
        per_turn, first, tokens, elapsed = [], [], 0, 0.0

        def fastest(*args, **kwargs):
            times = []
            for threads in (self.threads, 1):
                self.torch.set_num_threads(threads)
                started = time.perf_counter()
                result = self.generate(*args, **kwargs)
                times.append(time.perf_counter() - started)
            self.torch.set_num_threads(self.threads)
            return result, min(times)

        for t in range(turns):
            prompts = [history + [messages[k][t]] for k, history in enumerate(histories)]
            first += [fastest(prompts, first_token_only=True)[1]] * chatters
            replies, took = fastest(prompts)
            elapsed += took
            per_turn += [took] * chatters
            tokens += sum(self.count_tokens(reply) for reply in replies)
            for k, reply in enumerate(replies):
                histories[k] += [messages[k][t], reply]
        return per_turn, first, tokens / elapsed, histories[0][1::2]


# --- measuring, alternating -----------------------------------------------------------------------

def p50(values):
    return statistics.median(values)


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(args, folder):
    """Start the servers (timing cold starts, alternating), then run the rounds; return the figures."""
    starters = {"hxstate": start_hxstate, "Gradio": start_gradio, "limit": start_limit}
    cold = {name: [] for name in starters}
    servers = {}
    try:
        for round_ in range(args.rounds):
            for name, start in starters.items():
                server = start(folder, args.model)
                cold[name].append(server.cold_start)
                if round_ < args.rounds - 1:
                    server.stop()
                else:
                    servers[name] = server
        print(f"cold starts done ({args.rounds} of each)", file=sys.stderr)
        return measure_running(args, servers, cold)
    finally:
        for server in servers.values():
            server.stop()


def measure_running(args, servers, cold):
    """The score and chat rounds on running servers, and their memory at the end."""
    hx, gr, limit = servers["hxstate"], servers["Gradio"], servers["limit"]
    clients = {"hxstate": (hx.port, Browser), "Gradio": (gr.port, GradioBrowser),
               "limit": (limit.port, BareClient)}
    submit = lambda client, i: client.submit(i % 1000)  # noqa: E731
    for port, client in clients.values():  # warm up: first requests, lazy imports, caches
        run(port, 8, 1, submit, client=client)
    raw = RawModel(args.model)
    chatters = {"hxstate": lambda: HxstateChatter(hx.port), "Gradio": lambda: GradioBrowser(gr.port)}
    for make in chatters.values():
        chat_run(make, 1, 2, raw.count_tokens)
    raw.run(1, 2)

    scores = {(name, n): [] for name in clients for n in CONCURRENCY}
    # The share of one core this process (the benchmark's clients) used during each row.
    client_cpu = {}
    chats = {(name, n): [] for name in [*chatters, "limit"] for n in CHATTERS}

    def timed(row, action):
        cpu, wall = time.process_time(), time.perf_counter()
        result = action()
        client_cpu.setdefault(row, []).append((time.process_time() - cpu) / (time.perf_counter() - wall))
        return result

    # At the highest concurrency, hxstate's board polls beside a bare GET of the bare handler's board.
    gets = {("hxstate", "poll"): [], ("hxstate", "json"): [], ("limit", "get"): []}
    order = list(clients)
    for round_ in range(args.rounds):
        order = order[1:] + order[:1]  # a different one goes first each round
        for n in CONCURRENCY:
            for name in order:
                port, client = clients[name]
                row = timed((f"score submits, {n} client{'s' * (n > 1)}", name), lambda: measured(
                    servers[name].process, port, n, args.seconds, submit, client))
                scores[name, n].append((row["rate"], row["p50"], row["p99"], row["server_ms"]))
        n = max(CONCURRENCY)
        etag = Browser(hx.port).poll().getheader("ETag")
        for (name, what), results in gets.items():
            port, client = clients[name]
            action = {"poll": lambda b, i: b.poll(etag), "json": lambda b, i: b.get("/scores.json"),
                      "get": lambda b, i: b.get("/scores")}[what]
            row = timed((f"board reads ({what}), {n} clients", name), lambda: measured(
                servers[name].process, port, n, args.seconds, action, client))
            results.append(row["rate"])
        for n in CHATTERS:
            for name in order:
                if name == "limit":
                    limit = raw.run(n, args.turns)
                else:
                    chats[name, n].append(timed(
                        (f"chat, {n} chatter{'s' * (n > 1)}", name),
                        lambda: chat_run(chatters[name], n, args.turns, raw.count_tokens)))
            # The limit is timed a second time after the servers' rows, and each call's faster time
            # kept, so that a burst of other work on the machine does not pass for the model's speed.
            again = raw.run(n, args.turns)
            chats["limit", n].append(([min(a, b) for a, b in zip(limit[0], again[0])],
                                      [min(a, b) for a, b in zip(limit[1], again[1])],
                                      max(limit[2], again[2]), limit[3]))
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
    memory = {name: server.memory_mib() for name, server in servers.items()}
    return scores, gets, chats, memory, cold, client_cpu


# --- the table ----------------------------------------------------------------------------------

def figures(scores, gets, chats, memory, cold):
    """Rows of (what, hxstate, Gradio, limit, decimals): medians over rounds, per-turn times pooled."""
    rows = []
    for k, label in ((0, "score submits/s"), (1, "score submit p50 ms"), (2, "score submit p99 ms"),
                     (3, "server CPU ms per score submit")):
        for n in CONCURRENCY:
            values = [statistics.median(r[k] for r in scores[name, n])
                      for name in ("hxstate", "Gradio", "limit")]
            rows.append((f"{label}, {n} client{'s' * (n > 1)}", *values, {0: 0, 3: 2}.get(k, 1)))
    n = max(CONCURRENCY)
    bare_get = statistics.median(gets["limit", "get"])
    rows.append((f"board poll answered 304 req/s, {n} clients (limit: bare GET)",
                 statistics.median(gets["hxstate", "poll"]), None, bare_get, 0))
    rows.append((f"GET /scores.json req/s, {n} clients (limit: bare GET)",
                 statistics.median(gets["hxstate", "json"]), None, bare_get, 0))

    def pooled(name, n, k):
        return [x for r in chats[name, n] for x in r[k]]

    for n in CHATTERS:
        who = f"{n} chatter{'s' * (n > 1)}"
        for label, k, stat in (("chat turn p50 ms", 0, p50), ("chat turn p99 ms", 0, p99),
                               ("time to first token p50 ms", 1, p50)):
            rows.append((f"{label}, {who}",
                         *[stat(pooled(name, n, k)) * 1000 for name in ("hxstate", "Gradio", "limit")], 1))
    tokens = {(name, n): statistics.median(r[2] for r in chats[name, n]) for name, n in chats}
    for n in CHATTERS:
        rows.append((f"chat tokens/s, {n} chatter{'s' * (n > 1)}",
                     *[tokens[name, n] for name in ("hxstate", "Gradio", "limit")], 0))
    rows.append(("tokens/s, 8 chatters / 1 chatter",
                 *[tokens[name, 8] / tokens[name, 1] for name in ("hxstate", "Gradio", "limit")], 2))
    rows.append(("server memory after the run, PSS MiB", memory["hxstate"][0], memory["Gradio"][0],
                 None, 0))
    rows.append(("server memory after the run, RSS MiB", memory["hxstate"][1], memory["Gradio"][1],
                 None, 0))
    rows.append(("cold start to first page, s", *[statistics.median(cold[name])
                                                  for name in ("hxstate", "Gradio")], None, 2))
    return rows, tokens


def table(rows):
    """The figures as a Markdown table with the ratios hxstate/Gradio and hxstate/limit."""
    def cell(value, decimals):
        return "" if value is None else f"{value:,.{decimals}f}"

    lines = ["| measure | hxstate | Gradio | limit | hxstate / Gradio | hxstate / limit |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for what, hx, gr, limit, decimals in rows:
        lines.append(f"| {what} | {cell(hx, decimals)} | {cell(gr, decimals)} | {cell(limit, decimals)} "
                     f"| {cell(hx / gr if gr else None, 2)} | {cell(hx / limit if limit else None, 2)} |")
    return "\n".join(lines)


def client_table(client_cpu):
    """The share of one core the benchmark's own clients used in each row, median over rounds (they
    run on the same cores as the servers: what they take, the servers lack)."""
    rows = list(dict.fromkeys(row for row, _ in client_cpu))
    lines = ["| benchmark clients' CPU, % of one core | hxstate | Gradio | limit |",
             "| --- | ---: | ---: | ---: |"]
    for row in rows:
        cells = [f"{statistics.median(client_cpu[row, name]):.0%}" if (row, name) in client_cpu else ""
                 for name in ("hxstate", "Gradio", "limit")]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(scores, gets):
    """The goals of the sessions issue, each with the figure reached: a ratio is the median over the
    rounds of hxstate's row against the limit's row of the same round (as bench/scores.py pairs
    them), so that the machine's drift between rounds cancels out."""
    n = max(CONCURRENCY)
    submits, bare = scores["hxstate", n], scores["limit", n]
    rate = paired([r[0] for r in submits], [r[0] for r in bare])
    cpu = paired([r[3] for r in submits], [r[3] for r in bare])
    p99_ms = statistics.median(r[2] for r in submits)
    poll = paired(gets["hxstate", "poll"], gets["limit", "get"])
    json_rate = paired(gets["hxstate", "json"], gets["limit", "get"])
    checks = [
        (f"score submit at {n} clients >= 0.5 x bare submits/s, or server CPU per submit <= 2 x bare",
         f"{rate:.2f} x, CPU {cpu:.2f} x", rate >= 0.5 or cpu <= 2),
        (f"score submit p99 at {n} clients <= 150 ms", f"{p99_ms:.0f} ms", p99_ms <= 150),
        ("board poll answered 304 >= 0.8 x a bare GET", f"{poll:.2f} x", poll >= 0.8),
        ("GET /scores.json >= 0.8 x a bare GET", f"{json_rate:.2f} x", json_rate >= 0.8),
    ]
    return "\n".join(f"- {goal}: {reached} ({'met' if met else 'missed'})" for goal, reached, met in checks)


def same_work(chats):
    """How many replies to conversation 0 hxstate and Gradio agree on (greedy decoding: all)."""
    pairs = [(a, b) for n in CHATTERS for ra, rb in zip(chats["hxstate", n], chats["Gradio", n])
             for a, b in zip(ra[3], rb[3])]
    same = sum(a == b for a, b in pairs)
    return f"Same replies from hxstate and Gradio to the same conversations: {same} of {len(pairs)}"


def machine():
    """One line about this machine and the versions measured."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) / 1024 ** 2
    versions = subprocess.run(  # as installed in .venv-bench, where Gradio runs
        [str(BENCH_PYTHON), "-c", "from importlib.metadata import version; print(', '.join("
         "f'{name} {version(name)}' for name in ('gradio', 'torch', 'transformers')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB; {platform.system()}; "
            f"Python {platform.python_version()}; {versions}; Flask {version('flask')}, gunicorn "
            f"{version('gunicorn')}. Load average when the run started: {os.getloadavg()[0]:.2f}.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="per score row and round")
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                        help="cold starts of each server, and rounds over every row")
    parser.add_argument("--turns", type=int, default=DEFAULTS["turns"], help="per chatter and round")
    parser.add_argument("--model", default=str(gradio_demos.MODEL), help="the chat model's folder")
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"), help="where to write the table")
    args = parser.parse_args()
    if not BENCH_PYTHON.exists():
        raise SystemExit(".venv-bench is missing: run scripts/bench, which creates it")
    described = machine()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        scores, gets, chats, memory, cold, client_cpu = measure(args, folder)
    rows, tokens = figures(scores, gets, chats, memory, cold)
    settings = {name: getattr(args, name) for name in DEFAULTS}
    short = {name: value for name, value in settings.items() if value < DEFAULTS[name]}
    report = "\n\n".join([
        table(rows),
        goals(scores, gets),
        same_work(chats) + ".",
        client_table(client_cpu),
    ])
    print(report)
    header = [
        "# hxstate beside Gradio: the same two demos on one machine",
        f"Run of {datetime.date.today()} ({time.monotonic() - began:.0f} s): `scripts/bench "
        + " ".join(f"--{k} {v:g}" for k, v in settings.items()) + "`"
        + f" with the model `{Path(args.model).name}`; hxstate and the bare handler under gunicorn "
        f"({GUNICORN['worker_class']}, {GUNICORN['workers']} worker x {GUNICORN['threads']} threads).",
        f"Machine: {described}",
    ]
    if short:
        header.append("**Provisional**: a shortened run (" + ", ".join(
            f"{k} {v:g}" for k, v in short.items()) + "); take the figures again with the defaults "
            "on a quiet machine.")
    output = Path(args.output)
    output.write_text("\n\n".join(header + [report, NOTES]) + "\n")
    print(f"\nwritten to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


NOTES = """\
How to read it: "limit" is, for score submits, a bare Flask handler doing the submit's work under
the same gunicorn workers as hxstate, driven by the same client (for the board reads, a GET of its
board); for chat, the model's `generate` in the benchmark's process on the same prompts, one batch
for 8 chatters (time to first token: a `generate` of one token), the fastest of four tries, two with
torch's thread count and two with one thread, two of them after the servers' rows. hxstate runs with
its embedded defaults (the board, sessions and chats in SQLite), rate limits counted but set too
high to be reached, since every client comes from one address, and CHAT_STREAM_PACE 0: replies
stream as fast as they are written, as Gradio's do (by default hxstate shows a fast model's reply at
a reading pace of 60 characters a second). Gradio runs the guide's code with its defaults (its queue
runs one event of a kind at a time; the chatbot streams as the guide's streaming example wires it).
Score latencies are medians over rounds, chat latencies are over every turn; the table's ratios
divide the medians, while each goal's ratio is the median of the rounds' own (hxstate's row against
the limit's row of the same round); server CPU is the servers' user and system time over a row, per
request; the clients run on the same cores as the servers (their share is in the second table). What
the profiles showed: bench/README.md."""


if __name__ == "__main__":
    main()
