"""This machine's pace at drawing, measured on a running app.py just before it is needed.

A test that needs a replica busy for a while asks for the work that lasts that long here, at
the measured pace: never for a fixed number of steps, which one CPU finishes before the test
has looked and another cannot finish before a deadline.
"""

import math
from dataclasses import dataclass

from speech2image.client import make_documents, post, request_parameters
from speech2image.limits import STEPS, TINY_MAX_SIZE

SIZE = TINY_MAX_SIZE  # the largest image `tiny` draws: the longest step, so the fewest steps for a given time


@dataclass(frozen=True)
class Pace:
    """Seconds per denoising step of one SIZE² image; its text encoding and decoding are counted
    in, so work sized by it lasts a little less than asked."""

    step_seconds: float

    def steps(self, seconds: float) -> int:
        """Steps of one SIZE² image that take about `seconds` here (1 to 150, what a request may ask)."""
        return max(STEPS[0], min(STEPS[1], math.ceil(seconds / self.step_seconds)))

    def options(self, seconds: float, images: int = 1) -> dict:
        """Request options (client.py's names) for `images` images of about `seconds` each."""
        return {"num_images": images, "width": SIZE, "height": SIZE, "steps": self.steps(seconds)}

    def body(self, seconds: float, images: int = 1, **fields) -> dict:
        """The same as a JSON body for the OpenAI-compatible route /v1/images/generations."""
        return {"n": images, "size": f"{SIZE}x{SIZE}", "steps": self.steps(seconds), **fields}


def measure(host: str, replicas: int = 2, at_least: float = 1.0) -> Pace:
    """Draw one SIZE² image on each replica (the first image of a size is slow), then one with more
    steps each time until it takes `at_least` seconds; its seconds per step, the lesser of two such
    images. `host` as client.py's."""

    def seconds(steps: int) -> float:
        docs = post(make_documents([], "a measure of this machine's pace"), host, request_parameters(
            {"num_images": 1, "width": SIZE, "height": SIZE, "steps": steps, "seed": 0}))
        return docs[0].images[0].seconds  # the replica's own time for the image

    for _ in range(replicas):  # requests go round robin
        seconds(1)
    steps = 1
    while True:
        took = seconds(steps)
        if took >= at_least or steps == STEPS[1]:
            return Pace(min(took, seconds(steps)) / steps)  # twice: one image may have shared the CPU
        steps = min(STEPS[1], max(2 * steps, math.ceil(steps * at_least / took)))
