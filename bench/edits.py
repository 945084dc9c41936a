"""Benchmark: an edit against a new image, and the replica's memory around its first edits — in one run.

    python bench/edits.py [--size 512] [--repeat 3]

The SD-Turbo architecture with random weights (speed does not depend on weight values), loaded
as the diffusion executor loads it (`load_engine`, the defaults: on this CPU what `auto` picks),
in this process. Seconds per SIZE² image, the median of `--repeat`, for:

1. a new image: SD-Turbo's preset, 1 step;
2. image to image at strength 0.5, 2 steps (one runs: steps × strength);
3. inpainting with a mask of the left half, strength 1, 1 step.

Then the process's resident memory (RSS) after loading, after the first new image, after the
first edit and after the first inpainting: the edit pipelines are made from the loaded one
(diffusers' `from_pipe`), so they add no second copy of the weights.
"""

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from speech2image.cache import cache_dir  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from speech2image.imaging.diffusion import generate, load_engine  # noqa: E402
from speech2image.imaging.options import DiffusionConfig, GenerateOptions  # noqa: E402
from speech2image.imaging.pictures import edit_source  # noqa: E402
from speech2image.imaging.random_pipelines import save_random_pipeline  # noqa: E402


def png(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size
    model_dir = save_random_pipeline(cache_dir() / "bench-sd-turbo-random", "sd-turbo")
    engine = load_engine(DiffusionConfig(model=str(model_dir)))
    print(f"SD-Turbo architecture, random weights; {engine.backend}, {engine.dtype}, {engine.vae} VAE; {size}²; "
          f"median of {args.repeat} [{describe_cpu()}]", flush=True)
    memory = {"loaded": rss_mib()}
    picture = Image.new("RGB", (size, size), (200, 30, 30))
    mask = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size // 2, size))
    cases = {
        "new image, 1 step": (None, GenerateOptions(steps=1, width=size, height=size, seed=1)),
        "image to image, strength 0.5, 2 steps": (edit_source(png(picture)),
                                                  GenerateOptions(steps=2, strength=0.5, seed=1)),
        "inpainting, strength 1, 1 step": (edit_source(png(picture), png(mask)), GenerateOptions(steps=1, seed=1)),
    }
    seconds = {}
    for (label, (source, options)), after in zip(cases.items(), ("first new image", "first edit", "first inpainting"),
                                                 strict=True):
        settings = engine.resolve(options, source)
        generate(engine, "a red car in the snow", settings, source=source)  # the first: warms up
        memory[after] = rss_mib()
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            generate(engine, "a red car in the snow", settings, source=source)
            times.append(time.perf_counter() - started)
        seconds[label] = statistics.median(times)
        print(f"{label}: {seconds[label]:.2f} s per image", flush=True)
    print("memory (RSS): " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in memory.items()))
    new, edit = seconds["new image, 1 step"], seconds["image to image, strength 0.5, 2 steps"]
    print(f"edit / new image: {edit / new:.2f}x; memory added by the edit pipelines: "
          f"{memory['first inpainting'] - memory['first new image']:+.0f} MiB")


if __name__ == "__main__":
    main()
