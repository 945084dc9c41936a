"""Benchmark: admission under open-loop load — arrivals that do not wait for answers.

    python bench/load.py --open-loop [--seconds 45] [--rates 0.5,1,2,4] [--replicas 1,2]
                         [--max-queued-requests 4] [--screenshot docs/admission-dashboard.png]
    python bench/load.py --open-loop --two-keys [--seconds 60] [--max-queued-requests 4]

app.py's offline Flow, each diffusion replica on one CPU thread (so that 2 replicas are 2x the
capacity on this 2-core machine), gets text-to-image requests (one 128x128 image, 4 steps;
its own prompt and seed each) arriving as a Poisson process at 0.5x, 1x, 2x and 4x its
measured capacity, each with a 30 s client timeout. Once with the scheduler off — the queue
unbounded (`--max-queued-requests 10000`), as before it existed; deadlines and cancellation
stay on — and once on, in the same run. For each: goodput (answers per second, over the
capacity), accepted latency p50/p95, refusals and their time to answer p95, requests dropped
or stopped at their deadline (the server's answer), client timeouts (the client's own 30 s
came first), model runs per request known to have run (answered, or stopped at a step; from
the replicas' own counter; must be 1: a request whose client timed out while it ran is not in
the denominator, so client timeouts push it over 1), lost (no answer at all; must be 0),
mismatched answers (another request's prompt or seed; must be 0) and failed calls (each
distinct line printed). With --screenshot, the console dashboard during the
4x run with the scheduler on and one replica, scraped by a real Prometheus.

With --two-keys, fairness between API keys instead: one replica, two keys sending at once, a
heavy one at 4x the capacity and a light one at 0.25x, once with no share (`max_caller_share`
1: a key may hold every place) and once with the default share; the same figures per key,
the light key's goodput and p95 first among them.
"""

import asyncio
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

from speech2image.client import make_documents, post_async, request_parameters
from speech2image.errors import ClientError
from speech2image.limits import ReplicaLimits
from speech2image.observability import names
from tests.support.load import percentile
from tests.support.metrics import total, wait_until

IMAGE = {"num_images": 1, "width": 128, "height": 128, "steps": 4}
CLIENT_TIMEOUT = 30.0
OFF = 10_000  # the scheduler "off": a queue nobody fills (the most allowed)
RUNS = f"{names.QUEUE_SECONDS}_count"  # one per request that got a replica's turn
# --two-keys: each key's name, key and load (x capacity)
KEYS = {"heavy": ("sk-bench-heavy-0123456789", 4.0), "light": ("sk-bench-light-0123456789", 0.25)}


@dataclasses.dataclass
class Outcome:
    sent: float
    seconds: float
    kind: str  # answered, refused, deadline, timeout, lost, mismatched, failed
    line: str = ""


@dataclasses.dataclass
class Row:
    replicas: int
    scheduler: str
    rate: float  # x capacity
    outcomes: list
    capacity: float
    runs: float

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.outcomes)

    def figures(self) -> dict:
        answered = sorted(o.seconds for o in self.outcomes if o.kind == "answered")
        refused = sorted(o.seconds for o in self.outcomes if o.kind == "refused")
        span = max(o.sent + o.seconds for o in self.outcomes) - min(o.sent for o in self.outcomes)
        ran = len(answered) + sum(o.kind == "deadline" and "at step" in o.line for o in self.outcomes)
        return {
            "offered /s": self.rate * self.capacity, "sent": len(self.outcomes),
            "goodput": len(answered) / span / self.capacity,
            "p50 s": statistics.median(answered) if answered else float("nan"),
            "p95 s": percentile(answered, 0.95), "refused": len(refused),
            "refusal p95 ms": percentile(refused, 0.95) * 1000,
            "deadline": self.count("deadline"), "client timeout": self.count("timeout"),
            "runs/request": self.runs / ran if ran else float("nan"),
            "lost": self.count("lost"), "mismatched": self.count("mismatched"), "failed": self.count("failed"),
        }


async def one(address: str, index: int, seed: int, started: float, key: Optional[str] = None) -> Outcome:
    prompt = f"an open-loop request number {index}"
    sent = time.monotonic()
    try:
        [doc] = await asyncio.wait_for(post_async(make_documents([], prompt), address, request_parameters(
            {**IMAGE, "seed": seed}), timeout=CLIENT_TIMEOUT, api_key=key), CLIENT_TIMEOUT + 30)
    except asyncio.TimeoutError:
        return Outcome(sent - started, time.monotonic() - sent, "lost")
    except ClientError as e:
        line = str(e)
        kind = ("refused" if "busy: " in line or "rate limit: " in line else
                "deadline" if "deadline passed" in line else "timeout" if "--timeout" in line else "failed")
        return Outcome(sent - started, time.monotonic() - sent, kind, line)
    except Exception as e:  # a bug in the client path: counted (and printed once per kind), never a crash
        return Outcome(sent - started, time.monotonic() - sent, "failed", f"{type(e).__name__}: {e}")
    right = doc.images and doc.images[0].prompt == prompt and doc.images[0].seed == seed
    return Outcome(sent - started, time.monotonic() - sent, "answered" if right else "mismatched")


async def open_loop(address: str, rate: float, seconds: float, key: Optional[str] = None,
                    first: int = 0) -> list[Outcome]:
    """Poisson arrivals at `rate` per second for `seconds`, numbered from `first` (their prompts,
    seeds and arrival times: another `first`, other requests); every one awaited to its end."""
    arrivals, started, clock = [], time.monotonic(), random.Random(7 + first)
    at, index = 0.0, first
    while True:
        at += clock.expovariate(rate)
        if at > seconds:
            break
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        arrivals.append(asyncio.ensure_future(one(address, index, 1000 + index, started, key)))
        index += 1
    return list(await asyncio.gather(*arrivals))


async def closed_loop(address: str, clients: int, seconds: float, key: Optional[str] = None) -> float:
    """Answers per second with `clients` each sending as soon as its answer came: the capacity."""
    done, stop_at = 0, time.monotonic() + seconds

    async def client(k):
        nonlocal done
        while time.monotonic() < stop_at:
            await post_async(make_documents([], f"capacity {k}"), address, request_parameters(IMAGE), api_key=key)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.monotonic() - started)


def flow(port: int, replicas: int, max_queued: int, keys: Optional[Path] = None,
         max_caller_share: Optional[float] = None):
    import app

    app.quiet_start_up()
    args = app.parse_args(["--offline", "--port", str(port), "--diffusion-replicas", str(replicas),
                           "--max-queued-requests", str(max_queued), *(["--api-keys", str(keys)] if keys else [])])
    specs = app.executor_specs(args)
    for spec in specs:
        spec["uses_with"]["cpu_threads"] = 1
        if max_caller_share is not None:
            spec["uses_with"]["max_caller_share"] = max_caller_share
    return app.build_flow(args, specs)


def run(port: int, replicas: int, max_queued: int, rates: list[float], seconds: float,
        capacity: Optional[float], screenshot=None) -> tuple[list[Row], float]:
    import app

    scheduler = "off" if max_queued == OFF else f"on ({max_queued})"
    with flow(port, replicas, max_queued) as running:
        urls = [url for group in app.metrics_urls(running).values() for url in group]
        address = f"localhost:{port}"
        asyncio.run(closed_loop(address, 2 * replicas, 10))  # warm-up: every replica has drawn
        capacity = capacity or asyncio.run(closed_loop(address, 2 * replicas, 30))
        rows = []
        for rate in rates:
            wait_until(lambda: total(urls, names.IN_PROGRESS, "diffusion") == 0
                       and total(urls, names.QUEUE_LENGTH, "diffusion") == 0, 120, "the replicas idle")
            runs = total(urls, RUNS, "diffusion")
            if screenshot and rate == max(rates):
                outcomes = _with_screenshot(running, address, rate * capacity, seconds, screenshot)
            else:
                outcomes = asyncio.run(open_loop(address, rate * capacity, seconds))
            wait_until(lambda: total(urls, names.IN_PROGRESS, "diffusion") == 0, 120, "the replicas idle")
            rows.append(Row(replicas, scheduler, rate, outcomes, capacity, total(urls, RUNS, "diffusion") - runs))
            print(_line(rows[-1]), flush=True)
            for line in sorted({o.line for o in outcomes if o.kind == "failed"}):
                print(f"  failed: {line}", flush=True)
    return rows, capacity


def _with_screenshot(running, address: str, rate: float, seconds: float, path) -> list[Outcome]:
    """The open loop, with a Prometheus scraping the Flow and the dashboard saved near its end."""
    import threading

    import app
    from bench.observability_story import screenshot
    from tools.prometheus import Prometheus

    with Prometheus(app.metrics_urls(running), 54691) as prometheus:
        timer = threading.Timer(seconds * 0.8, screenshot, (f"{prometheus.dashboard}?seconds={seconds:.0f}", path))
        timer.start()
        try:
            return asyncio.run(open_loop(address, rate, seconds))
        finally:
            timer.join()


HEADER = ("replicas", "scheduler", "load", "offered /s", "sent", "goodput", "p50 s", "p95 s", "refused",
          "refusal p95 ms", "deadline", "client timeout", "runs/request", "lost", "mismatched", "failed")


def _line(row: Row) -> str:
    figures = {"replicas": row.replicas, "scheduler": row.scheduler, "load": f"{row.rate:g}x", **row.figures()}
    return " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in (figures[k] for k in HEADER))


TWO_KEYS_HEADER = ("fairness", "key", "load", "offered /s", "sent", "goodput", "p50 s", "p95 s", "refused",
                   "refusal p95 ms", "deadline", "client timeout", "lost", "mismatched", "failed")


def two_keys(port: int, max_queued: int, seconds: float) -> None:
    """One replica, a heavy key at 4x the capacity and a light one at 0.25x at once: with no share
    (max_caller_share 1), then with the default share."""
    print(f"two keys, one replica: {IMAGE['width']}x{IMAGE['height']}, {IMAGE['steps']} steps, 1 image; client "
          f"timeout {CLIENT_TIMEOUT:.0f} s; {seconds:.0f} s of arrivals; max_queued_requests {max_queued}", flush=True)
    print(" | ".join(TWO_KEYS_HEADER), flush=True)
    capacity = None
    with tempfile.TemporaryDirectory() as directory:
        keys = Path(directory) / "keys.txt"
        keys.write_text("".join(f"{key}\n" for key, _ in KEYS.values()))
        for share in (1.0, ReplicaLimits().max_caller_share):
            outcomes, runs, capacity = _two_keys_once(port, max_queued, keys, share, seconds, capacity)
            label = "off (share 1)" if share == 1.0 else f"on (share {share:g})"
            for name in ("light", "heavy"):
                row = Row(1, label, KEYS[name][1], outcomes[name], capacity, runs)
                figures = {"fairness": label, "key": name, "load": f"{row.rate:g}x", **row.figures()}
                print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                 for v in (figures[k] for k in TWO_KEYS_HEADER)), flush=True)
                for line in sorted({o.line for o in outcomes[name] if o.kind == "failed"}):
                    print(f"  failed: {line}", flush=True)
            ran = sum(o.kind == "answered" or (o.kind == "deadline" and "at step" in o.line)
                      for kept in outcomes.values() for o in kept)
            print(f"  {label}: model runs per request run, both keys: {runs / ran if ran else float('nan'):.2f}",
                  flush=True)
    print(f"capacity, 1 replica: {capacity:.2f} requests/s", flush=True)


def _two_keys_once(port: int, max_queued: int, keys: Path, share: float, seconds: float,
                   capacity: Optional[float]) -> tuple[dict, float, float]:
    """One Flow with `share`: each key's outcomes, the model runs, and the capacity (measured with
    the heavy key when not given)."""
    import app

    with flow(port, 1, max_queued, keys, share) as running:
        urls = [url for group in app.metrics_urls(running).values() for url in group]
        address, heavy = f"localhost:{port}", KEYS["heavy"][0]
        asyncio.run(closed_loop(address, 2, 10, heavy))  # warm-up
        capacity = capacity or asyncio.run(closed_loop(address, 2, 30, heavy))
        wait_until(lambda: total(urls, names.IN_PROGRESS, "diffusion") == 0
                   and total(urls, names.QUEUE_LENGTH, "diffusion") == 0, 120, "the replica idle")
        runs = total(urls, RUNS, "diffusion")

        async def both():
            return await asyncio.gather(*(open_loop(address, rate * capacity, seconds, key, 100_000 * n)
                                          for n, (key, rate) in enumerate(KEYS.values())))

        outcomes = dict(zip(KEYS, asyncio.run(both()), strict=True))
        wait_until(lambda: total(urls, names.IN_PROGRESS, "diffusion") == 0, 120, "the replica idle")
        return outcomes, total(urls, RUNS, "diffusion") - runs, capacity


def main(args) -> None:
    print(f"open loop: {IMAGE['width']}x{IMAGE['height']}, {IMAGE['steps']} steps, 1 image; client timeout "
          f"{CLIENT_TIMEOUT:.0f} s; {args.seconds:.0f} s per load; each replica on 1 CPU thread", flush=True)
    print(" | ".join(HEADER))
    for replicas in args.replicas:
        capacity = None
        for max_queued in (OFF, args.max_queued_requests):
            _, capacity = run(args.port, replicas, max_queued, args.rates, args.seconds, capacity,
                              args.screenshot if replicas == 1 and max_queued != OFF else None)
            print(f"capacity, {replicas} replica(s): {capacity:.2f} requests/s", flush=True)
