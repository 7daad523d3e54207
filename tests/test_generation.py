"""The generation scheduler: batches that change no reply, a bounded queue, deadlines."""

import logging
import random
import threading
import time

import pytest

from conftest import HTMX, HeldModel, ScriptedModel, log, new_client, send, turn_id, when_called
from html_tree import text_of
from webapp import ROOT
from webapp.chat_model import TIME_LIMIT, ChatModel
from webapp.generation import STOPPED, Job, Overloaded, Scheduler
from webapp.replies import MODEL_BUSY

CONVERSATIONS = [
    ["hello"],
    ["how are you?"],
    ["tell me a joke"],
    ["what is your name?", "i am a bot", "really? tell me more about yourself, please"],
    ["hi"],
    ["what do you like to eat for dinner on a rainy sunday evening?"],
    ["bye"],
    ["are you a robot?", "no", "are you sure?"],
]


def job(texts, seconds=60):
    return Job(texts, time.monotonic() + seconds)


@pytest.fixture(scope="module")
def greedy_model():
    """The shipped model with greedy decoding, whatever its defaults: the rows of a sampled batch
    draw other tokens than one row alone, so only greedy replies can be compared token for token."""
    return ChatModel(str(ROOT / "models" / "hxstate-chat"), do_sample=False)


def replies_alone(model, conversations):
    """(text, tokens) of the reply `model` gives each conversation generated on its own."""
    replies = []
    for texts in conversations:
        single = job(texts)
        model.generate([single])
        replies.append((single.text, single.tokens))
    return replies


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_replies_generated_in_a_batch_equal_replies_generated_one_at_a_time(which, greedy_model,
                                                                             tiny_model_dir):
    model = greedy_model if which == "shipped" else ChatModel(str(tiny_model_dir), max_new_tokens=12)
    alone = replies_alone(model, CONVERSATIONS)
    batch = [job(texts) for texts in CONVERSATIONS]
    model.generate(batch)
    assert len({len(model.prompt_ids(texts)) for texts in CONVERSATIONS}) > 4  # rows of different lengths
    assert [(each.text, each.tokens) for each in batch] == alone
    assert all(each.done and each.stopped is None for each in batch)
    assert len({text for text, _ in alone}) > 2  # different replies, not one repeated
    # Joining mid-way: one reply starts alone, and another joins at every other step.
    late = [job(texts) for texts in CONVERSATIONS]
    arrivals = [[each] for each in late[1:]]
    steps = []  # the rows under way at each step

    def more():
        steps.append(sum(each.tokens and not each.ending for each in late))
        return arrivals.pop(0) if arrivals and len(steps) % 2 == 0 else []

    model.generate(late[:1], more)
    assert [(each.text, each.tokens) for each in late] == alone
    assert max(steps) > 2  # rows that joined at different steps really ran together


def test_prompts_that_together_exceed_the_context_are_read_over_several_passes_and_change_no_reply(greedy_model):
    conversations = [[f"tell me all about your day and your {thing}, " * 12] for thing in ("dog", "cat", "car")]
    assert all(len(greedy_model.prompt_ids(texts)) > greedy_model.context_size / 2 for texts in conversations)
    alone = replies_alone(greedy_model, conversations)
    together = [job(texts) for texts in conversations]
    passes = []  # the tokens each reply has after each pass
    greedy_model.generate(together, lambda: passes.append([each.tokens for each in together]) or [])
    assert [(each.text, each.tokens) for each in together] == alone
    assert passes[:3] == [[1, 0, 0], [2, 1, 0], [3, 2, 1]]  # one prompt a pass: two would not fit


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_a_reply_alone_is_what_transformers_generate_writes(which, greedy_model, tiny_model_dir):
    import torch

    model = greedy_model if which == "shipped" else ChatModel(str(tiny_model_dir), max_new_tokens=12)
    assert model.no_repeat_ngram_size or which == "tiny"
    for texts in CONVERSATIONS:
        ids = torch.tensor([model.prompt_ids(texts)])
        written = model.model.generate(ids, attention_mask=torch.ones_like(ids), **model.generation)
        tokens = written[0, ids.shape[1]:].tolist()
        tokens = tokens[:tokens.index(model.eos)] if model.eos in tokens else tokens
        single = job(texts)
        model.generate([single])
        assert (single.text, single.tokens) == (model.decode(tokens), len(tokens)), texts


def test_each_row_stops_at_its_own_deadline(greedy_model):
    expired, late, on_time = (job(["tell me a joke"], seconds=-1), job(["tell me a joke"]),
                              job(["tell me a joke"]))

    def more():  # between the first pass and the second, the late reply's time runs out
        late.deadline = time.monotonic() - 1
        return []

    greedy_model.generate([expired, late, on_time], more)
    assert expired.stopped == TIME_LIMIT and expired.tokens == 0 and expired.text == ""  # never read
    assert late.stopped == TIME_LIMIT and late.tokens == 1
    assert on_time.stopped is None and on_time.tokens > 1 and on_time.text.startswith(late.text)


def scheduler(model, batch_size=8, queue_size=32, time_limit=60, **options):
    return Scheduler(model, batch_size=batch_size, queue_size=queue_size, time_limit=time_limit,
                     logger=logging.getLogger("test"), **options)


def test_replies_that_arrive_while_the_model_is_busy_are_batched_up_to_the_batch_size():
    model = HeldModel()
    runner = scheduler(model, batch_size=3)
    first = runner.submit(["first"])
    assert model.started.wait(10)
    waiting = [runner.submit([f"message {k}"]) for k in range(5)]
    model.go.set()
    assert [each.result() for each in [first, *waiting]] == [f"reply {k}" for k in range(1, 7)]
    assert model.batches == [1, 3, 2]


class SteppingRows:
    """A model that decodes as the real one does, a step at a time for all its rows, taking new rows
    from `more()` between steps. The job for ["name", "n"] writes n words. The test releases each
    step and reads which rows took part in it."""

    def __init__(self):
        self.steps = []  # the names of the rows of each step
        self.waits = 0  # how many times the model began to wait for a step
        self._go = threading.Semaphore(0)
        self._waiting = threading.Condition()

    def generate(self, jobs, more=None):
        rows = list(jobs)
        while rows:
            with self._waiting:
                self.waits += 1
                self._waiting.notify_all()
            assert self._go.acquire(timeout=30), "the test released no step"
            self.steps.append([row.texts[0] for row in rows])
            for row in rows:
                row.publish(f"{row.text} word".strip())
                if len(row.text.split()) == int(row.texts[1]):
                    row.finish(row.text)
            rows = [row for row in rows if not row.ending] + more()

    def until_waiting(self, waits):
        """Return once the model waits for step number `waits`."""
        with self._waiting:
            assert self._waiting.wait_for(lambda: self.waits >= waits, 30), self.waits

    def step(self):
        """Let the model take one step, and return once it has taken its next rows."""
        waits = self.waits
        self._go.release()
        self.until_waiting(waits + 1)


def test_a_reply_joins_the_running_rows_at_the_next_step_and_an_ended_row_frees_its_place_at_once():
    model = SteppingRows()
    runner = scheduler(model, batch_size=2)
    long = runner.submit(["long", "4"], key="long")
    model.until_waiting(1)
    short, later = runner.submit(["short", "1"], key="short"), runner.submit(["later", "2"], key="later")
    model.step()  # the long reply alone: the others came after its step began
    model.step()  # the short one joined, and ends: its place is free before the next step
    assert short.result() == "word" and runner.running("short") is None
    model.step()
    model._go.release()  # the last step: the long reply and the later one end together
    assert long.result() == "word word word word" and later.result() == "word word"
    assert model.steps == [["long"], ["long", "short"], ["long", "later"], ["long", "later"]]


class WatchedCondition(threading.Condition):
    """A scheduler's condition that tells the test each time the scheduler's thread waits on it."""

    def __init__(self):
        super().__init__()
        self.waits = 0
        self._seen = threading.Condition()

    def wait(self, timeout=None):
        with self._seen:
            self.waits += 1
            self._seen.notify_all()
        return super().wait(timeout)

    def until(self, predicate):
        with self._seen:
            assert self._seen.wait_for(predicate, 30), "the scheduler's thread never waited"


def reply_together(runner, model, watched, turn):
    """Replies to the chats a, b and c in one run of the model, the first alone for a step and the
    others joining it; return once the model is idle again."""
    first = runner.submit(["a" + turn, "2"], key="a")
    model.until_waiting(model.waits + 1)  # at the model at once: it last served one reply, or none
    others = [runner.submit([name + turn, "2"], key=name) for name in "bc"]
    model.step()  # the first alone; the others join it
    model.step()  # the first ends
    waits = watched.waits
    model._go.release()  # the others end...
    watched.until(lambda: watched.waits > waits)  # ...and the model is idle again
    assert [reply.result() for reply in [first, *others]] == ["word word"] * 3


def test_replies_sent_together_to_an_idle_model_are_read_in_one_pass_turn_after_turn():
    # Chatters answered at the same step come back a few ms apart: the idle model that served
    # several gathers them instead of reading the first alone and the others a pass later, which
    # would last.
    model = SteppingRows()
    runner = scheduler(model, batch_size=3, gather_seconds=60)
    runner._wake = watched = WatchedCondition()
    reply_together(runner, model, watched, "0")
    for turn in ("1", "2"):
        waits, steps = watched.waits, model.waits
        first = runner.submit(["a" + turn, "2"], key="a")
        # The thread has taken it up: alone it would be at the model, gathering it waits for more.
        watched.until(lambda: watched.waits > waits or model.waits > steps)
        replies = [first] + [runner.submit([name + turn, "2"], key=name) for name in "bc"]
        model.until_waiting(steps + 1)
        model.step()
        waits = watched.waits
        model._go.release()  # their last step: all three end together...
        watched.until(lambda: watched.waits > waits)  # ...and the model is idle again
        assert [reply.result() for reply in replies] == ["word word"] * 3
    assert model.steps == [["a0"], ["a0", "b0", "c0"], ["b0", "c0"]] + [["a1", "b1", "c1"]] * 2 + [
        ["a2", "b2", "c2"]] * 2


def test_a_lone_chatter_never_waits_for_others():
    runner = scheduler(ScriptedModel(), gather_seconds=3600)
    assert [runner.submit([f"turn {k}"]).result() for k in range(3)] == ["reply 1", "reply 2", "reply 3"]


def test_an_idle_model_that_served_several_starts_a_lone_reply_once_no_other_comes():
    model = SteppingRows()
    runner = scheduler(model, batch_size=3, gather_seconds=0.01)
    runner._wake = watched = WatchedCondition()
    reply_together(runner, model, watched, "0")
    waits, steps = watched.waits, model.waits
    alone = runner.submit(["alone", "1"], key="alone")
    watched.until(lambda: watched.waits > waits)  # it gathers: the thread waits for more replies
    model.until_waiting(steps + 1)  # none came: it starts alone
    model._go.release()
    assert alone.result() == "word"


def test_a_full_queue_refuses_a_job_and_keeps_the_others():
    model = HeldModel()
    runner = scheduler(model, batch_size=1, queue_size=2)
    running = runner.submit(["running"])
    assert model.started.wait(10)
    queued = [runner.submit(["one"]), runner.submit(["two"])]
    with pytest.raises(Overloaded):
        runner.submit(["three"])
    model.go.set()
    assert [each.result() for each in [running, *queued]] == ["reply 1", "reply 2", "reply 3"]
    assert runner.submit(["room again"]).result() == "reply 4"


def test_a_job_that_waited_past_its_time_limit_is_not_started():
    model = HeldModel()
    runner = scheduler(model, batch_size=1)
    running = runner.submit(["running"])
    assert model.started.wait(10)
    runner.time_limit = 0  # the next job's time is up before the model is free for it
    late = runner.submit(["late"])
    model.go.set()
    assert running.result() == "reply 1"
    with pytest.raises(Overloaded):
        late.result()
    assert model.batches == [1]


def test_the_thread_leaves_when_idle_and_comes_back_with_work():
    model = ScriptedModel()
    runner = scheduler(model, idle_seconds=0.05)
    assert runner.submit(["a"]).result() == "reply 1"
    thread = runner._thread
    thread.join(5)
    assert not thread.is_alive()
    assert runner.submit(["b"]).result() == "reply 2"


def test_an_overloaded_model_answers_503_with_retry_after_and_loses_nothing(make_app):
    model = HeldModel()
    # Rate limits on: their headers must not replace the 503's own Retry-After.
    app = make_app(CHAT_MODEL=model, CHAT_BATCH_SIZE=1, CHAT_QUEUE_SIZE=1, RATELIMIT_ENABLED=True)
    clients = [new_client(app) for _ in range(3)]
    turns = [turn_id(send(client, f"message {k}").get_data(as_text=True)) for k, client in enumerate(clients)]
    answers = {}

    def ask(k):
        answers[k] = clients[k].post(f"/chat/replies/{turns[k]}", headers=HTMX)

    asking = [threading.Thread(target=ask, args=(0,))]
    asking[0].start()
    assert model.started.wait(10)
    queued = when_called(app.extensions["generation"], "submit")
    asking.append(threading.Thread(target=ask, args=(1,)))
    asking[1].start()
    assert queued.wait(10)
    refused = clients[2].post(f"/chat/replies/{turns[2]}", headers=HTMX)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.headers["HX-Retarget"] == "#alerts"
    assert MODEL_BUSY in text_of(refused.get_data(as_text=True))
    assert log(clients[2]) == [("You", "message 2")]
    model.go.set()
    for thread in asking:
        thread.join(30)
    assert [answers[k].status_code for k in (0, 1)] == [200, 200]
    assert log(clients[0]) == [("You", "message 0"), ("Bot", "reply 1")]
    assert log(clients[1]) == [("You", "message 1"), ("Bot", "reply 2")]
    retried = clients[2].post(f"/chat/replies/{turns[2]}", headers=HTMX)
    assert retried.status_code == 200
    assert log(clients[2]) == [("You", "message 2"), ("Bot", "reply 3")]


def test_a_lock_timeout_shorter_than_the_time_limit_is_refused(make_app):
    with pytest.raises(ValueError, match="CHAT_LOCK_TIMEOUT"):
        make_app(CHAT_TIME_LIMIT=60, CHAT_LOCK_TIMEOUT=30)


def test_no_repeat_ngrams_ban_what_transformers_bans():
    import torch
    from transformers import NoRepeatNGramLogitsProcessor

    from webapp.chat_model import _Row

    rng = random.Random(4)
    for _ in range(300):
        prompt = [rng.randrange(6) for _ in range(rng.randint(1, 12))]
        row = _Row(job(["unused"]), prompt, 3, None)
        for _ in range(rng.randint(0, 6)):  # tokens written since the prompt, counted as they come
            expected = NoRepeatNGramLogitsProcessor(3)(torch.tensor([row.history]), torch.zeros(1, 6))
            assert sorted(row.banned()) == torch.nonzero(expected[0] == -float("inf")).flatten().tolist()
            row.append(rng.randrange(6))


def test_a_reply_stopped_while_it_waits_never_reaches_the_model_and_ends_empty_and_marked():
    model = HeldModel()
    runner = scheduler(model, batch_size=1)
    first = runner.submit(["first"], key="a")
    assert model.started.wait(10)
    queued = runner.submit(["second"], key="b")
    queued.stop()
    model.go.set()
    assert first.result() == "reply 1" and first.stopped is None
    assert queued.result() == "" and queued.stopped == STOPPED
    assert model.prompts == [["first"]] and runner.running("b") is None


def test_a_stopped_row_of_a_real_model_ends_at_its_next_step(tiny_model):
    job = Job(["hello"], time.monotonic() + 60)
    other = Job(["how are you?"], time.monotonic() + 60)
    job.stop()
    tiny_model.generate([job, other])
    assert job.stopped == STOPPED and job.tokens <= 1
    assert other.stopped is None and other.tokens >= 1


def test_a_paced_reader_shows_a_written_reply_word_by_word_and_the_rest_at_once_on_stop():
    job = Job(["hello"], time.monotonic() + 60)
    job.finish("one two three four five")
    now = [0.0]
    updates = job.updates(pace=4, clock=lambda: now[0])  # 4 characters a second
    assert next(updates) == "one"  # the first word at once
    now[0] = 1.5  # 6 characters' time: the word that holds the 7th
    assert next(updates) == " two"
    now[0] = 2.25  # 9 characters: the word that holds the 10th
    assert next(updates) == " three"
    job.stop()  # the reply is already written: nothing is cut, the rest is shown now
    assert list(updates) == [" four five"]
    assert job.stopped is None and job.text == "one two three four five"


def test_a_paced_reader_never_waits_for_text_that_is_not_written():
    job = Job(["hello"], time.monotonic() + 60)
    job.publish("one")
    updates = job.updates(pace=1000, clock=time.monotonic)
    assert next(updates) == "one"
    job.finish("one two")
    assert list(updates) == [" two"]


def test_a_job_ends_through_its_on_done_before_any_reader_sees_it_end():
    seen = []

    def save(job):
        seen.append((job.text, job.done))
        raise ConnectionError("the store went away")

    job = Job(["hello"], time.monotonic() + 60, on_done=save)
    job.finish("the reply")
    job.finish("a second end is ignored")
    assert seen == [("the reply", False)]
    assert job.done and isinstance(job.error, ConnectionError)
    with pytest.raises(ConnectionError):
        job.result()


def test_a_reader_that_gives_up_on_a_hung_model_ends_the_job_and_frees_it():
    ended = []
    job = Job(["hello"], time.monotonic(), stall_grace=0, on_done=ended.append)  # past its time
    with pytest.raises(Exception, match="stopped answering"):
        job.result()
    assert ended == [job] and job.done and job.ending


def test_a_reply_written_whole_is_not_marked_stopped_by_a_stop_while_it_is_saved():
    saving, saved = threading.Event(), threading.Event()

    def save(job):  # the job's save, held until the stop has come
        saving.set()
        assert saved.wait(30)

    job = Job(["hi"], deadline=time.monotonic() + 60, on_done=save)
    finishing = threading.Thread(target=job.finish, args=("the whole reply",))
    finishing.start()
    assert saving.wait(30)
    job.stop()  # the browser's Stop, as the reply written whole is still being shown
    saved.set()
    finishing.join(30)
    assert job.done and job.stopped is None and job.text == "the whole reply"
