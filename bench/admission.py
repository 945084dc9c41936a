"""Benchmark: admission under open-loop load — arrivals that do not wait for answers.

    python bench/load.py --open-loop [--seconds 45] [--rates 0.5,1,2,4] [--replicas 1,2]
                         [--max-queued-requests 4] [--screenshot docs/admission-dashboard.png]

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
"""

import asyncio
import dataclasses
import random
import statistics
import time
from typing import Optional

from speech2image.client import make_documents, post_async, request_parameters
from speech2image.errors import ClientError
from speech2image.observability import names
from tests.support.load import percentile
from tests.support.metrics import total, wait_until

IMAGE = {"num_images": 1, "width": 128, "height": 128, "steps": 4}
CLIENT_TIMEOUT = 30.0
OFF = 10_000  # the scheduler "off": a queue nobody fills (the most allowed)
RUNS = f"{names.QUEUE_SECONDS}_count"  # one per request that got a replica's turn


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


async def one(address: str, index: int, seed: int, started: float) -> Outcome:
    prompt = f"an open-loop request number {index}"
    sent = time.monotonic()
    try:
        [doc] = await asyncio.wait_for(post_async(make_documents([], prompt), address, request_parameters(
            {**IMAGE, "seed": seed}), timeout=CLIENT_TIMEOUT), CLIENT_TIMEOUT + 30)
    except asyncio.TimeoutError:
        return Outcome(sent - started, time.monotonic() - sent, "lost")
    except ClientError as e:
        line = str(e)
        kind = ("refused" if "busy: " in line else "deadline" if "deadline passed" in line else
                "timeout" if "--timeout" in line else "failed")
        return Outcome(sent - started, time.monotonic() - sent, kind, line)
    except Exception as e:  # a bug in the client path: counted (and printed once per kind), never a crash
        return Outcome(sent - started, time.monotonic() - sent, "failed", f"{type(e).__name__}: {e}")
    right = doc.images and doc.images[0].prompt == prompt and doc.images[0].seed == seed
    return Outcome(sent - started, time.monotonic() - sent, "answered" if right else "mismatched")


async def open_loop(address: str, rate: float, seconds: float) -> list[Outcome]:
    """Poisson arrivals at `rate` per second for `seconds`; every request is awaited to its end."""
    arrivals, started, clock = [], time.monotonic(), random.Random(7)
    at, index = 0.0, 0
    while True:
        at += clock.expovariate(rate)
        if at > seconds:
            break
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        arrivals.append(asyncio.ensure_future(one(address, index, 1000 + index, started)))
        index += 1
    return list(await asyncio.gather(*arrivals))


async def closed_loop(address: str, clients: int, seconds: float) -> float:
    """Answers per second with `clients` each sending as soon as its answer came: the capacity."""
    done, stop_at = 0, time.monotonic() + seconds

    async def client(k):
        nonlocal done
        while time.monotonic() < stop_at:
            await post_async(make_documents([], f"capacity {k}"), address, request_parameters(IMAGE))
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.monotonic() - started)


def flow(port: int, replicas: int, max_queued: int):
    import app

    app.quiet_start_up()
    args = app.parse_args(["--offline", "--port", str(port), "--diffusion-replicas", str(replicas),
                           "--max-queued-requests", str(max_queued)])
    specs = app.executor_specs(args)
    for spec in specs:
        spec["uses_with"]["cpu_threads"] = 1
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
