"""The shipped chat model and the script that builds it."""

import importlib.util
import re
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from webapp import ROOT, create_app
from webapp.chat_model import ChatModel
from webapp.generation import Job

SHIPPED = ROOT / "models" / "hxstate-chat"
SMALL_TALK = [["hello"], ["how are you?"], ["what is your name?"], ["tell me a joke"],
              ["hi", "Hello", "what do you like to do?"]]


def load_training_script():
    spec = importlib.util.spec_from_file_location("train_chat_model", ROOT / "scripts/train_chat_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_model():
    """The model the default configuration loads, through the app's loading path."""
    app = create_app({"TESTING": True, "SECRET_KEY": "test",
                      "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["CHAT_MODEL"] == str(SHIPPED)
    return app.extensions["chat_model"]


def test_shipped_model_is_small_and_complete():
    names = {path.name for path in SHIPPED.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    assert sum(path.stat().st_size for path in SHIPPED.iterdir()) < 10 * 1024 * 1024


@pytest.mark.parametrize("turns", SMALL_TALK, ids=lambda turns: " / ".join(turns))
def test_shipped_model_answers_small_talk_with_words(shipped_model, turns):
    answer = shipped_model.reply(turns)
    assert re.search(r"[A-Za-z]{2,}", answer), answer
    job = Job(turns, time.monotonic() + 60)
    shipped_model.generate([job])
    assert job.text == answer and 1 <= job.tokens <= shipped_model.max_new_tokens


def test_training_runs_end_to_end_and_is_deterministic(tmp_path):
    script = load_training_script()
    tiny = ["--steps", "3", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
            "--n-positions", "64", "--train-length", "32", "--vocab-size", "300", "--batch-size", "8"]
    for name in ("first", "second"):
        script.main(["train", "--out", str(tmp_path / name), *tiny])
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in ("first", "second"))
    assert first.keys() == second.keys()
    assert all((first[key] == second[key]).all() for key in first)
    card = (tmp_path / "first" / "README.md").read_text()
    assert "held-out loss" in card and "chatterbot-corpus" in card
    built = ChatModel(str(tmp_path / "first"), max_new_tokens=4)
    assert isinstance(built.reply(["hello"]), str)
    assert Path(tmp_path / "first" / "tokenizer.json").is_file()
