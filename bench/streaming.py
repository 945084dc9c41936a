"""Benchmark: what a streamed answer shows, and when, against a whole answer — in one run.

    python bench/streaming.py [--steps 4] [--size 512] [--images 2]

jfk.flac (11 s) → its transcript → `--images` images of SIZE², `--steps` steps, through app.py's
Flow (Whisper `embedded`, the SD-Turbo architecture with random weights: speed does not depend
on weight values), over HTTP, `POST /v1/speech-to-image`, three ways after a warm-up:

1. whole: one JSON answer at the end;
2. streamed, `partial_images` 0: transcript.text.delta/.done, then image_generation.completed each;
3. streamed, `partial_images` 3: with three previews of each image.

For each: seconds to the first transcript event, the first partial image, the first completed
image and the end, at the client. The cost of previews: each preview's decode (the replica's
`preview_decode` stage: mean seconds) and the seconds per image the replica measured, with 3
previews against none.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from speech2image.serving.processes import start_flow_processes_from_a_forkserver  # noqa: E402

start_flow_processes_from_a_forkserver()  # as app.py: before jina's import
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")

import requests  # noqa: E402

import app  # noqa: E402
from speech2image.cache import cache_dir  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from speech2image.imaging.random_pipelines import save_random_pipeline  # noqa: E402
from speech2image.observability import names  # noqa: E402
from tests.support.metrics import samples, scrape  # noqa: E402
from tests.support.speech import SPEECH  # noqa: E402

JFK = SPEECH / "jfk.flac"


def stage(urls: list[str], name: str) -> tuple[float, float]:
    """(seconds, count) of one stage so far, over every replica."""
    found = [0.0, 0.0]
    for url in urls:
        text = scrape(url)
        for k, suffix in enumerate(("_sum", "_count")):
            found[k] += sum(value for labels, value in samples(text, f"{names.INFERENCE_SECONDS}{suffix}").items()
                            if f'stage="{name}"' in labels)
    return found[0], found[1]


def speech_to_image(port: int, fields: dict, stream: bool) -> dict:
    """One request: seconds (from its start) to each first event and to the end; the images' seconds."""
    started = time.perf_counter()
    seen: dict[str, float] = {}
    image_seconds = []
    with requests.post(f"http://127.0.0.1:{port}/v1/speech-to-image", files={"file": ("jfk.flac", JFK.read_bytes())},
                       data={**fields, "stream": str(stream).lower()}, stream=stream, timeout=3600) as answer:
        answer.raise_for_status()
        if stream:
            for line in answer.iter_lines(decode_unicode=True):
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: "):])
                if "error" in event:
                    raise SystemExit(f"the stream failed: {event['error']['message']}")
                seen.setdefault(event["type"], time.perf_counter() - started)
                if event["type"] == "image_generation.completed":
                    image_seconds.append(event["seconds"])
        else:
            image_seconds = [image["seconds"] for image in answer.json()["data"]]
    seen["end"] = time.perf_counter() - started
    return {"seen": seen, "image_seconds": image_seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--port", type=int, default=54690)
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    model = save_random_pipeline(cache_dir() / "bench-sd-turbo-random", "sd-turbo")
    app.quiet_start_up()
    flow_args = app.parse_args(["--port", str(args.port), "--whisper-model", "embedded", "--diffusion-model",
                                str(model)])
    fields = {"n": args.images, "size": f"{args.size}x{args.size}", "steps": args.steps, "guidance_scale": 0,
              "seed": 1}
    with app.build_flow(flow_args, app.executor_specs(flow_args)) as running:
        urls = [url for group in app.metrics_urls(running).values() for url in group]
        http = args.port + 1
        speech_to_image(http, {**fields, "n": 1, "steps": 1}, stream=False)  # warm-up: the first image of a size
        print(f"jfk.flac -> {args.images} image(s) of {args.size}x{args.size}, {args.steps} steps, SD-Turbo "
              "architecture (random weights), Whisper embedded; seconds from the request's start")
        print("way | first transcript event | first partial image | first completed image | end | s per image "
              "(replica)")
        runs = {}
        for name, stream, partial in (("whole answer", False, 0), ("streamed, partial_images 0", True, 0),
                                      ("streamed, partial_images 3", True, 3)):
            decoded_before = stage(urls, names.PREVIEW_DECODE)
            runs[name] = run = speech_to_image(http, {**fields, "partial_images": partial}, stream)
            decoded_after = stage(urls, names.PREVIEW_DECODE)
            run["previews"] = (decoded_after[0] - decoded_before[0], decoded_after[1] - decoded_before[1])
            seen = run["seen"]

            def at(kind, seen=seen):
                return f"{seen[kind]:.2f}" if kind in seen else "-"

            per_image = sum(run["image_seconds"]) / len(run["image_seconds"])
            print(f"{name} | {at('transcript.text.delta')} | {at('image_generation.partial_image')} | "
                  f"{at('image_generation.completed')} | {at('end')} | {per_image:.2f}", flush=True)
        seconds, count = runs["streamed, partial_images 3"]["previews"]
        with_previews = sum(runs["streamed, partial_images 3"]["image_seconds"])
        without = sum(runs["streamed, partial_images 0"]["image_seconds"])
        print(f"previews: {count:.0f} decoded, {seconds / max(count, 1):.3f} s each; image time with 3 previews / "
              f"without: {with_previews / without:.3f}")


if __name__ == "__main__":
    main()
