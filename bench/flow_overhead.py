"""Benchmark: the Flow's own overhead (monitoring on and off), and throughput with 1 vs 2 replicas.

    python bench/flow_overhead.py [--requests 20] [--size 512] [--throughput-requests 16]

1. Overhead: jfk.flac through app.py's offline Flow (gRPC), 2 images of SIZE² each:
   end-to-end latency at the client minus the time inside the two executors' model calls
   (Whisper's transcribe, the diffusion pipeline). p50 and p95, and what it is made of:
   audio decoding and PNG encoding (timed here on the same inputs and outputs) and the
   rest, the Flow itself: (de)serialisation, client and gateway hops. Measured with
   monitoring (metrics and stage timing) off, then on, in one run.
2. Throughput: text-only requests from 4 concurrent clients (one asyncio loop; Jina's gRPC
   client is not thread-safe) against 1 and then 2 diffusion replicas, each replica on one
   CPU thread.
"""

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from speech2image.serving.processes import start_flow_processes_from_a_forkserver  # noqa: E402

start_flow_processes_from_a_forkserver()  # as app.py: before jina's import
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

import app  # noqa: E402
from speech2image.asr.audio import load_audio  # noqa: E402
from speech2image.asr.options import AudioSources  # noqa: E402
from speech2image.client import connect, make_documents, post, post_async, request_parameters  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from speech2image.imaging.diffusion import encode_png  # noqa: E402
from speech2image.limits import AudioLimits  # noqa: E402
from speech2image.schema import from_blob  # noqa: E402
from tests.support.load import percentile  # noqa: E402
from tests.support.speech import SPEECH  # noqa: E402

JFK = SPEECH / "jfk.flac"


def start(port: int, replicas: int, threads: int, monitoring: bool = True):
    args = app.parse_args(["--offline", "--port", str(port), "--diffusion-replicas", str(replicas),
                           *([] if monitoring else ["--no-monitoring"])])
    specs = app.executor_specs(args)
    for spec in specs:
        if spec["name"] == "diffusion" and threads:
            spec["uses_with"]["cpu_threads"] = threads
    return app.build_flow(args, specs)


def median_ms(function, repeat: int = 10) -> float:
    function()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def overhead(port: int, n: int, size: int, label: str):
    from PIL import Image

    parameters = request_parameters({"num_images": 2, "seed": 1, "width": size, "height": size, "steps": 2})
    client = connect(f"localhost:{port}")  # one connection, as a long-lived caller keeps
    post(make_documents([JFK]), client, parameters)  # warm-up
    totals, overheads = [], []
    for _ in range(n):
        docs = make_documents([JFK])
        started = time.perf_counter()
        doc = post(docs, client, parameters)[0]
        total = time.perf_counter() - started
        model = doc.asr_seconds + sum(image.seconds for image in doc.images)
        totals.append(total)
        overheads.append(total - model)
    request = make_documents([JFK])[0]
    decode = median_ms(lambda: load_audio(request, AudioSources(), AudioLimits()))
    pictures = [Image.open(io.BytesIO(from_blob(image.png))) for image in doc.images]
    encode = median_ms(lambda: [encode_png(picture) for picture in pictures])  # as the executor encodes
    p50 = statistics.median(overheads) * 1000
    print(f"{label}: end to end ({n} requests, jfk.flac, 2 images {size}x{size}): "
          f"p50 {statistics.median(totals) * 1000:.0f} ms, p95 {percentile(totals, 0.95) * 1000:.0f} ms")
    print(f"overhead outside the model calls: p50 {p50:.1f} ms "
          f"({p50 / 10 / statistics.median(totals):.1f} % of end to end), p95 {percentile(overheads, 0.95) * 1000:.1f} ms")
    print(f"  of which audio decoding {decode:.1f} ms, PNG encoding of both images {encode:.1f} ms, "
          f"the Flow (client, gateway, 4 gRPC hops, (de)serialisation) {p50 - decode - encode:.1f} ms")


def throughput(port: int, n: int, clients: int) -> float:
    parameters = request_parameters({"num_images": 1, "steps": 4, "width": 128, "height": 128, "seed": 1})
    address = f"localhost:{port}"

    async def run():
        async def one(k):
            return await post_async(make_documents([], f"a lighthouse at dusk, number {k}"), address, parameters)

        async def client(first):
            for k in range(first, n, clients):
                await one(k)

        await asyncio.gather(*(one(k) for k in range(clients)))  # warm every replica
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return n / (time.perf_counter() - started)

    return asyncio.run(run())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--throughput-requests", type=int, default=16)
    parser.add_argument("--port", type=int, default=54610)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    for monitoring in (False, True):
        with start(args.port, 1, 0, monitoring):
            overhead(args.port, args.requests, args.size, f"monitoring {'on' if monitoring else 'off'}")
    rates = {}
    for replicas in (1, 2):
        with start(args.port, replicas, 1):
            rates[replicas] = throughput(args.port, args.throughput_requests, 4)
        print(f"throughput, {replicas} diffusion replica(s) x 1 CPU thread, 4 clients: {rates[replicas]:.2f} requests/s")
    print(f"2 replicas vs 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
