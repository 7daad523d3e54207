"""Chat turns under gunicorn: streamed first token and full turn vs raw `generate`, and 1/4/8 chatters.

For each model (the shipped one, and a DialoGPT-medium-shaped GPT-2 with random weights built
here), first the limits measured in this process with the same model and prompt: the prefill
(`generate` of one token), raw `model.generate`, and one decoding step. Then `gunicorn wsgi:app`
(the checked-in config, one gthread worker) and browsers the way htmx drives the page: post the
message, then post for the reply and read it as server-sent events. Every turn starts a new
conversation with the same message, so that the app generates from the very prompt raw `generate`
was given, and every reply is exactly `--tokens` tokens long (min = max new tokens), so tokens/s is
exact. Goals (issue 6): turn <= 1.01 x raw generate; first token <= prefill + one token + 20 ms;
8 chatters >= 4 x the tokens/s of one.

    .venv/bin/python bench/chat.py [--turns 5] [--tokens 40] [--chatters 1 4 8] [--skip-medium]
"""

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scale import SHIPPED, medium_shaped_model  # noqa: E402
from scores import Browser, free_port, start_server  # noqa: E402

MESSAGE = "hello there, how are you today?"


def timed(action, repeats):
    """Seconds that each of `repeats` calls of `action` took."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def raw_limits(model_dir, tokens, repeats):
    """Prefill, raw generate and one decoding step of this model on the benchmark's prompt (s).

    The prefill is `generate` of a single token: the forward pass over the prompt and the pick of
    the first token, which is all that the first streamed token has to wait for.
    """
    from webapp.chat_model import ChatModel  # first: it sets torch's threads up as the app does

    import torch

    model = ChatModel(str(model_dir), max_new_tokens=tokens, min_new_tokens=tokens, no_repeat_ngram_size=0)
    ids = torch.tensor([model.prompt_ids([MESSAGE])])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        def generate(count=tokens):
            settings = {**model.generation, "max_new_tokens": count, "min_new_tokens": count}
            output = model.model.generate(ids, attention_mask=mask, **settings)
            assert output.shape[1] == ids.shape[1] + count

        generate()  # warm-up
        prefill = statistics.median(timed(lambda: generate(1), repeats))
        raw = statistics.median(timed(generate, repeats))
    return prefill, raw, (raw - prefill) / (tokens - 1)


def chat_turn(port):
    """One turn of a new conversation, as htmx does it: (first token, whole turn) in seconds."""
    browser = Browser(port)
    started = time.perf_counter()
    turn = browser.send(MESSAGE)
    browser.conn.request("POST", f"/chat/replies/{turn}",
                         headers=browser.headers(Accept="text/html, text/event-stream"))
    response = browser.conn.getresponse()
    assert response.status == 200, response.status
    first = None
    while line := response.readline():
        if first is None and line.startswith(b"data: <hx-partial"):
            first = time.perf_counter() - started
    ended = time.perf_counter() - started
    browser.conn.close()
    assert first is not None, "no token was streamed"
    return first, ended


def chatters(port, count, turns):
    """`count` chatters doing `turns` turns each at once: wall time and every turn's timings."""
    results = [[] for _ in range(count)]
    start = threading.Barrier(count + 1)

    def chatter(k):
        start.wait()
        for _ in range(turns):
            results[k].append(chat_turn(port))

    threads = [threading.Thread(target=chatter, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, [timing for per in results for timing in per]


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_model(name, model_dir, args):
    """Print one model's figures."""
    prefill, raw, step = raw_limits(model_dir, args.tokens, args.turns)
    port = free_port()
    server = start_server(port, threads=32, CHAT_MODEL=model_dir, CHAT_MAX_NEW_TOKENS=args.tokens,
                          CHAT_MIN_NEW_TOKENS=args.tokens, CHAT_NO_REPEAT_NGRAM_SIZE=0,
                          CHAT_BATCH_SIZE=max(args.chatters), CHAT_RATE_LIMIT="100000/second")
    try:
        chat_turn(port)  # warm-up
        runs = {count: chatters(port, count, args.turns) for count in args.chatters}
    finally:
        server.terminate()
        server.wait()
    _, one = runs[args.chatters[0]]
    first = statistics.median(t for t, _ in one)
    turn = statistics.median(t for _, t in one)
    ms = 1000
    print(f"\n{name}: {args.tokens} tokens per reply, prompt '{MESSAGE}'\n")
    print(f"{'one chatter':<44}{'p50 ms':>9}{'x limit':>9}")
    print(f"{'raw generate (limit for a turn)':<44}{raw * ms:>9.1f}")
    print(f"{'prefill (generate of one token)':<44}{prefill * ms:>9.1f}")
    print(f"{'one decoding step':<44}{step * ms:>9.1f}")
    print(f"{'app: full turn (send + streamed reply)':<44}{turn * ms:>9.1f}{turn / raw:>9.3f}")
    limit = prefill + step + 0.020
    print(f"{'app: first token (limit: prefill+step+20ms)':<44}{first * ms:>9.1f}{first / limit:>9.3f}")
    base = None
    print(f"\n{'chatters':>8}{'turns':>7}{'tokens/s':>10}{'x one':>8}{'turn p50 ms':>13}{'turn p99 ms':>13}"
          f"{'1st tok p50':>13}")
    for count, (wall, timings) in runs.items():
        rate = count * args.turns * args.tokens / wall
        base = base or rate
        turns = [t for _, t in timings]
        print(f"{count:>8}{len(turns):>7}{rate:>10.1f}{rate / base:>8.2f}{statistics.median(turns) * ms:>13.1f}"
              f"{p99(turns) * ms:>13.1f}{statistics.median(t for t, _ in timings) * ms:>13.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5, help="turns per chatter")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per reply")
    parser.add_argument("--chatters", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--skip-medium", action="store_true", help="only the shipped model")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; server: 1 gunicorn gthread worker; clients on the same machine")
    bench_model("shipped model (1.1 M parameters)", SHIPPED, args)
    if not args.skip_medium:
        with tempfile.TemporaryDirectory() as folder:
            bench_model("DialoGPT-medium-shaped (355 M parameters, random weights)",
                        medium_shaped_model(Path(folder)), args)


if __name__ == "__main__":
    try:
        main()
    except http.client.HTTPException as error:
        raise SystemExit(f"a request failed: {error!r}")
