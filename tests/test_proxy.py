"""hxstate behind the reverse proxy it ships (deploy/nginx-hxstate.conf), with Debian's nginx in front
of the checked-in gunicorn: streams pass word by word, slow clients cannot starve the workers,
client addresses reach the rate limiter, oversized bodies stop at the proxy."""

import http.client
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, CookieJar, csrf_token, events, free_port, stop, turn_id, wait_until_serving
from stepped_model import WORDS

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(folder, port, upstream_port):
    """nginx with the shipped site configuration, listening on `port`, in front of `upstream_port`."""
    site = (ROOT / "deploy" / "nginx-hxstate.conf").read_text()
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (folder / "site.conf").write_text(site)
    temp = {name: folder / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    (folder / "nginx.conf").write_text(f"""
        daemon off;
        pid {folder / 'nginx.pid'};
        error_log {folder / 'error.log'};
        events {{}}
        http {{
            access_log off;
            client_body_temp_path {temp['client_body']};
            proxy_temp_path {temp['proxy']};
            fastcgi_temp_path {temp['fastcgi']};
            uwsgi_temp_path {temp['uwsgi']};
            scgi_temp_path {temp['scgi']};
            include {folder / 'site.conf'};
        }}
    """)
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (Debian package nginx; scripts/test installs it): the proxy "
                    "tests are never skipped.")
    server = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_serving(server, port)
    return server


@pytest.fixture
def proxied(tmp_path, app_env, server_steps):
    """A stepped-model gunicorn behind nginx; yields the proxy's port."""
    app_port, proxy_port = free_port(), free_port()
    env = {**app_env, "HXSTATE_PROXY_FIX_HOPS": "1", "HXSTATE_CHAT_STREAM_PACE": "0",
           "HXSTATE_RATELIMIT_ENABLED": "true", "HXSTATE_ADDRESS_RATE_LIMIT": "5/minute",
           "HXSTATE_THREADS": "4"}
    server = server_steps.gunicorn(env, HXSTATE_BIND=f"127.0.0.1:{app_port}")
    nginx = None
    try:
        wait_until_serving(server, app_port)
        nginx = start_nginx(tmp_path, proxy_port, app_port)
        yield proxy_port
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=30)
        stop(server)


class Client:
    """A browser from one loopback address, through the proxy: its cookies and CSRF token."""

    def __init__(self, port, address="127.0.0.1"):
        self.port, self.address, self.jar = port, address, CookieJar()
        self.token = csrf_token(self.request("GET", "/scores", headers={"HX-Request": "false"})[1])

    def request(self, method, path, body=None, headers=None):
        """(status, body) of one request on a new connection from this client's address."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60,
                                                source_address=(self.address, 0))
        connection.request(method, path, body=body, headers=self.headers(headers))
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        self.jar.keep(response)
        connection.close()
        return response.status, text

    def headers(self, extra=None):
        headers = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true",
                   "Origin": f"http://127.0.0.1:{self.port}", **(extra or {})}
        if self.jar:
            headers["Cookie"] = self.jar.header
        if getattr(self, "token", None):
            headers["X-CSRFToken"] = self.token
        return headers


def test_a_streamed_reply_passes_the_proxy_word_by_word(proxied, server_steps):
    client = Client(proxied)
    status, sent = client.request("POST", "/chat", "message=hello")
    assert status == 200
    connection = http.client.HTTPConnection("127.0.0.1", proxied, timeout=60)
    connection.request("POST", f"/chat/replies/{turn_id(sent)}",
                       headers=client.headers({"Accept": "text/event-stream, text/html"}))
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    stream = events(iter(response.readline, b""))
    for k, word in enumerate(WORDS):
        server_steps.release(1)  # one more word written: it must come through before the next
        while " ".join(WORDS[:k + 1]) not in re.sub(r"<[^>]*>", " ", next(stream)).replace("  ", " "):
            pass
    connection.close()


def test_slow_clients_do_not_starve_the_workers(proxied):
    # 40 connections that send their headers a little at a time: more than the 4 threads of the worker.
    slow = []
    try:
        for _ in range(40):
            connection = socket.create_connection(("127.0.0.1", proxied), timeout=30)
            connection.sendall(b"GET /scores HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(connection)
        status, body = Client(proxied).request("GET", "/scores.json")
        assert status == 200 and '"count":0' in body.replace(" ", "")
    finally:
        for connection in slow:
            connection.close()


def test_client_addresses_reach_the_rate_limiter(proxied):
    first, second = Client(proxied, "127.0.0.2"), Client(proxied, "127.0.0.3")
    for k in range(5):  # ADDRESS_RATE_LIMIT: 5 a minute, each forging another address
        status, _ = first.request("POST", "/scores", f"score={k}", {"X-Forwarded-For": f"198.51.100.{k}"})
        assert status == 200
    assert first.request("POST", "/scores", "score=9", {"X-Forwarded-For": "198.51.100.99"})[0] == 429
    assert second.request("POST", "/scores", "score=7")[0] == 200  # another address, its own count


def test_an_oversized_body_is_refused_at_the_proxy(proxied):
    client = Client(proxied)
    status, body = client.request("POST", "/words", "text=many+words&pad=" + "x" * 100_000)
    assert status == 413 and "nginx" in body  # nginx's own answer: the body never reached a worker
    status, body = client.request("GET", "/words")
    assert status == 200
