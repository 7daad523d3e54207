"""Build hxstate's small conversational model from scratch, deterministically, on the CPU.

    .venv/bin/python scripts/train_chat_model.py train [--out models/hxstate-chat] [--steps 3000]
    .venv/bin/python scripts/train_chat_model.py evaluate [models/hxstate-chat]

Data: the English conversations of the `chatterbot-corpus` package (BSD-3-Clause). Tokenizer: a
byte-level BPE trained with `tokenizers`, eos `<|endoftext|>`. Model: a small GPT2LMHeadModel trained
on DialoGPT-format sequences (turns joined by eos). Output: safetensors weights, config, tokenizer
files and a model card, loadable with `from_pretrained(folder)`.
"""

import argparse
import hashlib
import math
import os
import random
import sys
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
EOS = "<|endoftext|>"
PROMPTS = [["hello"], ["how are you?"], ["what is your name?"], ["tell me a joke"],
           ["hi", "Hello", "what do you like to do?"]]


def corpus_dir():
    """The English data folder of the installed chatterbot-corpus package."""
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data" / "english"


def load_conversations(folder):
    """Every distinct conversation of the YAML files in `folder`, as lists of turn strings."""
    conversations, seen = [], set()
    for path in sorted(Path(folder).glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [" ".join(str(turn).split()) for turn in conversation if turn is not None]
            # Some files repeat a conversation a hundred times, which would drown out the rest.
            if len(turns) >= 2 and all(turns) and tuple(turns) not in seen:
                seen.add(tuple(turns))
                conversations.append(turns)
    return conversations


def split(conversations, share=0.1):
    """A stable train / validation / held-out split by hash of the conversation's text.

    Validation picks the checkpoint; the held-out part is only ever reported.
    """
    train, validation, held_out = [], [], []
    for turns in conversations:
        digest = hashlib.sha256("\n".join(turns).encode()).digest()[0] / 256
        (held_out if digest < share else validation if digest < 2 * share else train).append(turns)
    return train, validation, held_out


def augment(conversations):
    """Each conversation as written and in lower case, the way people often type in a chat box."""
    lowered = [[turn.lower() for turn in turns] for turns in conversations]
    return conversations + [turns for turns in lowered if turns not in conversations]


def train_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer wrapped as a transformers fast tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS,
                                   unk_token=EOS, pad_token=EOS, model_max_length=None)


def encode(tokenizer, turns, limit):
    """DialoGPT format: every turn followed by eos, cut to `limit` tokens."""
    ids = []
    for turn in turns:
        ids += tokenizer.encode(turn) + [tokenizer.eos_token_id]
    return ids[:limit]


def batches(sequences, batch_size, rng, pad):
    """Endless batches of conversations of similar length (little padding), in shuffled order."""
    while True:
        order = list(range(len(sequences)))
        rng.shuffle(order)
        order.sort(key=lambda i: len(sequences[i]))  # stable: equal lengths stay shuffled
        groups = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        rng.shuffle(groups)
        for group in groups:
            yield collate([sequences[i] for i in group], pad)


def collate(chosen, pad):
    width = max(len(s) for s in chosen)
    ids = torch.full((len(chosen), width), pad)
    mask = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, sequence in enumerate(chosen):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        mask[row, :len(sequence)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def held_out_loss(model, sequences, pad, batch_size=64):
    """Mean token loss over the held-out conversations."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            ids, mask, labels = collate(sequences[start:start + batch_size], pad)
            count = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * count
            tokens += count
    model.train()
    return total / max(tokens, 1)


def train(args):
    """Train the tokenizer and the model; write the folder with its model card."""
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    conversations = load_conversations(args.corpus or corpus_dir())
    training, validation, evaluation = split(conversations)
    counts = (len(training), len(validation), len(evaluation))
    training = augment(training)
    tokenizer = train_tokenizer([turn for turns in training for turn in turns], args.vocab_size)
    pad = tokenizer.eos_token_id
    sequences = [encode(tokenizer, turns, args.train_length) for turns in training]
    checks = [encode(tokenizer, turns, args.n_positions) for turns in validation]
    held_out = [encode(tokenizer, turns, args.n_positions) for turns in evaluation]
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=pad,
                        eos_token_id=pad, pad_token_id=pad)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))))
    stream = batches(sequences, min(args.batch_size, len(sequences)), random.Random(args.seed), pad)
    best_loss, best_step, best_state = math.inf, 0, None
    model.train()
    for step in range(1, args.steps + 1):
        ids, mask, labels = next(stream)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % max(1, args.steps // 20) == 0 or step == args.steps:
            validation_loss = held_out_loss(model, checks, pad)
            print(f"step {step}/{args.steps}  train loss {loss.item():.3f}  "
                  f"validation loss {validation_loss:.3f}", flush=True)
            if validation_loss < best_loss:
                best_loss, best_step = validation_loss, step
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
    # The corpus is small: the last checkpoint answers small talk with the corpus' own phrases, while
    # the one with the lowest validation loss (reported in the card) generalises a little better.
    if args.keep == "best":
        model.load_state_dict(best_state)
    args.best_step, args.best_loss = best_step, best_loss
    args.kept_step = best_step if args.keep == "best" else args.steps
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    report = evaluation_report(model, tokenizer, held_out, pad)
    write_card(out, args, model, counts, report)
    print(report)


def reply(model, tokenizer, turns, max_new_tokens=40):
    """Greedy reply to a conversation, the way the app's ChatModel builds its prompt."""
    ids = torch.tensor([encode(tokenizer, turns, model.config.n_positions - max_new_tokens)])
    with torch.inference_mode():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                min_new_tokens=1, do_sample=False, no_repeat_ngram_size=3, pad_token_id=tokenizer.eos_token_id,
                                eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def evaluation_report(model, tokenizer, held_out, pad):
    """Held-out loss and perplexity, then the replies to the fixed small-talk prompts."""
    loss = held_out_loss(model, held_out, pad)
    lines = [f"held-out conversations: {len(held_out)}",
             f"held-out loss: {loss:.3f}  perplexity: {math.exp(loss):.1f}", ""]
    for turns in PROMPTS:
        lines.append(" / ".join(f"> {turn}" for turn in turns))
        lines.append(f"  {reply(model, tokenizer, turns)}")
    return "\n".join(lines)


def evaluate(args):
    """Print the evaluation of a built model folder."""
    model = GPT2LMHeadModel.from_pretrained(args.folder).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.folder)
    *_, evaluation = split(load_conversations(args.corpus or corpus_dir()))
    held_out = [encode(tokenizer, turns, model.config.n_positions) for turns in evaluation]
    print(evaluation_report(model, tokenizer, held_out, tokenizer.eos_token_id))


def write_card(out, args, model, counts, report):
    """The model card: what it is, what it learned from, how to rebuild it, what it cannot do."""
    parameters = sum(p.numel() for p in model.parameters())
    size = (out / "model.safetensors").stat().st_size
    command = " ".join(["scripts/train_chat_model.py", "train"] + [
        f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items()
        if name not in ("command", "func", "out", "corpus", "kept_step", "best_step", "best_loss")])
    (out / "README.md").write_text(f"""# {out.name}

A small DialoGPT-format conversational model that ships with hxstate, so the chat works offline.
Point `HXSTATE_CHAT_MODEL` at `microsoft/DialoGPT-medium` (or any causal LM folder) for a real one.

- Architecture: GPT-2 (`GPT2LMHeadModel`), {args.n_layer} layers, {args.n_embd} wide, {args.n_head} heads,
  context {args.n_positions} tokens; {parameters:,} parameters; weights {size / 1e6:.1f} MB (safetensors, float32).
- Tokenizer: byte-level BPE, {args.vocab_size} tokens, eos `{EOS}` (turns are joined by it, as in DialoGPT).
- Data: the English conversations of the PyPI package `chatterbot-corpus` 1.3.3 (BSD-3-Clause),
  {counts[0]} conversations for training (each also in lower case), {counts[1]} for validation and
  {counts[2]} held out for the figures below (a stable split by hash).
- Training: {args.steps} steps of AdamW (lr {args.lr}, batch {args.batch_size}, warmup then cosine), seed {args.seed},
  on the CPU; kept: the {"checkpoint with the lowest validation loss" if args.keep == "best" else "last checkpoint"} (step {args.kept_step});
  the lowest validation loss, {args.best_loss:.3f}, was reached at step {args.best_step}.
- Licence: the weights are derived from BSD-3-Clause data and are distributed with hxstate.

## Rebuild

    .venv/bin/pip install -r requirements-model.txt
    .venv/bin/python {command}

The same seed on the same software gives the same weights.

## Evaluation (`scripts/train_chat_model.py evaluate`, greedy decoding)

```
{report}
```

## Known limits

It has seen only about a thousand short English small-talk exchanges: it answers greetings and
common small-talk questions with phrases from that corpus, often repeats itself, knows no facts
beyond it and does not follow a long conversation. It is a demo of the plumbing, not a chatbot to
rely on.
""", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("train", help="build the model folder")
    build.add_argument("--out", default=str(ROOT / "models" / "hxstate-chat"))
    build.add_argument("--corpus", help="a folder of chatterbot-style YAML files (default: the package's English data)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--steps", type=int, default=2000)
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--lr", type=float, default=1e-3)
    build.add_argument("--vocab-size", type=int, default=2000)
    build.add_argument("--n-layer", type=int, default=4)
    build.add_argument("--n-embd", type=int, default=128)
    build.add_argument("--n-head", type=int, default=4)
    build.add_argument("--n-positions", type=int, default=256)
    build.add_argument("--keep", choices=["best", "last"], default="last",
                       help="the checkpoint with the lowest validation loss, or the last one")
    build.add_argument("--train-length", type=int, default=128, help="longest training sequence")
    build.set_defaults(func=train)
    check = commands.add_parser("evaluate", help="print held-out loss and sample replies")
    check.add_argument("folder", nargs="?", default=str(ROOT / "models" / "hxstate-chat"))
    check.add_argument("--corpus")
    check.set_defaults(func=evaluate)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
