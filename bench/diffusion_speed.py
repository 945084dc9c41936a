"""Benchmark: Stable Diffusion 1.5 architecture (random weights) seconds per image and per step.

    python bench/diffusion_speed.py                      # CPU: 256² and 512², 2 and 4 steps
    python bench/diffusion_speed.py --device cuda        # GPU: 512², 25 steps, fp16, batch 1 and 4

Speed does not depend on weight values, so the full SD 1.5 architecture (UNet ≈ 860 M
parameters, VAE, CLIP ViT-L/14 text encoder) is built from its configuration with
seeded random weights: no download. Per-step time is the slope between two step
counts; per-image time includes text encoding and VAE decoding.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from speech2image.random_pipelines import build_random_pipeline  # noqa: E402


def timed(pipe, batch: int, size: int, steps: int, device: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pipe(prompt=["a photograph of an astronaut riding a horse"] * batch, num_inference_steps=steps,
             guidance_scale=7.5, width=size, height=size, output_type="pil",
             generator=[torch.Generator("cpu").manual_seed(k) for k in range(batch)])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--steps", type=int, nargs=2, help="two step counts; per-step time is their slope")
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE decoder")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    sizes = args.sizes or ([512] if gpu else [256, 512])
    low, high = args.steps or ((10, 25) if gpu else (2, 4))
    batches = args.batches or ([1, 4] if gpu else [1])
    repeat = args.repeat or (3 if gpu else 1)
    dtype = torch.float16 if gpu else torch.float32

    started = time.perf_counter()
    pipe = build_random_pipeline("sd15").to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for p in pipe.unet.parameters())
    print(f"SD 1.5 architecture, random weights: UNet {params / 1e6:.0f} M parameters; built in "
          f"{time.perf_counter() - started:.0f} s; device {args.device} "
          f"({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}), {dtype}, "
          f"attention {type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__}")
    if args.compile:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode="max-autotune", fullgraph=True)
    for size in sizes:
        for batch in batches:
            timed(pipe, batch, size, low, args.device, 1)  # warm-up (and compilation)
            t_low = timed(pipe, batch, size, low, args.device, repeat)
            t_high = timed(pipe, batch, size, high, args.device, repeat)
            per_step = (t_high - t_low) / (high - low)
            print(f"{size}x{size} batch {batch}: {t_high / batch:7.3f} s/image at {high} steps, "
                  f"{t_low / batch:7.3f} s/image at {low} steps; {per_step:6.3f} s/step "
                  f"({batch / per_step:5.1f} image-steps/s)")


if __name__ == "__main__":
    main()
