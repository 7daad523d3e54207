"""The chat model: a transformers causal LM, loaded once per process (by background_model.py) and
shared by every request.

Prompts follow DialoGPT: the conversation's turns, each followed by the tokenizer's eos token,
trimmed from the oldest turn so that prompt + `max_new_tokens` fits the model's context window.

`generate` answers a batch of jobs (see `generation.py`) in one `model.generate`: prompts padded
on the left with an attention mask, each row stopping on its own at eos or at its job's deadline,
and each job's text published as its tokens arrive. One `generate` runs at a time per process (a
lock): torch already spreads one forward pass over every core, so a second concurrent `generate`
would only slow both down, and a tokenizer or model shared between threads is not documented as
safe to call concurrently.
"""

import threading
import time

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          StoppingCriteria, StoppingCriteriaList)
from transformers.generation.streamers import BaseStreamer

from .background_model import DECODING, about
from .generation import Job, ModelError

TIME_LIMIT = "time limit"


class _RowStreamer(BaseStreamer):
    """Hands each row's new tokens to its job, as text that only ever grows."""

    def __init__(self, model, jobs):
        self.model, self.jobs = model, jobs
        self.ids = [[] for _ in jobs]
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        for row, (job, token) in enumerate(zip(self.jobs, value.tolist())):
            if job.done:
                continue
            if token == self.model.eos:
                job.finish(self.model.decode(self.ids[row]))
                continue
            self.ids[row].append(token)
            job.tokens = len(self.ids[row])
            text = self.model.decode(self.ids[row], final=False)
            if text is not None and text != job.text:
                job.publish(text)

    def end(self):
        for row, job in enumerate(self.jobs):
            job.finish(self.model.decode(self.ids[row]))


class NoRepeatNGrams(LogitsProcessor):
    """transformers' `no_repeat_ngram_size`, blind to each row's left padding.

    The padding is eos tokens, like the turn separators: counted as text, it would make n-grams
    that the same prompt alone does not have, and a batched reply could differ from a lone one.
    """

    def __init__(self, size, pads):
        self.size, self.pads = size, pads

    def __call__(self, input_ids, scores):
        for row, pad in enumerate(self.pads):
            tokens = input_ids[row, pad:].tolist()
            start = len(tokens) - self.size + 1  # where the n-gram being completed starts
            if start < 0:
                continue
            tail = tokens[start:]
            banned = [tokens[i + self.size - 1] for i in range(start)
                      if tokens[i:i + self.size - 1] == tail]
            scores[row, banned] = -float("inf")
        return scores


class _Deadlines(StoppingCriteria):
    """Stops each row whose job is past its deadline or was given up."""

    def __init__(self, jobs, eos):
        self.jobs, self.eos = jobs, eos

    def __call__(self, input_ids, scores, **kwargs):
        stop = [job.expired() for job in self.jobs]
        for job, stopping, last in zip(self.jobs, stop, input_ids[:, -1].tolist()):
            if stopping and last != self.eos and job.stopped is None:
                job.stopped = TIME_LIMIT
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


class ChatModel:
    """A DialoGPT-style conversational model."""

    def __init__(self, source, *, max_new_tokens=40, seed=None, **decoding):
        """Load `source`; each decoding setting (DECODING) left None comes from the model's own
        generation config, where a shipped model keeps the defaults measured for it."""
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            # float32 on the CPU, whatever the stored dtype (the shipped model is stored as float16).
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
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
        own = self.model.generation_config
        settings = {name: decoding.get(name) if decoding.get(name) is not None else getattr(own, name, None)
                    for name in DECODING}
        self.no_repeat_ngram_size = settings.pop("no_repeat_ngram_size") or 0
        if not settings["do_sample"]:
            del settings["temperature"], settings["top_p"]
        # no_repeat_ngram_size=0: transformers' own would count the left padding (NoRepeatNGrams).
        self.generation = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.eos,
                               eos_token_id=self.eos, no_repeat_ngram_size=0,
                               **{name: value for name, value in settings.items() if value is not None})
        self.generation["min_new_tokens"] = self.generation.get("min_new_tokens") or 1
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.about = about(source, self.parameters)
        self._lock = threading.Lock()

    def prompt_ids(self, texts, budget=None):
        """Token ids of the conversation, newest turns kept, fitting the window with the reply (or
        in `budget` tokens)."""
        budget = budget or self.context_size - self.max_new_tokens
        kept = []
        for text in reversed(texts):
            # Typed text stays text: "<|endoftext|>" in a message cannot forge a turn separator.
            ids = self.tokenizer.encode(text, split_special_tokens=True) + [self.eos]
            if len(ids) > budget - len(kept):
                if not kept:  # the newest turn alone is too long: keep its end
                    kept = ids[-budget:]
                break
            kept = ids + kept
        return kept

    def decode(self, ids, final=True):
        """A reply's text from its token ids; unfinished, None while a character is still split."""
        # Without the clean-up of spaces, the text of more tokens always extends the text of fewer.
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if not final and text.endswith("\ufffd"):  # a character whose bytes span tokens to come
            return None
        return text.strip()

    def generate(self, jobs):
        """Generate the replies of a batch of jobs in one go, publishing their text as it grows."""
        prompts = [self.prompt_ids(job.texts) for job in jobs]
        width = max(map(len, prompts))
        pads = [width - len(ids) for ids in prompts]
        input_ids = torch.tensor([[self.eos] * pad + ids for pad, ids in zip(pads, prompts)])
        mask = torch.tensor([[0] * pad + [1] * len(ids) for pad, ids in zip(pads, prompts)])
        try:
            with self._lock, torch.inference_mode():
                if self.seed is not None:
                    torch.manual_seed(self.seed)
                processors = LogitsProcessorList()
                if self.no_repeat_ngram_size:
                    processors.append(NoRepeatNGrams(self.no_repeat_ngram_size, pads))
                self.model.generate(input_ids, attention_mask=mask, streamer=_RowStreamer(self, jobs),
                                    logits_processor=processors,
                                    stopping_criteria=StoppingCriteriaList([_Deadlines(jobs, self.eos)]),
                                    **self.generation)
        except Exception as error:
            raise ModelError(str(error)) from error

    def reply(self, texts, time_limit=3600):
        """The model's answer to one conversation given as turn texts, oldest first, right here."""
        job = Job(texts, time.monotonic() + time_limit)
        self.generate([job])
        return job.result()

