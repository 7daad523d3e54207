"""Scale-out figures: memory of 1, 2 and 4 preloaded gunicorn workers, and score submits/s.

Memory: total PSS (proportional set size: shared pages counted once, split between the processes
that share them) of the gunicorn master and its workers, after every worker has served chat
turns, for the shipped model and for a DialoGPT-medium-shaped model (GPT-2, 24 layers, 1024 wide,
random weights built here). Goal: 4 workers <= 1.3 x one worker.
Throughput: score submits/s at 32 concurrent clients, 1 worker with the in-memory board vs 2 and
4 workers on Redis.

    .venv/bin/python bench/scale.py [--redis redis://127.0.0.1:6379/0] [--seconds 5] [--skip-medium]
"""

import argparse
import http.client
import re
import tempfile
import time
from pathlib import Path

import redis

from scores import ROOT, Browser, free_port, run, start_server

SHIPPED = ROOT / "models" / "hxstate-chat"


def pss_kib(pid):
    """PSS of one process, in KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as file:
        return int(re.search(r"^Pss:\s+(\d+) kB", file.read(), re.M).group(1))


def tree_pids(master):
    """A server process and its direct children (a gunicorn master and its workers)."""
    with open(f"/proc/{master}/task/{master}/children") as file:
        return [master] + [int(pid) for pid in file.read().split()]


def tree_pss_mib(master):
    """PSS of a gunicorn master and all its workers, in MiB."""
    pids = tree_pids(master)
    return sum(pss_kib(pid) for pid in pids) / 1024, len(pids) - 1


def chat_turn(port):
    """One chat turn (message and reply) on a fresh connection, so that any worker may take it."""
    browser = Browser(port)
    turn = browser.send("hello there")
    browser.conn.request("POST", f"/chat/replies/{turn}", headers=browser.headers())
    response = browser.conn.getresponse()
    response.read()
    assert response.status == 200, response.status
    browser.conn.close()


def medium_shaped_model(folder):
    """A GPT-2 with DialoGPT-medium's shape and random weights, with the shipped tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    # DialoGPT's vocabulary has 50257 tokens: fill the shipped one up with made-up words, so that
    # every id the random model picks decodes to text that streams.
    tokenizer.add_tokens([f"w{k}" for k in range(len(tokenizer), 50257)])
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24,
                                       n_head=16, bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def memory_rows(model, redis_url, prefix):
    """Total PSS for 1, 2 and 4 workers serving `model` on Redis."""
    rows = []
    for workers in (1, 2, 4):
        port = free_port()
        server = start_server(port, threads=4, workers=workers, REDIS_URL=redis_url,
                              REDIS_KEY_PREFIX=prefix, CHAT_MODEL=model, CHAT_MAX_NEW_TOKENS=20)
        try:
            for _ in range(3 * workers):
                chat_turn(port)
            time.sleep(1)
            rows.append((workers, *tree_pss_mib(server.pid)))
        finally:
            server.terminate()
            server.wait()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--skip-medium", action="store_true", help="only the shipped model")
    args = parser.parse_args()
    prefix = f"hxstate-bench:{time.time_ns()}:"
    store = redis.Redis.from_url(args.redis)
    try:
        with tempfile.TemporaryDirectory() as folder:
            models = [("shipped", SHIPPED)]
            if not args.skip_medium:
                models.append(("DialoGPT-medium-shaped", medium_shaped_model(Path(folder))))
            print("total PSS of master + workers, after 3 chat turns per worker\n")
            print(f"{'model':<24}{'workers':>8}{'PSS MiB':>10}{'x 1 worker':>12}")
            for name, model in models:
                rows = memory_rows(model, args.redis, prefix)
                for workers, mib, _ in rows:
                    print(f"{name:<24}{workers:>8}{mib:>10.0f}{mib / rows[0][1]:>12.2f}")
        print("\nscore submits at 32 concurrent clients\n")
        print(f"{'store':<24}{'workers':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for label, workers, settings in (("memory", 1, {}),
                                         ("redis", 2, {"REDIS_URL": args.redis, "REDIS_KEY_PREFIX": prefix}),
                                         ("redis", 4, {"REDIS_URL": args.redis, "REDIS_KEY_PREFIX": prefix})):
            port = free_port()
            server = start_server(port, threads=8, workers=workers, **settings)
            try:
                rate, p50, p99 = run(port, 32, args.seconds, lambda b, i: b.submit(i % 1000))
                print(f"{label:<24}{workers:>8}{rate:>10.0f}{p50:>9.2f}{p99:>9.2f}")
            finally:
                server.terminate()
                server.wait()
    finally:
        keys = list(store.scan_iter(match=prefix + "*"))
        if keys:
            store.delete(*keys)


if __name__ == "__main__":
    try:
        main()
    except http.client.HTTPException as error:
        raise SystemExit(f"a request failed: {error!r}")
