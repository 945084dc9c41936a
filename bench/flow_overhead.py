"""Benchmark: the Flow's own overhead, and diffusion throughput with 1 vs 2 replicas.

    python bench/flow_overhead.py [--requests 20] [--size 512] [--throughput-requests 16]

1. Overhead: jfk.flac through app.py's offline Flow (gRPC), 2 images of SIZE² each:
   end-to-end latency at the client minus the time inside the two executors' model calls
   (Whisper's transcribe, the diffusion pipeline). What is left is decoding, PNG
   encoding, (de)serialisation and the gateway hops. p50 and p95.
2. Throughput: text-only requests from 4 concurrent clients against 1 and then 2 diffusion
   replicas, each replica on one CPU thread.
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

import app  # noqa: E402
from client import make_documents, post, request_parameters  # noqa: E402

JFK = ROOT.parent / "shared" / "data" / "speech" / "jfk.flac"


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start(port: int, replicas: int, threads: int):
    args = app.parse_args(["--offline", "--port", str(port), "--diffusion-replicas", str(replicas)])
    specs = app.executor_specs(args)
    for spec in specs:
        if spec["name"] == "diffusion" and threads:
            spec["uses_with"]["cpu_threads"] = threads
    return app.build_flow(args, specs)


def overhead(port: int, n: int, size: int):
    docs = make_documents([JFK])
    parameters = request_parameters({"num_images": 2, "seed": 1, "width": size, "height": size, "steps": 2})
    post(docs, f"localhost:{port}", parameters)  # warm-up
    totals, overheads = [], []
    for _ in range(n):
        started = time.perf_counter()
        doc = post(make_documents([JFK]), f"localhost:{port}", parameters)[0]
        total = time.perf_counter() - started
        model = doc.asr_seconds + sum(image.seconds for image in doc.images)
        totals.append(total)
        overheads.append(total - model)
    print(f"end to end ({n} requests, jfk.flac, 2 images {size}x{size}): "
          f"p50 {statistics.median(totals) * 1000:.0f} ms, p95 {percentile(totals, 0.95) * 1000:.0f} ms")
    print(f"overhead outside the model calls: p50 {statistics.median(overheads) * 1000:.1f} ms "
          f"({statistics.median(overheads) / statistics.median(totals) * 100:.1f} % of end to end), "
          f"p95 {percentile(overheads, 0.95) * 1000:.1f} ms")


def throughput(port: int, n: int, clients: int) -> float:
    parameters = request_parameters({"num_images": 1, "steps": 4, "width": 128, "height": 128, "seed": 1})

    def one(k):
        return post(make_documents([], f"a lighthouse at dusk, number {k}"), f"localhost:{port}", parameters)

    for k in range(clients):  # warm every replica
        one(k)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--throughput-requests", type=int, default=16)
    parser.add_argument("--port", type=int, default=54610)
    args = parser.parse_args()
    with start(args.port, 1, 0):
        overhead(args.port, args.requests, args.size)
    rates = {}
    for replicas in (1, 2):
        with start(args.port, replicas, 1):
            rates[replicas] = throughput(args.port, args.throughput_requests, 4)
        print(f"throughput, {replicas} diffusion replica(s) x 1 CPU thread, 4 clients: {rates[replicas]:.2f} requests/s")
    print(f"2 replicas vs 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
