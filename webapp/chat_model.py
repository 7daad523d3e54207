"""The chat model: a transformers causal LM, loaded once per process (by background_model.py) and
shared by every request.

Prompts follow DialoGPT: the conversation's turns, each followed by the tokenizer's eos token,
trimmed from the oldest turn so that prompt + `max_new_tokens` fits the model's context window.

`generate` answers jobs (see `generation.py`) a decoding step at a time for all of them at once
(continuous batching, as vLLM and TGI schedule): a job that arrives joins at the next step, its
prompt read in the same forward pass as the others' next tokens, and a row that ends leaves at once.
The decoding is transformers' (greedy or sampled, repetition penalty, no-repeat n-grams, min new
tokens) row by row, so a reply is the same token for token alone or beside others. transformers'
`generate` cannot take a row in mid-way, and its own `ContinuousBatchingManager` does not decode as
the shipped model needs: it drops the repetition penalty, ignores min new tokens, and its no-repeat
n-grams fail the whole batch from three rows on (bench/README.md), hence this loop. One `generate`
runs at a time per process (a lock): torch already spreads one forward pass over every core, and a
tokenizer or model shared between threads is not documented as safe to call concurrently.
"""

import threading
import time

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, Cache, DynamicLayer, LogitsProcessorList,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from .background_model import DECODING, about
from .generation import Job, ModelError

TIME_LIMIT = "time limit"


class _Row:
    """One reply being generated: its job, its tokens so far, and what decoding bans next."""

    def __init__(self, job, prompt, ngram_size, seed, number=0):
        self.job = job
        self.number = number  # which row of its batch it is, for the columns of the cache
        self.prompt = prompt
        self.ids = []  # the reply's tokens
        self.length = 0  # tokens of this row in the cache
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


class _GrowingLayer(DynamicLayer):
    """A layer of the KV cache that grows in place: each pass writes its new columns into a buffer
    kept with room to spare, where transformers' `DynamicLayer` copies the whole layer to add them
    (with this layer, 8 rows of about 185 tokens took 0.93 x the time, bench/README.md)."""

    ROOM = 256  # spare columns: a step of 8 rows fills them in 32 steps, then the buffer is copied once

    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        self._buffers = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if self._buffers is None or end > self._buffers[0].shape[-2]:
            shape = (*key_states.shape[:-2], end + self.ROOM, key_states.shape[-1])
            buffers = key_states.new_empty(shape), value_states.new_empty(shape)
            if start:
                buffers[0][..., :start, :], buffers[1][..., :start, :] = self.keys, self.values
            self._buffers = buffers
        self._buffers[0][..., start:end, :] = key_states
        self._buffers[1][..., start:end, :] = value_states
        self._use(end)
        return self.keys, self.values

    def keep(self, columns):
        """Keep only the `columns` (a tensor of their indices, in order), in place."""
        self._buffers[0][..., :len(columns), :] = self.keys[..., columns, :]
        self._buffers[1][..., :len(columns), :] = self.values[..., columns, :]
        self._use(len(columns))

    def _use(self, length):
        self.keys, self.values = self._buffers[0][..., :length, :], self._buffers[1][..., :length, :]


class _Batch:
    """The rows being generated together, packed into one sequence as vLLM packs them: each forward
    pass reads the newest token of every running row and the whole prompt of every row that joined,
    and a mask keeps each token to the earlier tokens of its own row.

    A newcomer's prompt so costs no pass of its own: on a CPU, a pass over a few dozen tokens costs
    about what a pass over one token per row does (the weights are read once either way), and a
    prompt read alone cost every other row a step (bench/README.md). The KV cache holds the rows'
    columns side by side; a row that ends leaves at once, and the columns of rows that left are
    dropped once they outnumber the others.
    """

    def __init__(self, chat):
        self.chat = chat
        self.rows = []
        self.cache = None  # the KV cache: one sequence of every row's columns
        self.owners = torch.zeros(0, dtype=torch.long)  # the row that each column of the cache is of; -1 once it left
        self._joined = 0  # rows that ever joined, which numbers them

    def join(self, jobs):
        """Add rows for `jobs`: their prompts are read in the next pass."""
        chat = self.chat
        for job in jobs:
            self.rows.append(_Row(job, chat.prompt_ids(job.texts), chat.no_repeat_ngram_size, chat.seed,
                                  number=self._joined))
            self._joined += 1

    def step(self):
        """One forward pass: every running row gets its next token, and every new row whose prompt
        fits (a context's worth of prompt tokens a pass) has it read and gets its first token."""
        reading, budget = [], self.chat.context_size
        tokens, owners, positions, last = [], [], [], []
        for row in self.rows:
            if row.ids:  # running: its newest token
                new = [row.ids[-1]]
            elif len(row.prompt) <= budget:  # the first always fits: a prompt is shorter than the context
                new = row.prompt
                budget -= len(new)
            else:  # read in a later pass, so that one pass stays within a context's worth of prompts
                continue
            reading.append(row)
            tokens += new
            owners += [row.number] * len(new)
            positions += range(row.length, row.length + len(new))
            row.length += len(new)
            last.append(len(tokens) - 1)
        owners = torch.tensor(owners)
        columns = torch.cat([self.owners, owners])
        if len(reading) == 1 and bool((self.owners == reading[0].number).all()):
            # A row alone in the cache needs only the causal mask the model makes for a row without
            # padding (which spares the shipped model 6 % of a lone reply's time).
            mask = torch.ones(1, len(columns), dtype=torch.long)
        else:
            # Each token sees its own row's columns: those in the cache, and those before it in this pass.
            visible = (columns[None, :] == owners[:, None]) & (
                torch.arange(len(columns))[None, :] <= torch.arange(len(self.owners), len(columns))[:, None])
            mask = torch.zeros(visible.shape).masked_fill_(~visible, torch.finfo(torch.float32).min)[None, None]
        if self.cache is None:
            self.cache = Cache(layer_class_to_replicate=_GrowingLayer)
        output = self.chat.model(input_ids=torch.tensor([tokens]), attention_mask=mask,
                                 position_ids=torch.tensor([positions]), cache=self.cache, use_cache=True,
                                 logits_to_keep=torch.tensor(last))
        self.owners = columns
        self._choose(output.logits[0], reading)

    def end_expired(self):
        """End the rows whose job is past its deadline or was stopped, where they are."""
        for row in self.rows:
            if row.job.expired():
                if row.job.stopped is None:
                    row.job.stopped = TIME_LIMIT
                self._finish(row)
        self._drop_finished()

    def _choose(self, scores, rows):
        """Pick the next token of `rows` from their scores, and hand it to their jobs."""
        chat = self.chat
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

    def _drop_finished(self):
        """Free the places of the rows that ended at once, and drop their columns once they outnumber
        the others'."""
        ended = [row.number for row in self.rows if row.job.ending]
        if not ended:
            return
        self.rows = [row for row in self.rows if not row.job.ending]
        if not self.rows:
            self.cache, self.owners = None, self.owners[:0]
            return
        self.owners[torch.isin(self.owners, torch.tensor(ended))] = -1
        live = self.owners >= 0
        if 2 * int(live.sum()) < len(self.owners):
            index = live.nonzero().squeeze(1)
            for layer in self.cache.layers:
                layer.keep(index)
            self.owners = self.owners[index]


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
        newcomer's prompt is read in the next pass, beside the others' next tokens.
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

