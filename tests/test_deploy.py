"""The checked-in gunicorn config serves the app, and refuses what the state stores cannot keep right."""

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, gunicorn, stop, wait_until_serving


def test_memory_store_refuses_several_workers(app_env):
    server = gunicorn(app_env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_WORKERS="2")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "global to one process only" in output
    assert "Run one worker (HXSTATE_WORKERS=1" in output


def test_a_weak_secret_key_is_refused(app_env):
    server = gunicorn(app_env, "--bind", f"127.0.0.1:{free_port()}", HXSTATE_SECRET_KEY="dev")
    output, _ = server.communicate(timeout=60)
    assert server.returncode != 0
    assert "HXSTATE_SECRET_KEY is too short or too simple" in output


def test_one_worker_serves_the_board(app_env):
    port = free_port()
    server = gunicorn(app_env, HXSTATE_BIND=f"127.0.0.1:{port}", HXSTATE_THREADS="4")
    try:
        wait_until_serving(server, port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/scores.json", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b'{"count":0,"top":[]}\n'
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
