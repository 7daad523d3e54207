"""Shared fixtures and helpers: a fresh app per test, clients that carry the CSRF proof, stand-in
models, the chat as a client sees it, servers (in process and gunicorn), Redis, Chromium."""

import os
import re

# Nothing in the tests may reach a model hub; set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import http.client  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from html_tree import parse  # noqa: E402
from webapp import create_app  # noqa: E402
from webapp.chat_model import ChatModel  # noqa: E402
from webapp.sessions import SqlSessionStore  # noqa: E402

# Hypothesis otherwise fails a test whose examples run or are made slowly: a busy machine's speed
# is no fault of the code.
settings.register_profile("hxstate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hxstate")

CHROMIUM = os.environ.get("HXSTATE_CHROMIUM", "/usr/bin/chromium")
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}
# What htmx with its event-stream extension sends for a chat reply.
STREAM = {**HTMX, "Accept": "text/html, text/event-stream"}


TINY_CORPUS = [
    "hello", "hi there", "how are you?", "i am fine, thank you", "what is your name?",
    "my name is hxstate", "tell me a joke", "why did the chicken cross the road?",
    "good bye", "see you later", "what do you like?", "i like talking to people",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny GPT-2 with a byte-level BPE tokenizer, saved the way `from_pretrained` reads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TINY_CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    return save_random_gpt2(tmp_path_factory.mktemp("tiny-chat-model"), tokenizer,
                            n_positions=64, n_embd=32, n_layer=2, n_head=2)


def save_random_gpt2(folder, tokenizer, **shape):
    """Save a randomly initialised GPT-2 of the given shape with `tokenizer`, as from_pretrained reads it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos,
                                       eos_token_id=eos, **shape))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model loaded once through the app's loading path, shared by the tests."""
    return ChatModel(str(tiny_model_dir), max_new_tokens=8)


class ScriptedModel:
    """A stand-in model that answers from a script: strings are replies, exceptions are raised."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.prompts = []

    def generate(self, jobs, more=None):
        for job in jobs:
            job.finish(self.reply(job.texts))

    def reply(self, texts):
        self.prompts.append(list(texts))
        answer = self.answers.pop(0) if self.answers else f"reply {len(self.prompts)}"
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def make_app(tmp_path, tiny_model):
    """Build apps on this test's own database; later calls share it, as a restart would."""
    def make(**config):
        return create_app({
            "TESTING": True, "SECRET_KEY": "test", "SCORE_POLL_SECONDS": 1, "WORDS_POLL_SECONDS": 1,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'hxstate.sqlite3'}",
            "CHAT_MODEL": tiny_model, "RATELIMIT_ENABLED": False, **config,
        })
    return make


@pytest.fixture
def app(make_app):
    """An app with its own empty stores."""
    return make_app()


def csrf_token(html):
    """The CSRF token a rendered page carries."""
    return parse(html).find("input", name="csrf_token")["value"]


def new_client(app):
    """A browser-like client with its own cookie jar that sends the CSRF header htmx sends."""
    client = app.test_client()
    token = csrf_token(client.get("/scores").get_data(as_text=True))
    client.environ_base["HTTP_X_CSRFTOKEN"] = token
    return client


@pytest.fixture
def client(app):
    """A client whose requests carry the CSRF proof."""
    return new_client(app)


@pytest.fixture(scope="session")
def shipped_model():
    """The model the default configuration loads (models/hxstate-chat), through the app's loading
    path, seeded; shared by the tests that need a real, trained model."""
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "CHAT_SEED": 0})
    assert app.config["CHAT_MODEL"] == str(ROOT / "models" / "hxstate-chat")
    return app.extensions["chat_model"].get()


class HeldModel(ScriptedModel):
    """A ScriptedModel that answers a batch only while `go` is set (at first only if not `held`),
    so that the test sees what happens meanwhile; it records the size of every batch."""

    def __init__(self, *answers, held=True):
        super().__init__(*answers)
        self.batches = []
        self.started = threading.Event()  # set once a batch has reached the model
        self.go = threading.Event()
        if not held:
            self.go.set()

    def generate(self, jobs, more=None):
        self.batches.append(len(jobs))
        self.started.set()
        assert self.go.wait(30), "the test never let the model answer"
        super().generate(jobs, more)


def send(client, text, htmx=True):
    """Post a chat message the way the page does; return the response."""
    return client.post("/chat", data={"message": text}, headers=HTMX if htmx else {})


def turn_id(html):
    """The id of the message that the answer to `POST /chat` shows, with its reply on the way."""
    exchange = parse(html).find("li", class_="exchange")
    return int(exchange["id"].removeprefix("exchange-"))


def chat(client, text):
    """Send a message and fetch its reply, as the page's two chained requests do."""
    sent = send(client, text)
    assert sent.status_code == 200
    return client.post(f"/chat/replies/{turn_id(sent.get_data(as_text=True))}", headers=HTMX)


def said(bubble):
    """What a chat bubble says, without who says it (its Markdown as the page shows it)."""
    return bubble.find(class_="text").raw_text.strip()


def conversation(html):
    """The (speaker, text) pairs of the messages and finished replies a chat page or fragment
    shows, in order; a reply still on its way or failed is not among them."""
    return [(bubble.find("span", class_="who").text.removesuffix(":"), said(bubble))
            for bubble in parse(html).find_all("div", class_="bubble")]


def failed_reply(html, turn):
    """The failed reply to `turn` that `html` shows, checked to offer a Retry button."""
    failed = parse(html).find("form", id=f"reply-{turn}")
    assert failed is not None and "failed" in failed.classes, html
    assert [button.text for button in failed.find_all("button")] == ["Retry"]
    return failed


def log(client):
    """The conversation the chat page shows this client."""
    return conversation(client.get("/chat").get_data(as_text=True))


def sessions_table(app):
    """The engine and the table of the app's sessions in the embedded database."""
    return app.extensions["sqlalchemy"].engine, SqlSessionStore.table


def set_expiry(app, expiry):
    """Give every stored session this expiry, as if it had been written earlier."""
    with app.app_context():
        engine, table = sessions_table(app)
        with engine.begin() as connection:
            connection.execute(table.update().values(expiry=expiry))


def when_called(owner, name):
    """An event set each time the method `name` of the object `owner` (of it alone) has returned."""
    called = threading.Event()
    method = getattr(owner, name)

    def call_and_tell(*args, **kwargs):
        result = method(*args, **kwargs)
        called.set()
        return result

    setattr(owner, name, call_and_tell)
    return called


def board_json(client):
    """The score board as programs read it."""
    return client.get("/scores.json").get_json()


def type_message(page, text):
    """Type a message into the chat box of a browser's page and press Enter."""
    page.fill("#message", text)
    page.press("#message", "Enter")


def watch_csp(page):
    """Record every CSP violation the browser's page reports into window.__violations."""
    page.add_init_script("window.__violations = [];"
                         "document.addEventListener('securitypolicyviolation',"
                         " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port():
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_env(tmp_path, tiny_model_dir):
    """Environment for a server process: the tiny model, this test's own database."""
    return {**os.environ, "HXSTATE_SECRET_KEY": "eb6fbdf19fa576cd21ab47682f3f48e392c5ee8cd8d6314d",
            "HXSTATE_CHAT_MODEL": str(tiny_model_dir),
            "HXSTATE_RATELIMIT_ENABLED": "false",
            "HXSTATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'hxstate.sqlite3'}"}


def gunicorn(env, *args, app="wsgi:app", **settings):
    """Start `gunicorn wsgi:app` from the repo root, so that gunicorn.conf.py applies."""
    return subprocess.Popen(
        [str(GUNICORN), app, *args], cwd=ROOT, env={**env, **settings},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@contextmanager
def gunicorn_serving(env, **settings):
    """A gunicorn of the checked-in config on a free port, once it serves; yields the port, stops it."""
    port = free_port()
    server = gunicorn(env, HXSTATE_BIND=f"127.0.0.1:{port}", **settings)
    try:
        wait_until_serving(server, port)
        yield port
    finally:
        stop(server)


def wait_until_serving(server, port, timeout=60):
    """Wait for gunicorn to answer on `port`; fail with its output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/scores.json", timeout=2):
                return
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"gunicorn exited: {server.stdout.read()}")
            assert time.monotonic() < deadline, f"gunicorn did not answer within {timeout} s"
            time.sleep(0.2)


def stop(server):
    """Stop a gunicorn master and its workers; kill them if they outlast gunicorn's graceful timeout."""
    server.terminate()
    try:
        server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()


class ServerSteps:
    """Steps the model of a gunicorn server that serves `stepped_model:create_app()`, through two
    FIFOs: the test releases the model's words, and learns which worker starts each batch."""

    def __init__(self, folder):
        self.env, self._fds, self._started = {}, {}, b""
        for name in ("steps", "started"):
            path = folder / name
            os.mkfifo(path)
            # Open for reading and writing, so that neither this open nor the server's waits for the other.
            self._fds[name] = os.open(path, os.O_RDWR)
            self.env[f"STEPPED_MODEL_{name.upper()}"] = str(path)

    def gunicorn(self, env, *args, **settings):
        """Start gunicorn as `gunicorn()` does, serving the app with this stepped model."""
        return gunicorn({**env, **self.env}, "--pythonpath", str(ROOT / "tests"), *args,
                        app="stepped_model:create_app()", **settings)

    def release(self, steps=1):
        """Let the model write `steps` more words."""
        os.write(self._fds["steps"], b"." * steps)

    def started(self, timeout=60):
        """The process id of the worker that started the next batch, once one has."""
        while b"\n" not in self._started:
            ready, _, _ = select.select([self._fds["started"]], [], [], timeout)
            assert ready, f"no worker started a batch within {timeout} s"
            self._started += os.read(self._fds["started"], 4096)
        line, self._started = self._started.split(b"\n", 1)
        return int(line)

    def close(self):
        for fd in self._fds.values():
            os.close(fd)


@pytest.fixture
def server_steps(tmp_path):
    """Steps for the model of a gunicorn server that this test starts."""
    steps = ServerSteps(tmp_path)
    yield steps
    steps.close()


def redis_answers(port=REDIS_PORT):
    """Whether a Redis server answers PING on loopback at `port`."""
    try:
        with redis.Redis(host=REDIS_HOST, port=port, socket_connect_timeout=1) as client:
            return client.ping()
    except redis.RedisError:
        return False


@pytest.fixture
def redis_config(request):
    """Config for an app on the machine's Redis, under a key prefix of this test's own."""
    if not redis_answers():
        pytest.fail(f"Redis is not answering on {REDIS_HOST}:{REDIS_PORT}: start it "
                    f"(scripts/test does) — the Redis tests are never skipped.")
    # Without glob characters: a parametrized test's name has brackets, which SCAN's MATCH reads.
    name = re.sub(r"[^\w-]", "_", request.node.name)
    prefix = f"hxstate-test:{name}:{os.getpid()}:"
    yield {"REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0", "REDIS_KEY_PREFIX": prefix}
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


class RedisServer:
    """A private redis-server on a free port that a test may stop and start again."""

    def __init__(self, folder):
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://{REDIS_HOST}:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", REDIS_HOST, "--dir", str(self.folder),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_answers(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self):
        """Shut down after writing the data to disk, as a restarted production server keeps it."""
        try:
            with redis.Redis(host=REDIS_HOST, port=self.port) as client:
                client.shutdown(save=True)
        except redis.ConnectionError:
            pass
        self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own; a missing redis-server fails the test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server); "
                    "the Redis tests are never skipped.")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def in_threads(target, arguments):
    """Run `target(*args)` for every args at once, one thread each; re-raise the first failure."""
    failures = []

    def run(args):
        try:
            target(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread below
            failures.append(error)

    threads = [threading.Thread(target=run, args=(args,)) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


@contextmanager
def serve(app):
    """Serve an app over HTTP on a free loopback port; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class CookieJar(dict):
    """A client's cookies, by name, as the responses it got set and deleted them."""

    @property
    def header(self):
        """The Cookie header the client sends."""
        return "; ".join(f"{name}={value}" for name, value in self.items())

    def keep(self, response):
        """Keep the cookies a response sets, and forget those it deletes."""
        for header in response.headers.get_all("Set-Cookie") or []:
            name, value = header.split(";", 1)[0].split("=", 1)
            if value and "Max-Age=0" not in header:
                self[name] = value
            else:
                self.pop(name, None)


class Browser:
    """A keep-alive HTTP client with a cookie jar of one session and its CSRF token."""

    def __init__(self, port, cookie=None, token=None):
        self.port, self.token = port, token
        self.jar = CookieJar(pair.split("=", 1) for pair in cookie.split("; ")) if cookie else CookieJar()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if cookie is None:
            try:
                self.token = csrf_token(self.request("GET", "/scores", htmx=False))
            except BaseException:
                self.close()
                raise

    def request(self, method, path, body=None, new_connection=False, htmx=True):
        """Send a request (as htmx does, by default); return the body after checking for a 2xx."""
        if new_connection:  # a new connection may land on any worker
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {**(HTMX if htmx else {}), "Content-Type": "application/x-www-form-urlencoded"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.token:
            headers["X-CSRFToken"] = self.token
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        self.jar.keep(response)
        assert 200 <= response.status < 300, (response.status, text)
        return text

    @property
    def cookie(self):
        """The Cookie header this browser sends."""
        return self.jar.header

    def stream(self, path, body=None):
        """Post as htmx with its event-stream extension does; return the open response."""
        headers = {**STREAM, "Cookie": self.cookie, "X-CSRFToken": self.token,
                   "Content-Type": "application/x-www-form-urlencoded"}
        self.conn.request("POST", path, body=body, headers=headers)
        response = self.conn.getresponse()
        assert response.status == 200, (response.status, response.read())
        assert response.getheader("Content-Type").startswith("text/event-stream")
        return response

    def close(self):
        self.conn.close()


@pytest.fixture
def browsers():
    """Make Browsers that are all closed when the test ends."""
    made = []

    def make(*args):
        made.append(Browser(*args))
        return made[-1]

    yield make
    for browser in made:
        browser.close()


def events(chunks):
    """Yield the data of each server-sent event in `chunks` (str or bytes: an HTTP response read
    line by line, a test response's body piece by piece, or a whole body) as it arrives."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode() if isinstance(chunk, bytes) else chunk
        *complete, pending = pending.replace("\r\n", "\n").split("\n\n")
        for event in complete:
            data = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
            if data:
                yield "\n".join(data)


@pytest.fixture
def live_server(app):
    """The app served over HTTP on a free loopback port, for the browser."""
    with serve(app) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; a missing browser fails the test, never skips it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium "
                    f"(scripts/test does) or point HXSTATE_CHROMIUM at one.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()
