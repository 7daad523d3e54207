"""Shared fixtures: a fresh app per test, clients that carry the CSRF proof, a live server, Chromium."""

import os

# Nothing in the tests may reach a model hub; set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import re  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from webapp import create_app  # noqa: E402
from webapp.chat_model import ChatModel  # noqa: E402

CHROMIUM = os.environ.get("HXSTATE_CHROMIUM", "/usr/bin/chromium")
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}


TINY_CORPUS = [
    "hello", "hi there", "how are you?", "i am fine, thank you", "what is your name?",
    "my name is hxstate", "tell me a joke", "why did the chicken cross the road?",
    "good bye", "see you later", "what do you like?", "i like talking to people",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny GPT-2 with a byte-level BPE tokenizer, saved the way `from_pretrained` reads it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TINY_CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32,
                                       n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos))
    folder = tmp_path_factory.mktemp("tiny-chat-model")
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
            "TESTING": True, "SECRET_KEY": "test", "SCORE_POLL_SECONDS": 1,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'hxstate.sqlite3'}",
            "CHAT_MODEL": tiny_model, **config,
        })
    return make


@pytest.fixture
def app(make_app):
    """An app with its own empty stores."""
    return make_app()


def csrf_token(html):
    """The CSRF token a rendered page carries."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


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
