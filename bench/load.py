"""Benchmark: load and faults — mixed requests from concurrent clients against `python app.py --offline`.

    python bench/load.py [--requests 1000] [--clients 8] [--replicas 2] [--kill-after 300]

The requests (tests/support/load.py) mix good clips, text prompts and seven kinds of bad
input; every answer is checked against its own request and every bad input must be
refused with its own message. With --kill-after K, one diffusion replica is killed
(SIGKILL) once K requests have ended. Every request is bounded in time; one that does not
end is "lost". Prints latency p50/p95, throughput and the outcome counts.
"""

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speech2image.hardware import describe_cpu  # noqa: E402
from tests.support.app import App  # noqa: E402
from tests.support.load import cases, run_load  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--kill-after", type=int, help="kill one diffusion replica once this many requests ended")
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    with App("--diffusion-replicas", str(args.replicas)) as server:
        report = asyncio.run(run_load(f"localhost:{server.port}", cases(args.requests), args.clients,
                                      kill_after=args.kill_after, server=server))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
