"""A chat model that writes each reply a word at a time, one word each time the test lets it: in the
test's own process, or in a gunicorn server's (`gunicorn 'stepped_model:create_app()'`).

In a server, the test steps the model through two FIFOs (`ServerSteps` in conftest.py): the model
writes its process id and a newline to STEPPED_MODEL_STARTED when it starts a batch, and reads a
byte from STEPPED_MODEL_STEPS before each word.
"""

import os
import threading

from webapp import create_app as create_hxstate_app

WORDS = ("each", "word", "as", "it", "is", "written")


class SteppedModel:
    """Writes each reply a word at a time, one word each time the test releases a step."""

    def __init__(self, *words):
        self.words = words or WORDS
        self.jobs = []
        self._steps = threading.Semaphore(0)

    def release(self, steps=1):
        """Let the model write `steps` more words."""
        self._steps.release(steps)

    def started(self):
        """Called as a batch starts."""

    def step(self):
        """Wait until the test lets the model write its next word."""
        assert self._steps.acquire(timeout=30), "the test released no step"

    def generate(self, jobs, more=None):
        self.jobs += jobs
        self.started()
        for job in jobs:
            text = ""
            for word in self.words:
                self.step()
                if job.expired():  # stopped or past its deadline: the row ends, as a real model's
                    break
                text = f"{text} {word}".strip()
                job.publish(text)
            job.finish(text)


class ServerSteppedModel(SteppedModel):
    """A SteppedModel in a server process, stepped by the test through the FIFOs the environment names."""

    def __init__(self, steps, started):
        super().__init__()
        self.steps_path, self.started_path = steps, started

    def started(self):
        with open(self.started_path, "w") as started:
            started.write(f"{os.getpid()}\n")

    def step(self):
        with open(self.steps_path, "rb", buffering=0) as steps:
            if steps.read(1) != b".":
                raise RuntimeError("the test stopped stepping the model")


def create_app():
    """The app, configured as `wsgi:app` is, answering with a ServerSteppedModel."""
    return create_hxstate_app({"CHAT_MODEL": ServerSteppedModel(os.environ["STEPPED_MODEL_STEPS"],
                                                                 os.environ["STEPPED_MODEL_STARTED"])})
