"""Load and faults: mixed requests from concurrent clients against `python app.py --offline`.

    python bench/load.py [--requests 1000] [--clients 8] [--replicas 2] [--kill-after 300]

The requests mix good clips (jfk.flac and the espeak-ng prompts), text prompts and bad
inputs (not audio, a forbidden uri, an empty document, an over-long prompt, too many
images, a size over the model's limit, a request over the work budget). Every answer is
checked against its own request: the transcript is closest to its own clip's text, the
image carries the request's own seed and prompt; every bad input must be refused with
its own message. With --kill-after K, one diffusion replica is killed (SIGKILL) once K
requests have ended. Every request is bounded in time; one that does not end is "lost".
Prints latency p50/p95, throughput and the outcome counts.
"""

import argparse
import asyncio
import functools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import ClientError, make_documents, post_async  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402

SPEECH = Path(os.environ.get("SPEECH2IMAGE_SPEECH_DATA", ROOT.parent / "shared" / "data" / "speech"))
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
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {ordered[round(0.95 * (len(ordered) - 1))] * 1000:.0f} ms",
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            *(f"  request {i} ({kind}) failed: {line}" for i, kind, line in self.failures[:10]),
        ] + ([f"diffusion replica pid {self.killed} was killed with SIGKILL"] if self.killed else [])


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def closest(text: str, texts: dict) -> str:
    """The name of the text in `texts` nearest to `text` (lowest WER after Whisper's normalizer)."""
    import jiwer

    normalize = _normalizer()
    return min(texts, key=lambda name: jiwer.wer(normalize(texts[name]), normalize(text or "-")))


def cases(n: int) -> list[Case]:
    """n requests: clips, text prompts and bad inputs in turn, each with a unique seed."""
    texts = {clip["file"]: clip["text"] for clip in json.loads((SPEECH / "manifest.json").read_text())["clips"]}
    texts = {name: text for name, text in texts.items() if (SPEECH / name).exists()}
    names = sorted(texts)
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
                assert closest(docs[0].text, texts) == name, f"{name} heard as {docs[0].text!r}"
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


def diffusion_replicas(server: subprocess.Popen, wait_seconds: float = 30.0) -> list[int]:
    """The live diffusion replicas of a :func:`start_server` process: the pids they announced
    in its log ("diffusion executor (...) serving (pid N)"), waiting for at least one."""
    import psutil

    deadline = time.monotonic() + wait_seconds
    while True:
        announced = {int(pid) for pid in re.findall(r"diffusion executor \(.*?\) serving \(pid (\d+)\)",
                                                     Path(server.log.name).read_text())}
        alive = []
        for pid in sorted(announced):
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                continue
        if announced or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


async def run_load(address: str, requests: list[Case], clients: int, request_timeout: float = 120.0,
                   kill_after: Optional[int] = None, server: Optional[subprocess.Popen] = None) -> Report:
    """Send every case from `clients` concurrent tasks; check each answer against its request."""
    report, queue, ended = Report(), asyncio.Queue(), 0
    for index, case in enumerate(requests):
        queue.put_nowait((index, case))

    async def one(index: int, case: Case):
        nonlocal ended
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(post_async(case.docs(), address, case.parameters, request_timeout),
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
                victims = diffusion_replicas(server)
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    report.killed = victims[0]
            await one(index, case)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    report.seconds = time.perf_counter() - started
    return report


def start_server(port: int, replicas: int, log_path: Path, extra_env: Optional[dict] = None) -> subprocess.Popen:
    """`python app.py --offline` as a process, once it prints its ready line (300 s at most)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--offline", "--port", str(port),
                                "--diffusion-replicas", str(replicas)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                               start_new_session=True)  # its executors can be killed with it
    deadline = time.monotonic() + 300
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("speech2image ready on"):
            break
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"app.py did not become ready: {''.join(output)[-2000:]}")
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()  # keep draining stdout: a full pipe would block the server's logging
    process.log, process.output, process.reader = log, output, reader
    return process


def stop_server(process: subprocess.Popen) -> str:
    """SIGTERM (SIGKILL to its whole process group after 60 s), then its whole output."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    process.reader.join(timeout=30)
    process.log.close()
    return "".join(process.output) + Path(process.log.name).read_text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--kill-after", type=int, help="kill one diffusion replica once this many requests ended")
    parser.add_argument("--port", type=int, default=54630)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    server = start_server(args.port, args.replicas, Path("/tmp/speech2image-load.log"))
    try:
        report = asyncio.run(run_load(f"localhost:{args.port}", cases(args.requests), args.clients,
                                      kill_after=args.kill_after, server=server))
    finally:
        stop_server(server)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
