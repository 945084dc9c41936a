"""Benchmark: load and faults — mixed requests from concurrent clients against `python app.py --offline`.

    python bench/load.py [--requests 1000] [--clients 8] [--replicas 2] [--kill-after 300]
    python bench/load.py --open-loop [--seconds 45] [--rates 0.5,1,2,4] [--replicas 1,2]  # bench/admission.py
    python bench/load.py --open-loop --two-keys [--seconds 60]  # fairness between keys: bench/admission.py

The requests (tests/support/load.py) mix good clips, text prompts and seven kinds of bad
input; every answer is checked against its own request and every bad input must be
refused with its own message. With --kill-after K, one diffusion replica is killed
(SIGKILL) once K requests have ended. Every request is bounded in time; one that does not
end is "lost". Prints latency p50/p95, throughput and the outcome counts. Each replica
queues as many requests as there are clients (`--max-queued-requests`): this run is about
faults, the open loop about admission.
"""

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

from bench import admission
from speech2image.hardware import describe_cpu
from speech2image.limits import ReplicaLimits
from speech2image.serving.processes import start_flow_processes_from_a_forkserver
from tests.support.app import App
from tests.support.load import cases, run_load

start_flow_processes_from_a_forkserver()  # the open loop runs app.py's Flow in this process


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", default=None, help="diffusion replicas (open loop: a list, default 1,2)")
    parser.add_argument("--kill-after", type=int, help="kill one diffusion replica once this many requests ended")
    parser.add_argument("--open-loop", action="store_true", help="admission under open-loop arrivals instead")
    parser.add_argument("--seconds", type=float, default=45, help="open loop: seconds of arrivals per load")
    parser.add_argument("--rates", default="0.5,1,2,4", help="open loop: loads, in multiples of the capacity")
    parser.add_argument("--max-queued-requests", type=int, default=ReplicaLimits().max_queued_requests)
    parser.add_argument("--screenshot", type=Path, help="open loop: the dashboard during the heaviest load")
    parser.add_argument("--two-keys", action="store_true", help="open loop: a heavy key (4x) and a light one "
                                                                "(0.25x) at once, without and with the share")
    parser.add_argument("--port", type=int, default=54660)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    if args.open_loop and args.two_keys:
        admission.two_keys(args.port, args.max_queued_requests, args.seconds)
        print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
        return
    if args.open_loop:
        args.replicas = [int(r) for r in (args.replicas or "1,2").split(",")]
        args.rates = [float(r) for r in args.rates.split(",")]
        admission.main(args)
        return
    with App("--diffusion-replicas", str(args.replicas or 2), "--max-queued-requests", str(args.clients)) as server:
        report = asyncio.run(run_load(f"localhost:{server.port}", cases(args.requests), args.clients,
                                      kill_after=args.kill_after, server=server))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
