"""The checked-in gunicorn config serves the app, and refuses what the state stores cannot keep right."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_env(tmp_path, tiny_model_dir):
    """Environment for a server process: the tiny model, this test's own database."""
    return {**os.environ, "HXSTATE_SECRET_KEY": "test", "HXSTATE_CHAT_MODEL": str(tiny_model_dir),
            "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'hxstate.sqlite3'}"}


def gunicorn(env, *args, **settings):
    """Start `gunicorn wsgi:app` from the repo root, so that gunicorn.conf.py applies."""
    return subprocess.Popen(
        [str(GUNICORN), "wsgi:app", *args], cwd=ROOT, env={**env, **settings},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_memory_store_refuses_several_workers(app_env):
    server = gunicorn(app_env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_WORKERS="2")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "global to one process only" in output
    assert "Run one worker (HXSTATE_WORKERS=1" in output


def test_one_worker_serves_the_board(app_env):
    port = free_port()
    server = gunicorn(app_env, HXSTATE_BIND=f"127.0.0.1:{port}", HXSTATE_THREADS="4")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/scores.json", timeout=2) as r:
                    assert r.status == 200
                    assert r.read() == b'{"count":0,"top":[]}\n'
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_flask_cli_finds_the_app(app_env):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "routes"], cwd=ROOT,
        env=app_env, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "scores.submit" in result.stdout and "/scores.json" in result.stdout
