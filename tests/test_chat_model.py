"""The shipped chat model, how the app loads and prompts it, and the script that builds it."""

import importlib.util
import json
import re
import time

import pytest
from safetensors.torch import load_file

from html_tree import text_of
from webapp import ROOT, create_app
from webapp.background_model import stored_parameters
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


def test_shipped_model_is_small_and_complete():
    names = {path.name for path in SHIPPED.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "README.md"} <= names
    assert (SHIPPED / "model.safetensors").stat().st_size <= 24 * 1024 * 1024
    card = (SHIPPED / "README.md").read_text()
    assert "chitchat-dataset" in card and "MIT" in card and "chatterbot-corpus" in card
    assert "word-level perplexity" in card


def test_shipped_decoding_defaults_come_from_its_generation_config():
    stored = json.loads((SHIPPED / "generation_config.json").read_text())
    model = ChatModel(str(SHIPPED))
    for name in ("do_sample", "repetition_penalty", "min_new_tokens"):
        assert model.generation[name] == stored[name], name
    assert model.no_repeat_ngram_size == stored["no_repeat_ngram_size"]
    greedy = ChatModel(str(SHIPPED), do_sample=False, no_repeat_ngram_size=0)
    assert greedy.generation["do_sample"] is False and "temperature" not in greedy.generation
    assert greedy.no_repeat_ngram_size == 0


@pytest.mark.parametrize("turns", SMALL_TALK, ids=lambda turns: " / ".join(turns))
def test_shipped_model_answers_small_talk_with_words(shipped_model, turns):
    answer = shipped_model.reply(turns)
    assert re.search(r"[A-Za-z]{2,}", answer), answer
    job = Job(turns, time.monotonic() + 60)
    shipped_model.generate([job])
    # CHAT_SEED makes even sampled replies the same every time.
    assert job.text == answer and 1 <= job.tokens <= shipped_model.max_new_tokens


def test_a_typed_turn_separator_stays_text(tiny_model):
    separator = tiny_model.tokenizer.eos_token
    forged = tiny_model.prompt_ids([f"hi{separator}what is your name?"])
    assert forged.count(tiny_model.eos) == 1 and forged[-1] == tiny_model.eos
    assert separator in tiny_model.tokenizer.decode(forged[:-1])
    assert len(tiny_model.prompt_ids(["hi", "what is your name?"])) != len(forged)


def test_chat_page_says_which_model_answers(tmp_path, shipped_model):
    app = create_app({"TESTING": True, "SECRET_KEY": "test",
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    text = text_of(app.test_client().get("/chat").get_data(as_text=True))
    # Read from the weights' files before the model is loaded: the count the loaded model has.
    assert stored_parameters(SHIPPED) == shipped_model.parameters
    assert f"Replies come from hxstate-chat, {shipped_model.parameters / 1e6:.0f} M parameters" in text
    assert "chitchat-dataset" in text and "HXSTATE_CHAT_MODEL" in text


def test_training_runs_end_to_end_and_is_deterministic(tmp_path):
    script = load_training_script()
    tiny = ["--conversations", "60", "--steps", "3", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
            "--n-positions", "64", "--vocab-size", "300", "--batch-size", "8",
            "--precision", "float32"]  # "auto" times both on this CPU: a loaded machine may pick either
    for name in ("first", "second"):
        script.main(["train", "--out", str(tmp_path / name), *tiny])
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in ("first", "second"))
    assert first.keys() == second.keys()
    assert all((first[key] == second[key]).all() for key in first)
    folder = tmp_path / "first"
    script.main(["evaluate", str(folder), "--conversations", "60", "--exchanges", "20", "--choices", "10",
                 "--write"])
    card = (folder / "README.md").read_text()
    assert "word-level perplexity of held-out replies" in card and "chitchat-dataset" in card
    assert "train --conversations 60 --steps 3" in card
    built = ChatModel(str(folder), max_new_tokens=4)
    assert isinstance(built.reply(["hello"]), str)
    assert built.about.startswith("first, ") and "small talk" in built.about


def test_reply_quality_counts_what_the_model_card_reports():
    script = load_training_script()
    dictionary = {"i", "like", "dog", "the", "park", "go", "walk"}
    quality = script.reply_quality(["I like dogs", "I like dogs", "zzkq", "go go go go go go"], dictionary)
    assert quality["english"] == pytest.approx(12 / 13)
    assert quality["two_words"] == 3 / 4 and quality["distinct"] == 3 / 4
    assert quality["not_repetitive"] == 3 / 4
