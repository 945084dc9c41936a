"""Load and faults: mixed requests from concurrent clients, every answer checked against its request.

The requests mix good clips (jfk.flac and the espeak-ng prompts), text prompts and bad
inputs (not audio, a forbidden uri, an empty document, an over-long prompt, too many
images, a size over the model's limit, a request over the work budget). Every answer is
checked against its own request: the transcript is closest to its own clip's text, the
image carries the request's own seed and prompt; every bad input must be refused with
its own message. Used by bench/load.py and tests/test_reliability.py.
"""

import asyncio
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from speech2image.client import make_documents, post_async
from speech2image.errors import ClientError

from .speech import SPEECH, closest, texts

if TYPE_CHECKING:
    from .app import App

IMAGE = {"diffusion__num_images": 1, "diffusion__steps": 1, "diffusion__width": 32, "diffusion__height": 32}


@dataclass
class Case:
    """One request and what its answer must be."""

    kind: str  # clip, text or bad
    docs: Callable
    parameters: dict
    check: Callable  # (answered docs or the error line) → None, raising AssertionError when wrong


@dataclass
class Report:
    latencies: list = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (request index, kind, one line)
    seconds: float = 0.0
    killed: Optional[int] = None

    def lines(self) -> list[str]:
        ordered = sorted(self.latencies) or [0.0]
        total = sum(self.outcomes.values())
        return [
            f"{total} requests in {self.seconds:.1f} s: {total / self.seconds:.1f} requests/s; latency "
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {percentile(ordered, 0.95) * 1000:.0f} ms",
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            *(f"  request {i} ({kind}) failed: {line}" for i, kind, line in self.failures[:10]),
        ] + ([f"diffusion replica pid {self.killed} was killed with SIGKILL"] if self.killed else [])


def percentile(values, q: float) -> float:
    """The q-quantile of `values`, one of them (nearest rank); NaN when there is none."""
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))] if ordered else float("nan")


def cases(n: int) -> list[Case]:
    """n requests: clips, text prompts and bad inputs in turn, each with a unique seed."""
    clip_texts = texts()
    names = sorted(clip_texts)
    from docarray import DocList

    from speech2image.schema import SpeechImageDoc, to_blob

    def one_doc(**fields):
        return lambda: DocList[SpeechImageDoc]([SpeechImageDoc(**fields)])

    bad = [  # (document, parameters, the message the refusal must hold)
        (one_doc(audio=to_blob(b"not audio at all" * 8)), {}, "AudioError: not audio"),
        (one_doc(uri="/etc/passwd"), {}, "ForbiddenSource: uri refused"),
        (one_doc(), {}, "empty document"),
        (one_doc(prompt="x" * 5000), {}, "max_prompt_chars=1000"),
        (one_doc(prompt="a cat"), {"diffusion__num_images": 99}, "invalid num_images=99"),
        (one_doc(prompt="a cat"), {"diffusion__width": 4096}, "invalid width=4096"),
        (one_doc(prompt="a cat"), {"diffusion__num_images": 8, "diffusion__steps": 150, "diffusion__width": 512,
                                   "diffusion__height": 512}, "max_megapixel_steps"),
    ]
    made = []
    for index in range(n):
        seed = {"diffusion__seed": index}
        if index % 3 == 0:
            name = names[(index // 3) % len(names)]

            def check(docs, name=name, index=index):
                assert closest(docs[0].text, clip_texts) == name, f"{name} heard as {docs[0].text!r}"
                assert [image.seed for image in docs[0].images] == [index]

            made.append(Case("clip", lambda name=name: make_documents([SPEECH / name]), {**IMAGE, **seed}, check))
        elif index % 3 == 1:
            prompt = f"request {index}: a lighthouse at dusk"

            def check(docs, prompt=prompt, index=index):
                assert docs[0].images[0].prompt == prompt and docs[0].images[0].seed == index

            made.append(Case("text", lambda prompt=prompt: make_documents([], prompt), {**IMAGE, **seed}, check))
        else:
            docs, parameters, message = bad[(index // 3) % len(bad)]

            def check(error, message=message):
                assert isinstance(error, str) and message in error, f"expected {message!r}, got {error!r}"

            made.append(Case("bad", docs, {**IMAGE, **parameters}, check))
    return made


async def run_load(address: str, requests: list[Case], clients: int, request_timeout: float = 120.0,
                   kill_after: Optional[int] = None, server: Optional["App"] = None) -> Report:
    """Send every case from `clients` concurrent tasks; check each answer against its request."""
    report, queue, ended = Report(), asyncio.Queue(), 0
    for index, case in enumerate(requests):
        queue.put_nowait((index, case))

    async def one(index: int, case: Case):
        nonlocal ended
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(post_async(case.docs(), address, case.parameters, timeout=request_timeout),
                                            request_timeout + 30)
        except ClientError as e:
            answer = str(e)
        except asyncio.TimeoutError:
            report.outcomes["lost (no answer in time)"] += 1
            report.failures.append((index, case.kind, "no answer in time"))
            return
        finally:
            ended += 1
        report.latencies.append(time.perf_counter() - started)
        if case.kind == "bad":
            try:
                case.check(answer)
                report.outcomes["bad: refused with its message"] += 1
            except AssertionError as e:
                report.outcomes["bad: WRONG"] += 1
                report.failures.append((index, case.kind, str(e)))
        elif isinstance(answer, str):
            report.outcomes[f"{case.kind}: failed"] += 1
            report.failures.append((index, case.kind, answer))
        else:
            try:
                case.check(answer)
                report.outcomes[f"{case.kind}: answered right"] += 1
            except AssertionError as e:
                report.outcomes[f"{case.kind}: WRONG ANSWER"] += 1
                report.failures.append((index, case.kind, str(e)))

    async def client():
        while not queue.empty():
            index, case = queue.get_nowait()
            if kill_after is not None and report.killed is None and ended >= kill_after:
                victims = server.replica_pids("diffusion")
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    report.killed = victims[0]
            await one(index, case)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    report.seconds = time.perf_counter() - started
    return report
