"""Benchmark: the dashboard names the bottleneck, a replica is added, latency falls.

    python bench/observability_story.py [--seconds 60] [--clients 4] [--screenshot docs/dashboard.png]

app.py's offline Flow (each diffusion replica and Whisper on one CPU thread) under a
steady load of concurrent clients posting a speech clip for one image, first with 1
diffusion replica, then with 2. A real Prometheus scrapes the Flow; at the end of each
run the dashboard's own queries (tools/dashboard.py) are read from it and printed
side by side with the throughput the clients saw. With --screenshot, headless Chromium
(Debian's `chromium`) saves the console dashboard during the 1-replica run.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from speech2image.serving.processes import start_flow_processes_from_a_forkserver  # noqa: E402

start_flow_processes_from_a_forkserver()  # as app.py: before jina's import
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

import app  # noqa: E402
from speech2image.client import make_documents, post_async, request_parameters  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from tests.support.speech import SPEECH  # noqa: E402
from tools import dashboard  # noqa: E402
from tools.prometheus import Prometheus  # noqa: E402

CLIP = SPEECH / "prompt4.wav"
IMAGE = {"num_images": 1, "steps": 4, "width": 256, "height": 256, "seed": 1}
QUERIES = {  # the dashboard's panels, by title
    "busy": "Busy fraction per executor replica (≈1: the bottleneck)",
    "queue": "Queue wait per executor (p50, p95)",
    "latency": "Request latency in each executor, queue included (p50, p95)",
}


def panel_queries(title: str) -> list[str]:
    return [expr for panel in dashboard.PANELS if panel.title == title for _, expr in panel.queries]


def query(prometheus: Prometheus, expr: str) -> dict[str, float]:
    answer = json.loads(urllib.request.urlopen(f"{prometheus.url}/api/v1/query?query={urllib.parse.quote(expr)}").read())
    return {" ".join(f"{v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
            for r in answer["data"]["result"]}


def start(port: int, replicas: int):
    args = app.parse_args(["--offline", "--port", str(port), "--diffusion-replicas", str(replicas)])
    specs = app.executor_specs(args)
    for spec in specs:
        spec["uses_with"]["cpu_threads"] = 1
    return app.build_flow(args, specs)


async def load(address: str, clients: int, seconds: float) -> tuple[int, float]:
    """Each client posts the clip again as soon as its answer comes; (answers, seconds)."""
    parameters = request_parameters(IMAGE)
    done, stop_at = 0, time.monotonic() + seconds

    async def client():
        nonlocal done
        while time.monotonic() < stop_at:
            await post_async(make_documents([CLIP]), address, parameters)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.monotonic() - started


def screenshot(url: str, path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("no screenshot: install Debian's chromium")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--disable-component-update", "--no-first-run",
                        f"--user-data-dir={profile}", "--window-size=1000,2300", "--virtual-time-budget=8000",
                        f"--screenshot={path}", url], capture_output=True, timeout=120)
    print(f"screenshot: {path}")


def run(args, replicas: int) -> dict:
    with start(args.port, replicas) as flow:
        with Prometheus(app.metrics_urls(flow), args.prometheus_port) as prometheus:
            address = f"localhost:{args.port}"
            asyncio.run(load(address, args.clients, 10))  # warm-up: every replica has drawn
            answers, seconds = asyncio.run(load(address, args.clients, args.seconds))
            if args.screenshot and replicas == 1:
                screenshot(prometheus.dashboard, args.screenshot)
            figures = {"throughput": answers / seconds}
            for key, title in QUERIES.items():
                for expr in panel_queries(title):
                    for labels, value in query(prometheus, expr).items():
                        label = f"{key} {'p95 ' if '0.95' in expr else 'p50 ' if '0.50' in expr else ''}{labels}"
                        figures[label] = value
            return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=54650)
    parser.add_argument("--prometheus-port", type=int, default=54690)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    results = {replicas: run(args, replicas) for replicas in (1, 2)}
    keys = sorted(set(results[1]) | set(results[2]), key=lambda k: (k != "throughput", k))
    print(f"{args.clients} clients, {args.seconds:.0f} s each; prompt4.wav → 1 image {IMAGE['width']}², "
          f"{IMAGE['steps']} steps; every replica on 1 CPU thread")
    print(f"{'measure':62s} {'1 replica':>10s} {'2 replicas':>10s}")
    for key in keys:
        one, two = (f"{results[r][key]:.3f}" if key in results[r] else "—" for r in (1, 2))
        print(f"{key:62s} {one:>10s} {two:>10s}")
    print(f"throughput: 2 replicas / 1 = {results[2]['throughput'] / results[1]['throughput']:.2f}x")


if __name__ == "__main__":
    main()
