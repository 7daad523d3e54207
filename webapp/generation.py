"""The per-process generation scheduler: replies of different chats batched into one `generate`.

A request never calls the model itself: it submits a `Job` and reads the job's text as it grows.
One thread per process runs the model. Replies wait in a bounded queue, and the model takes them
between its decoding steps, up to `CHAT_BATCH_SIZE` rows at a time (`ChatModel.generate`): a reply
starts at the next step, whatever the others are doing, and a row that ends makes room at once. An
idle model that served several replies in its last run first gathers the replies sent with the
first, `CHAT_GATHER_SECONDS` apart at most. On a CPU one decoding step of a batch costs less than a
step per reply (the weights are read once per step for all rows), so batching raises the tokens
per second the process serves; by how much depends on the CPU (bench/README.md). Each job has a
deadline (`CHAT_TIME_LIMIT`, queue wait included) at which its row stops; its readers give up
`CHAT_STALL_GRACE` seconds past it if the model stops answering.

The thread starts on the first job, so each gunicorn worker starts its own after the fork, and
it ends after a minute without work.
"""

import threading
import time
from collections import deque
from contextlib import contextmanager

from flask import current_app


class ModelError(RuntimeError):
    """The model could not produce a reply."""


class Overloaded(RuntimeError):
    """Too many replies are waiting for the model."""


STOPPED = "stopped"  # the reason a reply ended that the person asked for (Job.stop)


class Job:
    """One reply: the conversation in, the reply's text out as it grows.

    `on_done(job)`, if given, runs once when the job ends (with its whole text, or its error) and
    before any reader sees it end: the reply's saving and its chat's lock belong to the job, not to
    a request. If `on_done` raises, the job ends with that error instead.
    """

    def __init__(self, texts, deadline, stall_grace=5.0, on_done=None):
        self.texts = texts
        self.deadline = deadline
        self.stall_grace = stall_grace
        self.on_done = on_done
        self.text = ""
        self.tokens = 0
        self.stopped = None
        self.error = None
        self.done = False
        self.cancelled = False
        self.ending = False  # from the moment its end began: it is then never shared again
        self._changed = threading.Condition()

    def expired(self):
        """Whether the job should stop now: past its deadline or given up by its reader."""
        return self.cancelled or time.monotonic() >= self.deadline

    def stop(self):
        """End the reply where it is, at the person's request: its row stops at the next step, and
        a reader pacing a reply already written shows the rest at once."""
        with self._changed:
            # A reply whose end has begun is written whole, even if it is still being saved: it is
            # then only shown at once, never marked as cut.
            if self.stopped is None and not self.ending:
                self.stopped = STOPPED
            self.cancelled = True
            self._changed.notify_all()

    def publish(self, text):
        """Make a longer prefix of the reply visible to readers."""
        with self._changed:
            self.text = text
            self._changed.notify_all()

    def finish(self, text):
        """End the job with its whole reply (cut short if `stopped` says why)."""
        self._end(text, None)

    def fail(self, error):
        """End the job without a reply."""
        self._end(None, error)

    def _end(self, text, error):
        with self._changed:
            if self.ending:
                return
            self.ending = True
            if text is not None:
                self.text = text
            self.error = error
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception as failure:  # noqa: BLE001 - the readers are told, below
                self.error = failure
        with self._changed:
            self.done = True
            self._changed.notify_all()

    def updates(self, interval=0.0, pace=0.0, clock=time.monotonic):
        """Yield the reply's new text as it arrives, at most once per `interval` seconds unless
        the reply is finished; raise the job's error, if it fails.

        With `pace`, text is shown at most that many characters a second after the first word, in
        whole words, so that a reply a fast model wrote at once is still seen being written.
        """
        sent = 0
        started = None
        while True:
            with self._changed:
                timeout = self.deadline + self.stall_grace - time.monotonic()
                stalled = not self._changed.wait_for(lambda: self.done or len(self.text) > sent, timeout)
            if stalled:  # the job ends here, so that its chat is not held by a model that hangs
                self.cancelled = True
                self.fail(ModelError("the model stopped answering"))
            with self._changed:
                self._changed.wait_for(lambda: self.done or not stalled)
                text, done, error, cancelled = self.text, self.done, self.error, self.cancelled
            if done and error is not None:
                raise error
            shown = len(text)
            if pace and not cancelled:
                started = clock() if started is None else started
                allowed = int(pace * (clock() - started)) + 1
                shown = _word_end(text, allowed) if allowed > sent else sent
            if shown > sent:
                yield text[sent:shown]
                sent = shown
            if done and sent == len(text):
                return
            if sent < len(text):  # held back by the pace: wait for it, or for Stop
                with self._changed:
                    self._changed.wait_for(lambda: self.cancelled, interval or 1 / pace)
            elif interval:
                with self._changed:
                    self._changed.wait_for(lambda: self.done, interval)

    def result(self):
        """The whole reply, once generated."""
        for _ in self.updates():
            pass
        return self.text


def _word_end(text, length):
    """Where the word that holds character `length` of `text` ends (the whole text at its end)."""
    ends = [end for end in (text.find(" ", length), text.find("\n", length)) if end >= 0]
    return min(ends) if ends else len(text)


class Scheduler:
    """Runs every job of this process on one model, which takes them in between its decoding steps."""

    def __init__(self, model, *, batch_size, queue_size, time_limit, logger, stall_grace=5.0,
                 idle_seconds=60.0, gather_seconds=0.0):
        self.model = model
        self.batch_size = batch_size
        self.gather_seconds = gather_seconds
        self.queue_size = queue_size
        self.time_limit = time_limit
        self.stall_grace = stall_grace
        self.idle_seconds = idle_seconds
        self.logger = logger
        self._waiting = deque()
        self._jobs = {}
        self._shown = {}
        self._wake = threading.Condition()
        self._thread = None
        self._served = 0  # how many replies the model's last run served

    def submit(self, texts, key=None, on_done=None):
        """Queue a reply to the conversation `texts` (see `Job` for `on_done`); a job under way for
        `key`, and not yet ending, is shared instead."""
        with self._wake:
            shared = self._jobs.get(key) if key is not None else None
            if shared is not None and not shared.ending:
                return shared
            if len(self._waiting) >= self.queue_size:
                raise Overloaded(f"{len(self._waiting)} replies are already waiting for the model")
            job = Job(texts, time.monotonic() + self.time_limit, self.stall_grace, on_done)
            job.key = key
            self._waiting.append(job)
            if key is not None:
                self._jobs[key] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
                self._thread.start()
            self._wake.notify()
        return job

    def running(self, key):
        """The job under way for `key` (being generated, or shown at its pace), or None."""
        with self._wake:
            return self._jobs.get(key) or self._shown.get(key)

    @contextmanager
    def showing(self, job):
        """Keep `job` found by `running` while a reader shows it, after its generation too."""
        with self._wake:
            self._shown[job.key] = job
        try:
            yield job
        finally:
            with self._wake:
                if self._shown.get(job.key) is job:
                    del self._shown[job.key]

    def _next_batch(self):
        """Wait for work, and for the jobs that come with the first; take up to `batch_size` jobs
        that still have time left."""
        with self._wake:
            if not self._wake.wait_for(lambda: self._waiting, self.idle_seconds):
                self._thread = None
                return None
            # Chatters answered at the same step send their next messages tens of ms apart. Read alone,
            # the first prompt would start a pass that the others wait out, and the two groups
            # would then stay a pass apart, turn after turn: so an idle model that served several
            # replies in its last run waits until no job has come for `gather_seconds` (or the
            # batch is full) before it starts. A chatter alone has nobody to wait for.
            while self._served > 1 and len(self._waiting) < self.batch_size:
                waiting = len(self._waiting)
                if not self._wake.wait_for(lambda: len(self._waiting) > waiting, self.gather_seconds):
                    break
            return self._take(self.batch_size)

    def _take(self, room):
        """Up to `room` waiting jobs that still have time left (the others end here); hold `_wake`."""
        taken = []
        while self._waiting and len(taken) < room:
            job = self._waiting.popleft()
            if job.stopped == STOPPED:  # stopped before it started: an empty reply, marked
                job.finish("")
                self._release(job)
            elif job.expired():
                job.fail(Overloaded("the reply waited for the model past its time limit"))
                self._release(job)
            else:
                taken.append(job)
        return taken

    def _release(self, job):
        """Forget `job` as the one under way for its key (unless a newer one took its place)."""
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def _run(self):
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            running, served = list(batch), list(batch)  # served: every job of this run, ended or not

            def more():
                """Between two steps: forget the rows that ended, and hand over jobs to fill their places."""
                with self._wake:
                    for job in [job for job in running if job.ending]:
                        running.remove(job)
                        self._release(job)
                    joining = self._take(self.batch_size - len(running))
                running.extend(joining)
                served.extend(joining)
                return joining

            try:
                self.model.generate(batch, more)
            except Exception as error:  # noqa: BLE001 - nothing else would ever see it
                self.logger.exception("generation failed for %d replies", len(running))
                for job in running:
                    job.fail(ModelError(str(error)))
            finally:
                for job in running:
                    job.finish(job.text)  # no-op unless the model forgot to finish it
                with self._wake:
                    for job in running:
                        self._release(job)
                    self._served = len(served)


def init_app(app):
    """Create this app's scheduler over the chat model of `background_model.init_app`."""
    config = app.config
    if config["CHAT_LOCK_TIMEOUT"] <= config["CHAT_TIME_LIMIT"] + config["CHAT_STALL_GRACE"]:
        raise ValueError("CHAT_LOCK_TIMEOUT must exceed CHAT_TIME_LIMIT by more than CHAT_STALL_GRACE "
                         f"({config['CHAT_STALL_GRACE']} s), or a reply could outlive its chat's lock")
    app.extensions["generation"] = Scheduler(
        app.extensions["chat_model"], batch_size=config["CHAT_BATCH_SIZE"],
        queue_size=config["CHAT_QUEUE_SIZE"], time_limit=config["CHAT_TIME_LIMIT"],
        stall_grace=config["CHAT_STALL_GRACE"], gather_seconds=config["CHAT_GATHER_SECONDS"],
        logger=app.logger)


def current_scheduler():
    """The generation scheduler of the app handling this request."""
    return current_app.extensions["generation"]
