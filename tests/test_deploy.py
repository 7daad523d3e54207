"""The checked-in gunicorn config serves the app, and refuses what the state stores cannot keep right."""

import http.client
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, gunicorn, gunicorn_serving, stop, wait_until_serving
from html_tree import parse
from webapp.security import CONTENT_SECURITY_POLICY


def test_the_embedded_stores_refuse_several_workers(app_env):
    server = gunicorn(app_env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_WORKERS="2")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "which is one process only" in output
    assert "Run one worker (HXSTATE_WORKERS=1" in output


def test_a_weak_secret_key_is_refused(app_env):
    server = gunicorn(app_env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_SECRET_KEY="dev")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "HXSTATE_SECRET_KEY is too short or too simple" in output


def test_no_control_socket_is_shared_with_other_gunicorns_unless_one_of_its_own_is_named(app_env, tmp_path,
                                                                                           monkeypatch):
    # gunicorn's default is one socket per user ($HOME/.gunicorn/gunicorn.ctl), shared by its servers.
    monkeypatch.delenv("HXSTATE_CONTROL_SOCKET", raising=False)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["control_socket_disable"] is True
    own = tmp_path / "deploy" / "hxstate.ctl"
    own.parent.mkdir()
    with gunicorn_serving({**app_env, "HOME": str(tmp_path)}, HXSTATE_THREADS="2", HXSTATE_CONTROL_SOCKET=str(own)):
        deadline = time.monotonic() + 60  # gunicorn opens it in a thread of its own once workers run
        while not own.is_socket():
            assert time.monotonic() < deadline, "no control socket at the path named"
            time.sleep(0.05)
        assert not (tmp_path / ".gunicorn").exists()


def test_one_worker_serves_the_board(app_env):
    with gunicorn_serving(app_env, HXSTATE_THREADS="4") as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/scores.json", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b'{"count":0,"top":[]}\n'


def worker_of(master):
    """The pid of the one worker a gunicorn master runs."""
    [worker] = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(worker)


def global_state(browser):
    """The board as /scores.json says, and the word tally /words shows."""
    board = json.loads(browser.request("GET", "/scores.json", new_connection=True))
    return board, int(parse(browser.request("GET", "/words", htmx=False)).find(id="all-words").text)


def test_the_board_and_the_tally_survive_a_killed_worker_and_a_restart(app_env, browsers):
    port = free_port()
    env = {**app_env, "HXSTATE_BIND": f"127.0.0.1:{port}", "HXSTATE_THREADS": "4"}
    server = gunicorn(env)
    try:
        wait_until_serving(server, port)
        browser = browsers(port)
        browser.request("POST", "/scores", "score=42")
        browser.request("POST", "/words", "text=one+two+three")
        before = global_state(browser)
        assert before == ({"top": [42], "count": 1}, 3)
        worker = worker_of(server.pid)
        os.kill(worker, signal.SIGKILL)  # as the OOM killer or a timeout would
        deadline = time.monotonic() + 60
        while True:  # gunicorn starts a new worker in its place
            assert time.monotonic() < deadline, "gunicorn started no new worker"
            try:
                if worker_of(server.pid) != worker:
                    break
            except ValueError:  # none, or the old one and the new one for a moment
                pass
        wait_until_serving(server, port)
        assert global_state(browsers(port)) == before
    finally:
        stop(server)
    server = gunicorn(env)  # and a whole new server
    try:
        wait_until_serving(server, port)
        assert global_state(browsers(port)) == before
    finally:
        stop(server)


def loads_torch(pid):
    """Whether the process `pid` has torch's library mapped."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_lone_worker_loads_its_own_model_and_several_share_the_masters(app_env, redis_config, workers):
    port = free_port()
    env = {**app_env, "HXSTATE_REDIS_URL": redis_config["REDIS_URL"],
           "HXSTATE_REDIS_KEY_PREFIX": redis_config["REDIS_KEY_PREFIX"]}
    server = gunicorn(env, HXSTATE_BIND=f"127.0.0.1:{port}", HXSTATE_WORKERS=str(workers), HXSTATE_THREADS="4")
    try:
        wait_until_serving(server, port)
        # A lone worker's master never imports torch: the worker answers pages while loading it.
        assert loads_torch(server.pid) == (workers > 1)
    finally:
        stop(server)


def test_several_workers_refuse_a_model_that_cannot_load(app_env, redis_config, tmp_path):
    env = {**app_env, "HXSTATE_REDIS_URL": redis_config["REDIS_URL"],
           "HXSTATE_REDIS_KEY_PREFIX": redis_config["REDIS_KEY_PREFIX"],
           "HXSTATE_CHAT_MODEL": str(tmp_path)}
    server = gunicorn(env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_WORKERS="2")
    output, _ = server.communicate(timeout=120)
    assert server.returncode != 0
    assert "could not load the chat model" in output and str(tmp_path) in output


def test_flask_cli_finds_the_app(app_env):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "routes"], cwd=ROOT,
        env=app_env, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "scores.submit" in result.stdout and "/scores.json" in result.stdout


def test_a_chunked_body_past_the_limit_is_refused_whole(app_env, browsers):
    with gunicorn_serving(app_env, HXSTATE_THREADS="4") as port:
        browser = browsers(port)

        def post_chunked(body):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            pieces = [body[k:k + 8192].encode() for k in range(0, len(body), 8192)]
            connection.request("POST", "/words", body=iter(pieces), encode_chunked=True, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked",
                "Cookie": browser.cookie, "X-CSRFToken": browser.token, "HX-Request": "true"})
            response = connection.getresponse()
            response.read()
            connection.close()
            return response.status

        assert post_chunked("text=one+two") == 200  # chunked and under the limit: read as usual
        assert post_chunked("text=one+two+three&pad=" + "x" * 100_000) == 413
        assert int(parse(browser.request("GET", "/words", htmx=False)).find(id="all-words").text) == 2


def test_gunicorns_own_error_answers_carry_the_security_headers(app_env):
    many_headers = "".join(f"X-{k}: {k}\r\n" for k in range(120))
    with gunicorn_serving(app_env, HXSTATE_THREADS="2") as port:
        for request, status in ((b"NOT HTTP AT ALL\r\n\r\n", 400),
                                (f"GET /{'x' * 5000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 414),
                                (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many_headers}\r\n".encode(), 431)):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.sendall(request)
                answer = b""
                while chunk := connection.recv(65536):
                    answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            assert head[0].split()[1] == str(status), head
            headers = dict(line.split(": ", 1) for line in head[1:])
            assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
