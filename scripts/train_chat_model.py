"""Build hxstate's small conversational model from scratch, deterministically, on the CPU.

    .venv/bin/python scripts/train_chat_model.py train [--out models/hxstate-chat] [--steps 3000]
    .venv/bin/python scripts/train_chat_model.py evaluate [models/hxstate-chat] [--choose] [--write]

Data: the conversations of the PyPI packages `chitchat-dataset` (MIT) and `chatterbot-corpus`
(BSD-3-Clause), split into train / validation / held-out by a hash of each conversation. Tokenizer:
a byte-level BPE trained with `tokenizers`, eos `<|endoftext|>`. Model: a GPT2LMHeadModel trained on
DialoGPT-format windows (turns joined by eos), stored as float16 safetensors. `evaluate` measures
the model on the held-out conversations, chooses the decoding defaults on the validation ones and,
with `--write`, stores them in `generation_config.json` and writes the model card.
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

import torch
import transformers
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
EOS = "<|endoftext|>"
SOURCES = ("chitchat", "chatterbot")


# --- data -------------------------------------------------------------------------------------

def clean(text):
    """One line of text, with the turn separator removed so that no turn can hold a forged one."""
    return " ".join(str(text).replace(EOS, " ").split())


def chitchat_conversations():
    """The conversations of the chitchat-dataset package, one turn per run of one speaker's messages."""
    import chitchat_dataset

    data = json.loads((Path(chitchat_dataset.__file__).parent / "dataset.json").read_text(encoding="utf-8"))
    conversations = []
    for key in sorted(data):
        turns = [clean(" ".join(message["text"] for message in run)) for run in data[key]["messages"]]
        turns = [turn for turn in turns if turn]
        if len(turns) >= 2:
            conversations.append(turns)
    return conversations


def chatterbot_conversations():
    """Every distinct English conversation of the chatterbot-corpus package."""
    import chatterbot_corpus

    conversations, seen = [], set()
    for path in sorted((Path(chatterbot_corpus.__file__).parent / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [clean(turn) for turn in conversation if turn is not None]
            # Some files repeat a conversation a hundred times, which would drown out the rest.
            if len(turns) >= 2 and all(turns) and tuple(turns) not in seen:
                seen.add(tuple(turns))
                conversations.append(turns)
    return conversations


def load_conversations(sources=SOURCES, limit=None):
    """The conversations of the named sources, in a stable order (by hash), at most `limit`."""
    loaders = {"chitchat": chitchat_conversations, "chatterbot": chatterbot_conversations}
    # Each conversation once: some are stored twice, and a copy would weigh it double.
    conversations = list({tuple(turns): turns for source in sources for turns in loaders[source]()}.values())
    conversations.sort(key=lambda turns: fingerprint(turns, "order"))
    return conversations[:limit] if limit else conversations


def fingerprint(turns, purpose):
    """A stable number in [0, 1) for a conversation; each purpose draws its own."""
    digest = hashlib.sha256("\n".join([purpose, *turns]).encode()).hexdigest()
    return int(digest[:12], 16) / 16 ** 12


def split(conversations, share=0.05):
    """A stable train / validation / held-out split by hash of the conversation's text.

    Validation picks the checkpoint and the decoding defaults; held-out is only ever reported.
    """
    train, validation, held_out = [], [], []
    for turns in conversations:
        digest = fingerprint(turns, "split")
        (held_out if digest < share else validation if digest < 2 * share else train).append(turns)
    return train, validation, held_out


# --- training ---------------------------------------------------------------------------------

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


def windows(tokenizer, turns, limit):
    """DialoGPT-format windows of whole consecutive turns, each at most `limit` tokens.

    Each window after the first starts halfway through the previous one, so every turn is learned
    with some of the conversation before it, as the app prompts the model.
    """
    encoded = [tokenizer.encode(turn)[:limit - 1] + [tokenizer.eos_token_id] for turn in turns]
    result, start = [], 0
    while start < len(encoded):
        end, size = start, 0
        while end < len(encoded) and size + len(encoded[end]) <= limit:
            size += len(encoded[end])
            end += 1
        result.append([token for ids in encoded[start:end] for token in ids])
        if end == len(encoded):
            break
        start = max(start + 1, (start + end) // 2)
    return result


def batches(sequences, batch_size, rng, pad):
    """Endless batches of windows of similar length (little padding), in shuffled order."""
    while True:
        order = list(range(len(sequences)))
        rng.shuffle(order)
        order.sort(key=lambda i: len(sequences[i]))  # stable: equal lengths stay shuffled
        groups = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        rng.shuffle(groups)
        for group in groups:
            yield collate([sequences[i] for i in group], pad)


def collate(chosen, pad):
    """Right-padded ids, attention mask and labels (padding ignored by the loss)."""
    width = max(len(s) for s in chosen)
    ids = torch.full((len(chosen), width), pad)
    mask = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, sequence in enumerate(chosen):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        mask[row, :len(sequence)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def mean_loss(model, sequences, pad, batch_size=64):
    """Mean token loss over `sequences`, in float32."""
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


def bfloat16_is_faster():
    """Whether this CPU multiplies bfloat16 matrices faster than float32: AMX does, while AVX2 alone
    emulates them (a 2-core AMD EPYC: 1.2 GFLOP/s in bfloat16, 92 in float32)."""
    square = torch.randn(256, 256)

    def seconds(dtype):
        matrix = square.to(dtype)
        matrix @ matrix
        started = time.perf_counter()
        for _ in range(3):
            matrix @ matrix
        return time.perf_counter() - started

    return seconds(torch.bfloat16) < seconds(torch.float32)


def train(args):
    """Train the tokenizer and the model; write the folder (weights, tokenizer, training facts)."""
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    if args.precision == "auto":
        args.precision = "bfloat16" if bfloat16_is_faster() else "float32"
    print(f"matrix products in {args.precision}", flush=True)
    conversations = load_conversations(args.sources.split(","), args.conversations)
    training, validation, evaluation = split(conversations)
    previous = None
    if args.init_from:  # a further stage: the earlier stage's tokenizer, shape and weights
        folder = Path(args.init_from)
        previous = json.loads((folder / "training.json").read_text())
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            setattr(args, name, previous[name])
    else:
        tokenizer = train_tokenizer([turn for turns in training for turn in turns], args.vocab_size)
    pad = tokenizer.eos_token_id
    sequences = [w for turns in training for w in windows(tokenizer, turns, args.n_positions)]
    checks = [w for turns in validation for w in windows(tokenizer, turns, args.n_positions)]
    checks = checks[:args.validation_windows]
    tokens = sum(map(len, sequences))
    print(f"{len(training)} training conversations, {len(sequences)} windows, {tokens} tokens", flush=True)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=pad,
                        eos_token_id=pad, pad_token_id=pad)
    model = (GPT2LMHeadModel.from_pretrained(args.init_from, dtype=torch.float32) if args.init_from
             else GPT2LMHeadModel(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warmup = max(1, args.steps // 30)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))))
    stream = batches(sequences, min(args.batch_size, len(sequences)), random.Random(args.seed), pad)
    every = max(1, args.steps // 20)
    best_loss, best_step, best_state, history = math.inf, 0, None, []
    model.train()
    for step in range(1, args.steps + 1):
        ids, mask, labels = next(stream)
        # bfloat16 products where they are faster (about twice float32 with AMX); weights stay float32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            print(f"step {step}  train loss {loss.item():.3f}  {time.monotonic() - started:.0f} s", flush=True)
        if step % every == 0 or step == args.steps:
            validation_loss = mean_loss(model, checks, pad)
            history.append([step, round(loss.item(), 3), round(validation_loss, 3)])
            print(f"step {step}/{args.steps}  train loss {loss.item():.3f}  validation loss "
                  f"{validation_loss:.3f}  {time.monotonic() - started:.0f} s", flush=True)
            if validation_loss < best_loss:
                best_loss, best_step = validation_loss, step
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Stored as float16 (half the size); loaded as float32, which measures the same (the card).
    model.half().save_pretrained(out, safe_serialization=True)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(out)
    facts = {key: value for key, value in vars(args).items() if key not in ("command", "func", "out")}
    facts.update(split=[len(training), len(validation), len(evaluation)],
                 training_windows=len(sequences), training_tokens=tokens, best_step=best_step,
                 best_validation_loss=round(best_loss, 3), history=history,
                 minutes=round((time.monotonic() - started) / 60, 1),
                 parameters=sum(p.numel() for p in model.parameters()), previous=previous)
    (out / "training.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"wrote {out}", flush=True)


# --- evaluation -------------------------------------------------------------------------------

# Three conversations of ordinary small talk, as a new user types them; the model's replies are fed
# back in as the app does.
CONVERSATIONS = [
    ["Hi", "How are you?", "What did you do today?", "That sounds nice. Do you have any hobbies?",
     "I like hiking too. Where do you like to go?", "What is your favorite food?",
     "Do you cook a lot?", "What kind of music do you listen to?", "Do you have any pets?", "Goodbye!"],
    ["Hello there", "What do you do for work?", "Do you like your job?", "What do you do on weekends?",
     "Have you seen any good movies lately?", "I have not seen that one. Is it scary?",
     "Do you like to travel?", "Where would you go if you could go anywhere?",
     "What is AI?", "It was nice talking to you"],
    ["hey", "what's up?", "i'm so tired today", "i stayed up late studying for an exam",
     "it's a chemistry exam", "do you like school?", "what is your favorite book?",
     "do you play any sports?", "what are you doing this weekend?", "bye"],
]
# Words of chat that no dictionary lists but every reader knows; counted as English.
CHAT_WORDS = {"ok", "okay", "haha", "hahaha", "lol", "hmm", "yeah", "yep", "nope", "wow", "oh", "um",
              "uh", "hey", "hi", "hello", "bye", "cool", "awesome", "tv", "movies", "internet", "online"}
CONTRACTIONS = re.compile(r"(n't|'s|'re|'ve|'ll|'d|'m)$")
# Decoding settings tried on the validation set; the best that meets every floor becomes the default.
DECODINGS = [dict(do_sample=sample, temperature=temperature, top_p=0.9, no_repeat_ngram_size=3,
                  repetition_penalty=penalty, min_new_tokens=minimum)
             for sample, temperature in [(False, 1.0), (True, 0.6), (True, 0.8), (True, 1.0)]
             for penalty in (1.0, 1.2) for minimum in (1, 3)]
FLOORS = {"english": 0.97, "two_words": 0.85, "distinct": 0.80, "not_repetitive": 1.0}
# On validation contexts the repetition floor allows one reply in twenty. Over hundreds of replies
# none of these candidates has none; with no repeated 2-grams, only sampling at t=1.0 did, and its
# replies read worst (lower F1, visibly rambling), so a floor of none would choose against readers.
CHOICE_FLOORS = {**FLOORS, "not_repetitive": 0.95}


def english_words():
    """The English dictionary the evaluation counts words against (web2 and GCIDE, lower case)."""
    from english_words import get_english_words_set

    return get_english_words_set(["web2", "gcide"], lower=True) | CHAT_WORDS


def is_english(word, dictionary):
    """Whether a lower-case word is in the dictionary, allowing contractions and plain inflections."""
    stem = CONTRACTIONS.sub("", word) or word
    if stem in ("ca", "wo", "i"):  # can't, won't, I'm
        return True
    candidates = {stem, stem.rstrip("s"), stem[:-2] if stem.endswith("es") else stem,
                  stem[:-1] if stem.endswith("d") else stem, stem[:-2] if stem.endswith("ed") else stem,
                  stem[:-3] if stem.endswith("ing") else stem, stem[:-3] + "e" if stem.endswith("ing") else stem,
                  stem[:-2] if stem.endswith("ly") else stem, stem[:-2] if stem.endswith("er") else stem}
    return any(candidate in dictionary for candidate in candidates if candidate)


def words_of(text):
    """The lower-case words of a text, contractions kept whole."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


def reply_quality(replies, dictionary):
    """The share of English words, of replies of two words or more, of distinct replies and of
    replies without repeated word pairs (at least 95 % of a reply's word pairs distinct)."""
    words = [word for reply in replies for word in words_of(reply)]
    pairs = [list(zip(words_of(reply), words_of(reply)[1:])) for reply in replies]
    return {
        "english": sum(is_english(word, dictionary) for word in words) / max(len(words), 1),
        "two_words": sum(len(words_of(reply)) >= 2 for reply in replies) / len(replies),
        "distinct": len(set(replies)) / len(replies),
        "not_repetitive": sum(not p or len(set(p)) >= 0.95 * len(p) for p in pairs) / len(replies),
    }


def exchanges(conversations, count, purpose):
    """Up to `count` (context, reply) pairs of the conversations, chosen stably, replies of 1 to 30
    words (a longer one would not fit beside its context in a small model's window)."""
    pairs = [(turns[:i], turns[i]) for turns in conversations for i in range(1, len(turns))
             if 1 <= len(turns[i].split()) <= 30]
    pairs.sort(key=lambda pair: fingerprint([*pair[0], pair[1]], purpose))
    return pairs[:count]


def reply_log_likelihoods(chat, pairs, batch_size=32):
    """Each reply's log-likelihood (its tokens and eos) given its context, with the newest turns of
    the context that fit the model's window beside the reply, as the app keeps them."""
    tokenizer, model, eos = chat.tokenizer, chat.model, chat.eos
    sequences = []
    for context, reply in pairs:
        # Cut only for toy windows (a test's tiny model): 30 words fit the shipped model's window.
        target = (tokenizer.encode(reply) + [eos])[:chat.context_size - 1]
        sequences.append((chat.prompt_ids(context, chat.context_size - len(target)), target))
    results = []
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            ids, mask, _ = collate([prompt + target for prompt, target in chunk], eos)
            logits = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for row, (prompt, target) in enumerate(chunk):
                positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)
                results.append(float(logits[row, positions, torch.tensor(target)].sum()))
    return results


def word_perplexity(chat, pairs):
    """exp(total negative log-likelihood of the replies and their eos / the replies' words)."""
    total = sum(reply_log_likelihoods(chat, pairs))
    return math.exp(-total / sum(len(reply.split()) for _, reply in pairs))


def context_choice(chat, pairs, distractors=4, seed=0):
    """How often the true reply scores best (per word) among itself and replies of other exchanges."""
    rng = random.Random(seed)
    candidates, groups = [], []
    for index, (context, reply) in enumerate(pairs):
        others = rng.sample([p[1] for i, p in enumerate(pairs) if i != index and p[1] != reply], distractors)
        groups.append(len(candidates))
        candidates += [(context, text) for text in [reply, *others]]
    scores = [score / len(text.split()) for score, (_, text)
              in zip(reply_log_likelihoods(chat, candidates), candidates)]
    return sum(scores[g] > max(scores[g + 1:g + 1 + distractors]) for g in groups) / len(groups)


def f1(reply, truth):
    """Word overlap of a reply with the human one (the F1 of dialogue benchmarks)."""
    ours, theirs = words_of(reply), words_of(truth)
    common = sum(min(ours.count(w), theirs.count(w)) for w in set(ours))
    if not common:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def load_chat(folder, decoding=None, seed=0):
    """The model through the app's own loading and generation path."""
    sys.path.insert(0, str(ROOT))
    from webapp.chat_model import ChatModel

    return ChatModel(str(folder), seed=seed, **(decoding or {}))


def generate_replies(chat, contexts, batch_size=16):
    """The model's replies to many contexts, batched as the app batches them."""
    from webapp.generation import Job

    replies = []
    for start in range(0, len(contexts), batch_size):
        jobs = [Job(list(context), time.monotonic() + 600) for context in contexts[start:start + batch_size]]
        chat.generate(jobs)
        replies += [job.result() for job in jobs]
    return replies


def converse(chat, conversations=CONVERSATIONS):
    """The model's replies across the scripted conversations, each reply fed back as the app does."""
    transcripts = []
    for user_turns in conversations:
        texts, transcript = [], []
        for text in user_turns:
            texts.append(text)
            answer = chat.reply(texts)
            texts.append(answer)
            transcript.append((text, answer))
        transcripts.append(transcript)
    return transcripts


def choose_decoding(folder, validation, dictionary, count):
    """Each candidate decoding measured on validation contexts; the best F1 among those that meet
    the most floors (CHOICE_FLOORS)."""
    pairs = exchanges(validation, count, "decoding")
    rows = []
    for decoding in DECODINGS:
        replies = generate_replies(load_chat(folder, decoding), [context for context, _ in pairs])
        quality = reply_quality(replies, dictionary)
        quality["f1"] = sum(f1(r, truth) for r, (_, truth) in zip(replies, pairs)) / len(pairs)
        quality["passes"] = sum(quality[name] >= floor for name, floor in CHOICE_FLOORS.items())
        rows.append((decoding, quality))
        print(format_decoding(decoding, quality), flush=True)
    best = max(rows, key=lambda row: (row[1]["passes"], row[1]["f1"]))
    return best[0], rows


def format_decoding(decoding, quality):
    """One line of the decoding table: the setting, its figures and how many floors it meets."""
    name = (f"sample t={decoding['temperature']}" if decoding["do_sample"] else "greedy") + (
        f", repetition penalty {decoding['repetition_penalty']}, min tokens {decoding['min_new_tokens']}")
    figures = "  ".join(f"{key} {quality[key]:.3f}" for key in ("f1", *FLOORS))
    return f"{name:<50} {figures}  floors met: {quality['passes']}/{len(CHOICE_FLOORS)}"


def evaluate(args):
    """Measure the model folder on held-out small talk; choose decoding on validation; report."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    folder = Path(args.folder)
    _, validation, held_out = split(load_conversations(args.sources.split(","), args.conversations))
    dictionary = english_words()
    lines = []
    if args.choose:
        decoding, rows = choose_decoding(folder, validation, dictionary, args.decoding_contexts)
        lines += ["Decoding, measured on validation contexts (the chosen one first):", ""]
        lines += [format_decoding(d, q) for d, q in sorted(rows, key=lambda row: row[0] != decoding)]
        lines.append("")
    else:
        decoding = None
    chat = load_chat(folder, decoding)
    pairs = exchanges(held_out, args.exchanges, "perplexity")
    choices = exchanges(held_out, args.choices, "choice")
    transcripts = converse(chat)
    replies = [answer for transcript in transcripts for _, answer in transcript]
    quality = reply_quality(replies, dictionary)
    singles = [[context[-1]] for context, _ in exchanges(held_out, 10, "examples")]
    lines += [
        f"held-out exchanges: {len(pairs)} (perplexity), {len(choices)} (context choice)",
        f"word-level perplexity of held-out replies: {word_perplexity(chat, pairs):.1f}",
        f"true reply scored best among 5: {context_choice(chat, choices):.2f}",
        "scripted conversations: " + ", ".join(f"{key} {value:.2f}" for key, value in quality.items()),
        "", "Single turns (held-out messages):", ""]
    lines += [f"> {context[0]}\n  {answer}" for context, answer in zip(singles, generate_replies(chat, singles))]
    lines += ["", "Scripted conversations (each reply fed back into the next prompt):"]
    for transcript in transcripts:
        lines.append("")
        lines += [f"> {text}\n  {answer}" for text, answer in transcript]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_card(folder, decoding, report)


def chain(facts):
    """The training facts of each stage that built a folder, first stage first."""
    return (chain(facts["previous"]) if facts.get("previous") else []) + [facts]


def write_card(folder, decoding, report):
    """Store the chosen decoding in generation_config.json and write the model card."""
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(decoding or {})
    if not config.get("do_sample"):  # greedy: sampling settings would only draw warnings
        config.pop("temperature", None), config.pop("top_p", None)
    (folder / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")
    decoding = {name: config[name] for name in DECODINGS[0] if config.get(name) is not None}
    facts = json.loads((folder / "training.json").read_text())
    size = (folder / "model.safetensors").stat().st_size
    defaults = {action.dest: action.default for action in train_parser()._actions}
    stages = []
    stage = facts
    while stage:
        shape = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if stage.get("init_from") else ()
        options = [f"--{key.replace('_', '-')} {value}" for key, value in stage.items()
                   if key in defaults and value != defaults[key] and key not in shape]
        stages.insert(0, "    .venv/bin/python scripts/train_chat_model.py train" + "".join(" " + o for o in options))
        stage = stage.get("previous")
    minutes = sum(stage["minutes"] for stage in chain(facts))
    evaluate_options = f" --conversations {facts['conversations']}" if facts["conversations"] else ""
    history = "\n".join(f"{number:>6} {step:>6} {loss:>8.3f} {check:>10.3f}"
                        for number, stage in enumerate(chain(facts), 1) for step, loss, check in stage["history"])
    training = "; then ".join(
        f"{stage['steps']} steps of AdamW (lr {stage['lr']}, weight decay 0.1, batch {stage['batch_size']}, "
        f"warmup then cosine){' from the first stage' if stage.get('previous') else ''}, kept at its lowest "
        f"validation loss (step {stage['best_step']}, {stage['best_validation_loss']})" for stage in chain(facts))
    train, validation, held_out = facts["split"]
    summary = (f"a GPT-2 trained on the CPU on {train:,} conversations of small talk between strangers"
               " (chitchat-dataset, chatterbot-corpus)")
    (folder / "README.md").write_text(f"""---
license: mit
language: en
library_name: transformers
pipeline_tag: text-generation
datasets: [chitchat-dataset, chatterbot-corpus]
summary: {summary}
---

# {folder.name}

A small DialoGPT-format conversational model that ships with hxstate, so the chat works offline:
short small talk, trained on the CPU in about {round(minutes)} minutes. It is a demo of the
plumbing, not an assistant. Point `HXSTATE_CHAT_MODEL` at `microsoft/DialoGPT-medium` (or any causal
LM folder or hub name) for a real one.

- Architecture: GPT-2 (`GPT2LMHeadModel`), {facts["n_layer"]} layers, {facts["n_embd"]} wide, {facts["n_head"]} heads,
  context {facts["n_positions"]} tokens; {facts["parameters"]:,} parameters; weights {size / 2**20:.1f} MiB
  (safetensors, stored as float16, loaded as float32).
- Tokenizer: byte-level BPE, {facts["vocab_size"]} tokens, eos `{EOS}` (turns are joined by it, as in
  DialoGPT; the app and the training data remove the literal text `{EOS}` from every turn).
- Data:
  - the PyPI package `chitchat-dataset` 0.9.0 (MIT licence; the BYU PCC lab's Chit-Chat Challenge
    conversations: open-domain English small talk between two people), one turn per run of
    consecutive messages of one speaker;
  - the English conversations of the PyPI package `chatterbot-corpus` 1.3.3 (BSD-3-Clause).
  Conversations with at least two turns, each once: {train} for training, {validation} for validation
  and {held_out} held out for the figures below, split stably by a hash of each conversation. Training
  sees {facts["training_windows"]:,} windows of whole consecutive turns ({facts["training_tokens"]:,} tokens), each
  window starting halfway through the previous one.
- Training, with {facts.get("precision", "bfloat16")} matrix products and seed {facts["seed"]}: {training}.
- Decoding defaults (`generation_config.json`, chosen by `evaluate --choose` on validation
  contexts, below): {json.dumps(decoding)}. The app's `CHAT_*` settings override them.
- Licence: the weights are derived from MIT and BSD-3-Clause data and are distributed with hxstate
  under the same terms.

## Rebuild

    .venv/bin/pip install -r requirements-model.txt
{chr(10).join(stages)}
    .venv/bin/python scripts/train_chat_model.py evaluate --choose --write{evaluate_options}

The same seed on the same software and CPU gives the same weights.

## Evaluation

Reproduce with `.venv/bin/python scripts/train_chat_model.py evaluate --choose`.

- Word-level perplexity: the total negative log-likelihood of each held-out human reply's tokens
  and eos, given the newest turns of its context that fit the window, divided by the replies' number
  of whitespace words, exponentiated (independent of the tokenizer).
- Context choice: for held-out exchanges, the true reply and four replies of other exchanges are
  scored after the same context (log-likelihood per word); how often the true one comes out best
  (chance: 0.20).
- Scripted conversations: the default replies across three ten-turn small-talk conversations; the
  share of words in an English dictionary (web2 and GCIDE from the PyPI package `english-words`,
  with contractions, plain inflections and a few chat words such as "haha" and "okay"), of replies
  of two words or more, of distinct replies, and of replies whose word pairs are at least 95 %
  distinct. Every reply and example below is unedited.

```
{report}
```

Training (the last batch's loss and the validation loss, by stage and step):

```
 stage   step     loss validation
{history}
```

## Known limits

It knows only what {train} conversations of small talk between strangers taught it: it answers
greetings, moods, hobbies, school, work and weekend plans in short casual phrases, knows no facts,
can contradict itself from one turn to the next and forgets anything older than its
{facts["n_positions"]}-token window.
""", encoding="utf-8")



def train_parser(commands=None):
    """The options of `train`; the card names those that differ from their defaults."""
    build = commands.add_parser("train", help="build the model folder") if commands else argparse.ArgumentParser()
    build.add_argument("--out", default=str(ROOT / "models" / "hxstate-chat"))
    build.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: chitchat, chatterbot")
    build.add_argument("--conversations", type=int, help="use only this many conversations (quick runs)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--steps", type=int, default=3000)
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--lr", type=float, default=1e-3)
    build.add_argument("--vocab-size", type=int, default=8000)
    build.add_argument("--n-layer", type=int, default=6)
    build.add_argument("--n-embd", type=int, default=320)
    build.add_argument("--n-head", type=int, default=5)
    build.add_argument("--n-positions", type=int, default=128)
    build.add_argument("--validation-windows", type=int, default=256)
    build.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                       help="of the matrix products (auto: bfloat16 where this CPU does it faster)")
    build.add_argument("--init-from", help="a folder built by an earlier stage: train it further "
                       "(its tokenizer and shape; a fresh optimizer and schedule)")
    build.set_defaults(func=train)
    return build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser(commands)
    check = commands.add_parser("evaluate", help="measure a model folder on held-out small talk")
    check.add_argument("folder", nargs="?", default=str(ROOT / "models" / "hxstate-chat"))
    check.add_argument("--sources", default=",".join(SOURCES))
    check.add_argument("--conversations", type=int, help="use only this many conversations (quick runs)")
    check.add_argument("--exchanges", type=int, default=2000, help="held-out exchanges for perplexity")
    check.add_argument("--choices", type=int, default=500, help="held-out exchanges for context choice")
    check.add_argument("--decoding-contexts", type=int, default=200)
    check.add_argument("--choose", action="store_true", help="choose the decoding on validation contexts")
    check.add_argument("--write", action="store_true",
                       help="store the chosen decoding and write the model card into the folder")
    check.set_defaults(func=evaluate)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
