"""The chat model of a serving process, loaded in a background thread so that pages are served at once.

Importing torch and transformers takes several seconds of CPU, more than the rest of the app's
start, and only a reply needs them. So the app starts with a handle that knows the model's name and
size from its files, and each process loads the model itself in a thread: gunicorn starts it in
every worker as the worker boots (`post_worker_init` in gunicorn.conf.py); elsewhere the first reply
starts it. A reply asked for before the model is ready waits for it, within its time limit.

Several gunicorn workers would each hold a copy of the weights loaded that way, so with more than
one worker the master loads the model before it forks them (`preload`), and they share it
copy-on-write: their start waits for the load, as it always did.
"""

import math
import threading
from functools import cached_property
from pathlib import Path

from flask import current_app

from .generation import ModelError

# The decoding settings that CHAT_* can set and that otherwise come from the model's generation config.
DECODING = ("do_sample", "temperature", "top_p", "repetition_penalty", "no_repeat_ngram_size",
            "min_new_tokens")


class BackgroundModel:
    """A `ChatModel` (chat_model.py) that loads in a thread of its own; `generate` waits for it."""

    def __init__(self, source, logger, **settings):
        self.source, self.settings, self.logger = source, settings, logger
        self.threads = None
        self._ready = threading.Event()
        self._loading = threading.Lock()  # held for the whole load
        self._starting = threading.Lock()  # held only to start one loading thread
        self._started = False
        self._model = self._error = None

    def use_threads(self, count):
        """Give torch `count` threads in this process: now if the model is loaded, else as it loads."""
        self.threads = count
        if self._model is not None:
            import torch

            torch.set_num_threads(count)

    def start(self, then=None):
        """Load the model in a background thread, unless this process already has or loads it;
        call `then()` there once it has loaded."""
        with self._starting:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self.load, args=(then,), name="model-loading", daemon=True).start()

    def load(self, then=None):
        """Load the model here and now, unless it is loaded already, then call `then()`; a failure is
        kept for `get`."""
        with self._starting:
            self._started = True
        with self._loading:
            if self._ready.is_set():
                return
            try:
                import torch

                from .chat_model import ChatModel

                if self.threads:
                    torch.set_num_threads(self.threads)
                self._model = ChatModel(self.source, **self.settings)
                if then is not None:
                    then()
            except Exception as error:  # noqa: BLE001 - every reply reports it, the log says it once
                self.logger.exception("could not load the chat model %r", self.source)
                self._error = error
            finally:
                self._ready.set()

    def get(self):
        """The loaded `ChatModel`, once ready (loading starts here if nothing started it)."""
        self.start()
        self._ready.wait()
        if self._error is not None:
            raise ModelError(f"the chat model could not be loaded: {self._error}") from self._error
        return self._model

    def generate(self, jobs, more=None):
        """Generate the replies of jobs (see `ChatModel.generate`), once the model is ready."""
        self.get().generate(jobs, more)

    @cached_property
    def about(self):
        """The chat page's line on the model, from its files: no need to load it."""
        return about(self.source, stored_parameters(self.source))


def stored_parameters(source):
    """The number of parameters in a local model folder's safetensors files, or None."""
    from safetensors import safe_open

    files = sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    total = 0
    for path in files:
        with safe_open(path, framework="numpy") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total or None


def about(source, parameters):
    """One line on the model for the chat page: its name, size and, from its card, its training data."""
    from huggingface_hub.repocard import metadata_load

    name = Path(source).name if Path(source).is_dir() else source
    line = f"{name}, {parameters / 1e6:.0f} M parameters" if parameters and parameters >= 1e6 else name
    card = Path(source) / "README.md"
    # `summary` in the card's front matter is hxstate's one line about the model.
    summary = card.is_file() and (metadata_load(card) or {}).get("summary")
    return f"{line}, {summary}" if summary else line


def preload(app):
    """Load the app's chat model in this process now; raise ModelError if it cannot be loaded."""
    model = app.extensions["chat_model"]
    if isinstance(model, BackgroundModel):
        model.load()
        model.get()


def start_loading(app, threads, then=None):
    """Start loading the app's chat model in this process, with `threads` torch threads; call
    `then()` once it has loaded."""
    model = app.extensions["chat_model"]
    if isinstance(model, BackgroundModel):
        model.use_threads(threads)
        model.start(then)


def init_app(app):
    """Give the app a handle on the model named by CHAT_MODEL, unless the config hands over a ready one."""
    source = app.config["CHAT_MODEL"]
    if hasattr(source, "generate"):
        model = source
    else:
        model = BackgroundModel(source, app.logger, max_new_tokens=app.config["CHAT_MAX_NEW_TOKENS"],
                                seed=app.config["CHAT_SEED"],
                                **{name: app.config[f"CHAT_{name.upper()}"] for name in DECODING})
    app.extensions["chat_model"] = model


def current_model():
    """The chat model of the app handling this request."""
    return current_app.extensions["chat_model"]
