"""The chat model: a transformers causal LM, loaded once per process (by background_model.py) and
shared by every request.

Prompts follow DialoGPT: the conversation's turns, each followed by the tokenizer's eos token,
trimmed from the oldest turn so that prompt + `max_new_tokens` fits the model's context window.

`generate` answers jobs (see `generation.py`) a decoding step at a time for all of them at once
(continuous batching, as vLLM and TGI schedule): a job that arrives joins at the next step, and a
row that ends leaves at once. The decoding is transformers' (greedy or sampled, repetition
penalty, no-repeat n-grams, min new tokens) row by row, so a reply is the same token for token
alone or beside others. transformers' `generate` cannot take a row in mid-way, and its own
`ContinuousBatchingManager` does not decode as the shipped model needs: it drops the repetition
penalty, ignores min new tokens, and its no-repeat n-grams fail the whole batch from three rows on
(bench/README.md), hence this loop. One `generate` runs at a time per process (a lock): torch
already spreads one forward pass over every core, and a tokenizer or model shared between threads
is not documented as safe to call concurrently.
"""

import threading
import time

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from .background_model import DECODING, about
from .generation import Job, ModelError

TIME_LIMIT = "time limit"


class _Row:
    """One reply being generated: its job, its tokens so far, and what decoding bans next."""

    def __init__(self, job, prompt, ngram_size, seed):
        self.job = job
        self.ids = []  # the reply's tokens
        self.length = len(prompt)  # tokens of this row in the cache (left padding excluded)
        self.history = list(prompt)  # prompt and reply, for the n-grams
        self.seen = set(prompt)  # for the repetition penalty
        self.ngram_size = ngram_size
        self.ngrams = {}  # each (n-1)-gram of the history -> the tokens that followed it
        for end in range(ngram_size, len(self.history) + 1) if ngram_size else ():
            self._count_ngram(end)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _count_ngram(self, end):
        gram = self.history[end - self.ngram_size:end]
        self.ngrams.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def banned(self):
        """The tokens that would repeat an n-gram of the history (transformers' no_repeat_ngram_size)."""
        if not self.ngram_size or len(self.history) < self.ngram_size - 1:
            return ()
        return self.ngrams.get(tuple(self.history[len(self.history) - self.ngram_size + 1:]), ())

    def append(self, token):
        self.ids.append(token)
        self.history.append(token)
        self.seen.add(token)
        if self.ngram_size and len(self.history) >= self.ngram_size:
            self._count_ngram(len(self.history))


class _Batch:
    """The rows being generated together, and their KV cache: rows join and leave between steps.

    Rows are aligned on the right: a row shorter than the cache is padded on its left, masked out,
    and given its own positions, so that each row computes what it would alone. Columns that only
    padding uses are cut once the rows that needed them have left.
    """

    def __init__(self, chat):
        self.chat = chat
        self.rows = []
        self.cache = None  # the model's DynamicCache, batch-first
        self.mask = None  # 1 where a row has a token in the cache, 0 for its left padding

    def join(self, jobs):
        """Read the prompts of `jobs` in one forward pass (left-padded) and add their rows."""
        chat = self.chat
        prompts = [chat.prompt_ids(job.texts) for job in jobs]
        width = max(map(len, prompts))
        ids = torch.tensor([[chat.eos] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = chat.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1)
        rows = [_Row(job, p, chat.no_repeat_ngram_size, chat.seed) for job, p in zip(jobs, prompts)]
        self._add(rows, output.cache, mask)
        self._choose(output.logits[:, -1, :], first=len(self.rows) - len(rows))

    def step(self):
        """One decoding step for every row: each gets its next token."""
        tokens = torch.tensor([[row.ids[-1]] for row in self.rows])
        positions = torch.tensor([[row.length] for row in self.rows])
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        output = self.chat.model(input_ids=tokens, attention_mask=self.mask, position_ids=positions,
                                 cache=self.cache, use_cache=True)
        for row in self.rows:
            row.length += 1
        self._choose(output.logits[:, -1, :])

    def end_expired(self):
        """End the rows whose job is past its deadline or was stopped, where they are."""
        for row in self.rows:
            if row.job.expired():
                if row.job.stopped is None:
                    row.job.stopped = TIME_LIMIT
                self._finish(row)
        self._drop_finished()

    def _choose(self, scores, first=0):
        """Pick the next token of rows `first`... from their scores, and hand it to their jobs."""
        chat, rows = self.chat, self.rows[first:]
        scores = scores.float()
        if chat.repetition_penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor
            at = (torch.tensor([k for k, row in enumerate(rows) for _ in row.seen]),
                  torch.tensor([token for row in rows for token in row.seen]))
            picked = scores[at]
            scores[at] = torch.where(picked < 0, picked * chat.repetition_penalty, picked / chat.repetition_penalty)
        if chat.no_repeat_ngram_size:
            for k, row in enumerate(rows):
                if banned := row.banned():
                    scores[k, list(banned)] = -float("inf")
        early = [len(row.ids) < chat.min_new_tokens for row in rows]
        if any(early):
            scores[torch.tensor(early), chat.eos] = -float("inf")
        if chat.warpers:
            probabilities = chat.warpers(None, scores).softmax(-1)
            tokens = [int(torch.multinomial(probabilities[k], 1, generator=row.generator))
                      for k, row in enumerate(rows)]
        else:
            tokens = scores.argmax(-1).tolist()
        for row, token in zip(rows, tokens):
            self._hand_over(row, token)
        self._drop_finished()

    def _hand_over(self, row, token):
        chat, job = self.chat, row.job
        if token == chat.eos:
            self._finish(row)
            return
        row.append(token)
        job.tokens = len(row.ids)
        if len(row.ids) >= chat.max_new_tokens:
            self._finish(row)
            return
        text = chat.decode(row.ids, final=False)
        if text is not None and text != job.text:
            job.publish(text)

    def _finish(self, row):
        row.job.finish(self.chat.decode(row.ids))

    def _add(self, rows, cache, mask):
        if self.cache is None:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self.rows = self.rows + rows

    def _drop_finished(self):
        """Free the places of finished rows at once, and the columns only their padding needed."""
        keep = [k for k, row in enumerate(self.rows) if not row.job.ending]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[k] for k in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        start = int(self.mask.any(0).int().argmax())  # the first column that some row still uses
        if start:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]


def _left_pad(tensor, width, dim=2):
    """`tensor` padded with zeros on the left of dimension `dim` to `width`."""
    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


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
        self.no_repeat_ngram_size = settings["no_repeat_ngram_size"] or 0
        if not settings["do_sample"]:
            del settings["temperature"], settings["top_p"]
        # The settings as transformers' `generate` takes them (bench/chat.py compares with it).
        self.generation = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.eos, eos_token_id=self.eos,
                               **{name: value for name, value in settings.items() if value is not None})
        self.generation["min_new_tokens"] = self.min_new_tokens = self.generation.get("min_new_tokens") or 1
        self.repetition_penalty = self.generation.get("repetition_penalty") or 1.0
        self.warpers = None
        if self.generation.get("do_sample"):
            # In generate's order, with its defaults (top_k from the model's generation config).
            self.warpers = LogitsProcessorList([TemperatureLogitsWarper(self.generation.get("temperature") or 1.0)])
            if own.top_k:
                self.warpers.append(TopKLogitsWarper(own.top_k))
            self.warpers.append(TopPLogitsWarper(self.generation.get("top_p") or 1.0))
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

    def generate(self, jobs, more=None):
        """Generate the replies of `jobs`, publishing their text as it grows, and of the jobs that
        `more()` hands over between decoding steps, until none is left.

        Each row leaves as soon as it ends (eos, `max_new_tokens`, its deadline or a stop), and each
        newcomer's prompt is read before the next step, so a reply waits at most one step to start.
        """
        batch = _Batch(self)
        try:
            with self._lock, torch.inference_mode():
                while jobs or batch.rows:
                    if jobs:
                        batch.join(jobs)
                    batch.end_expired()
                    if batch.rows:
                        batch.step()
                    jobs = more() if more else []
        except Exception as error:
            raise ModelError(str(error)) from error

    def reply(self, texts, time_limit=3600):
        """The model's answer to one conversation given as turn texts, oldest first, right here."""
        job = Job(texts, time.monotonic() + time_limit)
        self.generate([job])
        return job.result()

