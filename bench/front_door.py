"""Benchmark: one request three ways through the front door — bytes on the wire and overhead.

    python bench/front_door.py [--requests 10] [--size 256]

jfk.flac (11 s, 1.15 MB of FLAC) → its transcript → 1 image (the offline models, SIZE², 2 steps),
through app.py's offline Flow, in one run:

1. gRPC: `speech2image.client.post` (Jina's protocol: the audio and the PNG as raw bytes);
2. Jina's JSON route, `POST /generate` (every byte a decimal number in a JSON array);
3. the multipart route, `POST /v1/speech-to-image` (the file as is; the PNG back as base64).

Bytes on the wire: the second request of a connection through a counting TCP relay (headers
and framing included, the connection's set-up not: a caller keeps its connection), client →
server and back. Overhead: end-to-end latency at the
client minus the model calls (Whisper's VAD, language detection and transcription; the
pipeline's text encoder, denoising and VAE decoding), read from the replicas' own
`speech2image_inference_seconds` per request; median and p95 of `--requests` after a warm-up.
"""

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from speech2image.serving.processes import start_flow_processes_from_a_forkserver  # noqa: E402

start_flow_processes_from_a_forkserver()  # as app.py: before jina's import
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

import requests  # noqa: E402

import app  # noqa: E402
from speech2image.client import connect, make_documents, post, request_parameters  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from speech2image.observability import names  # noqa: E402
from tests.support.load import percentile  # noqa: E402
from tests.support.metrics import samples, scrape  # noqa: E402
from tests.support.speech import SPEECH  # noqa: E402

JFK = SPEECH / "jfk.flac"
MODEL_STAGES = (names.VAD, names.DETECT_LANGUAGE, names.TRANSCRIBE, names.TEXT_ENCODE, names.DENOISE,
                names.VAE_DECODE)


class CountingRelay:
    """A TCP relay on loopback to `target_port` that counts the bytes each way."""

    def __init__(self, target_port: int):
        self.target_port, self.up, self.down = target_port, 0, 0
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _relay(self, client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(reader, writer, upward: bool):
            while data := await reader.read(65536):
                if upward:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False),
                             return_exceptions=True)

    def reset(self) -> None:
        self.up = self.down = 0


def model_seconds(urls: list[str]) -> float:
    """The model calls' seconds so far, over every replica (a histogram's _sum per stage)."""
    found = 0.0
    for url in urls:
        for labels, value in samples(scrape(url), f"{names.INFERENCE_SECONDS}_sum").items():
            if any(f'stage="{stage}"' in labels for stage in MODEL_STAGES):
                found += value
    return found


def ways(grpc_port: int, http_port: int, size: int, session: requests.Session):
    """name → a function that sends the request once and checks its answer."""
    audio = JFK.read_bytes()
    image = {"num_images": 1, "seed": 1, "width": size, "height": size, "steps": 2}
    client = connect(f"localhost:{grpc_port}")  # one connection, as a long-lived caller keeps

    def grpc():
        [doc] = post(make_documents([JFK]), client, request_parameters(image))
        assert doc.text and len(doc.images) == 1

    def json_route():
        body = {"data": [{"audio": list(audio)}], "parameters": {f"diffusion__{k}": v for k, v in image.items()}}
        answer = session.post(f"http://127.0.0.1:{http_port}/generate", json=body, timeout=120)
        assert answer.status_code == 200 and len(answer.json()["data"][0]["images"]) == 1, answer.text[:300]

    def multipart():
        answer = session.post(f"http://127.0.0.1:{http_port}/v1/speech-to-image", files={"file": ("jfk.flac", audio)},
                              data={"n": 1, "seed": 1, "size": f"{size}x{size}", "steps": 2}, timeout=120)
        assert answer.status_code == 200 and len(answer.json()["data"]) == 1, answer.text[:300]

    return {"gRPC (client.py)": grpc, "Jina JSON, POST /generate": json_route,
            "multipart, POST /v1/speech-to-image": multipart}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--port", type=int, default=54680)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    app.quiet_start_up()
    flow_args = app.parse_args(["--offline", "--port", str(args.port)])
    with app.build_flow(flow_args, app.executor_specs(flow_args)) as running:
        urls = [url for group in app.metrics_urls(running).values() for url in group]
        grpc_relay, http_relay = CountingRelay(args.port), CountingRelay(args.port + 1)
        session, relayed = requests.Session(), requests.Session()
        direct = ways(args.port, args.port + 1, args.size, session)
        counted = ways(grpc_relay.port, http_relay.port, args.size, relayed)
        print(f"jfk.flac ({JFK.stat().st_size} bytes) -> 1 image of {args.size}x{args.size}, 2 steps; "
              f"{args.requests} requests each after a warm-up")
        print("way | bytes to the server | bytes back | overhead p50 ms | overhead p95 ms | end to end p50 ms")
        for name, send in direct.items():
            send()  # warm-up
            totals, overheads = [], []
            for _ in range(args.requests):
                before = model_seconds(urls)
                started = time.perf_counter()
                send()
                total = time.perf_counter() - started
                totals.append(total)
                overheads.append(total - (model_seconds(urls) - before))
            relay = grpc_relay if name.startswith("gRPC") else http_relay
            counted[name]()  # the relayed connection's set-up
            relay.reset()
            counted[name]()
            print(f"{name} | {relay.up} | {relay.down} | {statistics.median(overheads) * 1000:.1f} | "
                  f"{percentile(overheads, 0.95) * 1000:.1f} | "
                  f"{statistics.median(totals) * 1000:.0f}", flush=True)


if __name__ == "__main__":
    main()
