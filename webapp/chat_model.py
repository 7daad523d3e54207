"""The chat model: a transformers causal LM loaded once per process and shared by every request.

Prompts follow DialoGPT: the conversation's turns, each followed by the tokenizer's eos token,
trimmed from the oldest turn so that prompt + `max_new_tokens` fits the model's context window.

One generation runs at a time per process (a lock): torch already spreads one forward pass over
every core, so a second concurrent `generate` would only slow both down, and a tokenizer or model
shared between threads is not documented as safe to call concurrently. Requests that arrive
meanwhile wait in their own server thread.
"""

import threading

import torch
from flask import current_app
from transformers import AutoModelForCausalLM, AutoTokenizer


class ModelError(RuntimeError):
    """The model could not produce a reply."""


class ChatModel:
    """A DialoGPT-style conversational model."""

    def __init__(self, source, *, max_new_tokens=40, min_new_tokens=1, do_sample=False,
                 top_p=0.9, temperature=0.8, no_repeat_ngram_size=0, seed=None):
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source).eval()
        except (OSError, ValueError) as error:
            raise RuntimeError(f"Could not load the chat model {source!r} (CHAT_MODEL): {error}") from error
        self.source = source
        self.eos = self.tokenizer.eos_token_id
        config = self.model.config
        self.context_size = (getattr(config, "n_positions", None)
                             or getattr(config, "max_position_embeddings", None)
                             or self.tokenizer.model_max_length)
        self.max_new_tokens = min(max_new_tokens, self.context_size - 1)
        self.seed = seed
        self.generation = dict(max_new_tokens=self.max_new_tokens, min_new_tokens=min_new_tokens,
                               do_sample=do_sample, no_repeat_ngram_size=no_repeat_ngram_size,
                               pad_token_id=self.eos, eos_token_id=self.eos)
        if do_sample:
            self.generation.update(top_p=top_p, temperature=temperature)
        self._lock = threading.Lock()

    def prompt_ids(self, texts):
        """Token ids of the conversation, newest turns kept, fitting the window with the reply."""
        budget = self.context_size - self.max_new_tokens
        kept = []
        for text in reversed(texts):
            ids = self.tokenizer.encode(text) + [self.eos]
            if len(ids) > budget - len(kept):
                if not kept:  # the newest turn alone is too long: keep its end
                    kept = ids[-budget:]
                break
            kept = ids + kept
        return kept

    def reply(self, texts):
        """The model's answer to a conversation given as a list of turn texts, oldest first."""
        return self.tokenizer.decode(self.reply_ids(texts), skip_special_tokens=True).strip()

    def reply_ids(self, texts):
        """The token ids the model generates after the conversation's prompt."""
        ids = self.prompt_ids(texts)
        input_ids = torch.tensor([ids])
        try:
            with self._lock, torch.inference_mode():
                if self.seed is not None:
                    torch.manual_seed(self.seed)
                output = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                             **self.generation)
        except Exception as error:
            raise ModelError(str(error)) from error
        return output[0, len(ids):].tolist()


def init_app(app):
    """Load the model named by CHAT_MODEL once, unless the config hands over a ready model."""
    source = app.config["CHAT_MODEL"]
    if hasattr(source, "reply"):
        model = source
    else:
        model = ChatModel(
            source,
            max_new_tokens=app.config["CHAT_MAX_NEW_TOKENS"],
            min_new_tokens=app.config["CHAT_MIN_NEW_TOKENS"],
            do_sample=app.config["CHAT_DO_SAMPLE"],
            top_p=app.config["CHAT_TOP_P"],
            temperature=app.config["CHAT_TEMPERATURE"],
            no_repeat_ngram_size=app.config["CHAT_NO_REPEAT_NGRAM_SIZE"],
            seed=app.config["CHAT_SEED"],
        )
    app.extensions["chat_model"] = model


def current_model():
    """The chat model of the app handling this request."""
    return current_app.extensions["chat_model"]
