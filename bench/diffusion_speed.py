"""Benchmark: Stable Diffusion architectures (random weights): seconds per image, per step, per part.

    python bench/diffusion_speed.py --compare            # CPU: SD-Turbo 512², float32 + full VAE vs the defaults
    python bench/diffusion_speed.py --compare --compile  # … and with torch.compile
    python bench/diffusion_speed.py --compare --all      # … and bfloat16 where the CPU only emulates it
    python bench/diffusion_speed.py --compare --cpu avx2 # … as an AVX2-only CPU computes (emulated)
    python bench/diffusion_speed.py --compare --model sd-turbo sdxs  # … and SDXS-512 against SD-Turbo
    python bench/diffusion_speed.py                      # CPU: SD 1.5 256² and 512², 2 and 4 steps
    python bench/diffusion_speed.py --device cuda        # GPU: SD 1.5 512², 25 steps, fp16, batch 1 and 4
    python bench/diffusion_speed.py --device cuda --compare   # GPU: SD-Turbo 512², full and tiny VAE

Speed does not depend on weight values, so the architectures are built from their
configurations with seeded random weights (no download) and saved once into the cache,
so they load through the executor's own `load_engine` like a real model (weights loaded
in the chosen dtype). `--compare` times one whole image (text encoder + UNet + VAE + PNG,
the way the executor makes it) for each configuration, median of `--repeat` runs after a
warm-up (`--best`: the shortest, on a machine others load), and each part alone; each
configuration runs in a process of its own, one after another, so that its peak memory is
what a replica of it would hold. PyTorch's configurations are pinned to PyTorch; "defaults
(auto)" is what the executor chooses here (OpenVINO where it is installed, but on AMX CPUs;
OpenVINO's int8 modes are timed beside it). Then, same seed, how far
each fast configuration draws from its exact one (relative L2 of the latents and of the
images); then the arithmetic of each part, counted, against the fastest rate this CPU's kernels
reach, which says how far a configuration is from what any engine could do here; last, the
speedup of the defaults. Configurations this CPU cannot compute natively
(bfloat16 without AVX512-BF16 or AMX: emulated, many times slower) are skipped with a line
saying so, unless `--all`. Every run prints the CPU model and the features that decide the
paths first.

`--cpu avx2` (or `avx512`, `avx512_bf16`) runs it all in child processes whose libraries are held
to that kind of CPU (`speech2image.hardware.emulation_environment`: oneDNN, which OpenVINO's CPU
plugin uses too, ATen, CTranslate2, MKL and the project's own `auto` choices): the code paths of
such a CPU on a newer one, not its speed. Every line says whether the CPU is real or emulated.
"""

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
import torch
from PIL import Image

from speech2image.cache import cache_dir
from speech2image.hardware import (
    CPU_ISA_CAPS,
    cpu_has_native_bfloat16,
    cpu_vendor,
    describe_cpu,
    emulated_cpu,
    emulation_environment,
)
from speech2image.imaging import openvino_backend
from speech2image.imaging.diffusion import encode_png, generate, load_engine, resolve_backend, resolve_device
from speech2image.imaging.options import DiffusionConfig, GenerateOptions
from speech2image.imaging.random_pipelines import (
    ARCHITECTURES,
    TINY_VAE_SUBFOLDER,
    build_random_pipeline,
    save_random_pipeline,
)
from speech2image.schema import from_blob

PROMPT = "a photograph of an astronaut riding a horse"


def cpu_kind() -> str:
    """How this process computes, and the machine's load as it says so: "real CPU; load 0.9" or
    "emulated avx2; load 1.1" (see --cpu); figures made above a load of 1.5 on 2 cores are a
    loaded machine's."""
    emulated = emulated_cpu()
    return f"{f'emulated {emulated}' if emulated else 'real CPU'}; load {os.getloadavg()[0]:.2f}"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(run, device: str, repeat: int, best: bool = False) -> float:
    """The median (with `best`, the shortest) of `repeat` timed runs."""
    times = []
    for _ in range(repeat):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times) if best else statistics.median(times)


def parts(engine, size: int, repeat: int, best: bool) -> dict[str, float]:
    """Seconds of each part of one image, alone: text encoder, one UNet step, VAE decode, PNG."""
    pipe, device = engine.pipe, engine.device
    dtype = getattr(torch, engine.dtype)
    latent = size // pipe.vae_scale_factor
    latents = torch.randn(1, pipe.unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    with torch.inference_mode():
        embeddings, _ = pipe.encode_prompt(PROMPT, device, 1, False)
        timestep = torch.tensor(999, device=device)
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        return {
            "text encoder": median_seconds(lambda: pipe.encode_prompt(PROMPT, device, 1, False), device, repeat, best),
            "UNet step": median_seconds(lambda: pipe.unet(latents, timestep, encoder_hidden_states=embeddings),
                                        device, repeat, best),
            "VAE decode": median_seconds(lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor),
                                         device, repeat, best),
            "PNG": median_seconds(lambda: encode_png(image), device, repeat, best),
        }


# --model → the random-weights architecture (speech2image.imaging.random_pipelines) and what it is
MODELS = {
    "sd-turbo": ("sd-turbo", "SD-Turbo architecture (SD 2.1 UNet, OpenCLIP ViT-H text encoder)"),
    "sdxs": ("sdxs", "SDXS-512 architecture (3-stage UNet without a mid block, SD-Turbo's text encoder, its own "
                     "tiny decoder)"),
}


def configurations(args, own_tiny_vae: bool) -> tuple[dict[str, dict], list[str]]:
    """The configurations --compare times, the baseline first (PyTorch's pinned, so that each
    measures what its label says whatever `auto` picks), and a line for each one left out."""
    gpu = args.device.startswith("cuda")
    torch_ = dict(diffusion_backend="torch")
    baseline = dict(dtype="float16" if gpu else "float32", vae="full", **torch_)
    configs = {f"{baseline['dtype']} + full VAE": baseline, "defaults (auto)": dict(dtype="auto", vae="auto")}
    left_out = []
    if not gpu:
        configs["float32 + tiny VAE"] = dict(dtype="float32", vae="tiny", **torch_)
        native = cpu_has_native_bfloat16()
        if native or args.all:
            configs["bfloat16 + full VAE"] = dict(dtype="bfloat16", vae="full", **torch_)
        else:
            left_out.append("bfloat16 + full VAE: skipped, this CPU has no native bfloat16 (no AVX512-BF16, no AMX): "
                            "emulated, it is many times slower than float32 (--all times it anyway)")
        if openvino_backend.available():
            openvino = dict(diffusion_backend="openvino", vae="tiny")
            configs["openvino float32 + tiny VAE"] = dict(dtype="float32", **openvino)
            if emulated_cpu() and not args.all:
                left_out.append("openvino int8 weights + tiny VAE: skipped when emulated (--all tries it): OpenVINO "
                                "picks its int8-weight matmul by its own CPU check, which the oneDNN cap then refuses")
            else:
                configs["openvino int8 weights + tiny VAE"] = dict(dtype="float32", openvino_int8="weights", **openvino)
            configs["openvino int8 full + tiny VAE"] = dict(dtype="float32", openvino_int8="full", **openvino)
            if native or args.all:
                configs["openvino bfloat16 + tiny VAE"] = dict(dtype="bfloat16", **openvino)
                configs["openvino bfloat16 + int8 full + tiny VAE"] = dict(dtype="bfloat16", openvino_int8="full",
                                                                           **openvino)
        else:
            left_out.append("openvino: not installed, skipped (pip install 'speech2image[openvino]')")
    else:
        configs["float16 + tiny VAE"] = dict(dtype="float16", vae="tiny", **torch_)
    if args.compile:
        configs["defaults + compile"] = dict(dtype="auto", vae="auto", compile=True)
    if own_tiny_vae:  # its own VAE is the tiny one: PyTorch's "tiny" draws as its "full" does
        configs = {label: config for label, config in configs.items() if config["vae"] != "tiny"
                   or config.get("diffusion_backend") == "openvino"}
    return configs, left_out


def resolved(config: DiffusionConfig) -> tuple:
    """What a configuration computes with: backend, dtype, VAE and OpenVINO int8 mode, `auto` made concrete."""
    device, dtype, vae = resolve_device(config)
    return resolve_backend(config, device), dtype, vae, config.openvino_int8


def arithmetic(model_dir: Path, size: int) -> dict[str, float]:
    """Floating-point operations (GFLOP) of each part of one size² image (its convolutions and matrix
    products, attention's included: what PyTorch's FlopCounterMode counts), on the saved model's
    modules built on the meta device (shapes only: nothing is computed, seconds): text encoder, one
    UNet step, the model's VAE decode, the tiny one's."""
    import diffusers
    import transformers
    from torch.utils.flop_counter import FlopCounterMode

    index = json.loads((model_dir / "model_index.json").read_text())

    def module(folder: str, library: str, name: str) -> torch.nn.Module:
        if library == "diffusers":
            cls = getattr(diffusers, name)
            return cls.from_config(cls.load_config(model_dir, subfolder=folder))
        cls = getattr(transformers, name)
        return cls(cls.config_class.from_pretrained(model_dir / folder))

    with torch.device("meta"):
        text_encoder, unet, vae = (module(folder, *index[folder]) for folder in ("text_encoder", "unet", "vae"))
        tiny = module(TINY_VAE_SUBFOLDER, "diffusers", "AutoencoderTiny")
        latent = size // 8  # SD's latent scale
        latents = torch.randn(1, unet.config.in_channels, latent, latent)
        ids = torch.zeros(1, text_encoder.config.max_position_embeddings, dtype=torch.int64)
        embeddings = torch.randn(1, text_encoder.config.max_position_embeddings, unet.config.cross_attention_dim)
        runs = {"text encoder": lambda: text_encoder(ids), "UNet step": lambda: unet(latents, 999, embeddings),
                "VAE decode": lambda: vae.decode(latents), "tiny VAE decode": lambda: tiny.decode(latents)}
        counted = {}
        for part, run in runs.items():
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                run()
            counted[part] = counter.get_total_flops() / 1e9
    return counted


# the kinds of work that take an SD UNet's time, at an SD-Turbo 512² UNet's finest level: input and
# weight shapes, GFLOP
RATE_WORK = {
    "convolution": ((1, 320, 64, 64), (320, 320, 3, 3), 2 * 320 * 320 * 9 * 64 * 64 / 1e9),
    "matrix product": ((4096, 320), (320, 1280), 2 * 4096 * 320 * 1280 / 1e9),
}


def fastest_rates(dtype: str) -> dict[str, float]:
    """GFLOPS this CPU reaches in `dtype` on each kind of RATE_WORK (a 3×3 convolution, a matrix
    product), through PyTorch and, where installed, OpenVINO: the best of 5 runs each."""
    rates = {}
    for kind, (x_shape, w_shape, gflop) in RATE_WORK.items():
        x, w = torch.randn(x_shape), torch.randn(w_shape) / 30
        runs = {"PyTorch": torch_run(kind, x.to(getattr(torch, dtype)), w.to(getattr(torch, dtype)))}
        if openvino_backend.available():
            runs["OpenVINO"] = openvino_run(kind, x.numpy(), w.numpy(), dtype)
        for engine, run in runs.items():
            run()
            rates[f"{kind}, {engine}"] = gflop / median_seconds(run, "cpu", 5, best=True)
    return rates


def torch_run(kind: str, x: torch.Tensor, w: torch.Tensor):
    """One PyTorch convolution or matrix product on x and w: a callable."""
    def run():
        with torch.inference_mode():
            return torch.nn.functional.conv2d(x, w, padding=1) if kind == "convolution" else x @ w
    return run


def openvino_run(kind: str, x: np.ndarray, w: np.ndarray, dtype: str):
    """One OpenVINO convolution or matrix product on x and constant w, compiled in `dtype`: a callable."""
    import openvino
    import openvino.opset13 as ops

    inputs = ops.parameter(list(x.shape), np.float32)
    weights = ops.constant(w)
    output = ops.convolution(inputs, weights, [1, 1], [1, 1], [1, 1], [1, 1]) if kind == "convolution" \
        else ops.matmul(inputs, weights, False, False)
    compiled = openvino.Core().compile_model(openvino.Model([output], [inputs]), "CPU", {
        "INFERENCE_PRECISION_HINT": openvino_backend.PRECISIONS[dtype], "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer([x])


def openvino_kernels(engine) -> str:
    """How many of the OpenVINO UNet's kernels were compiled for each instruction set (the check
    that an emulation holds OpenVINO too: its own JIT kernels are not all held by oneDNN's cap)."""
    runtime = engine.pipe.unet.denoiser.compiled.get_runtime_model()
    kinds = [op.get_rt_info()["primitiveType"].astype(str) for op in runtime.get_ordered_ops()]
    counts = {isa: sum(isa in kind for kind in kinds) for isa in ("avx512", "avx2")}
    return f"OpenVINO UNet kernels: {counts['avx512']} AVX-512, {counts['avx2']} AVX2"


def unet_time_by_kernel(engine) -> str:
    """Where the OpenVINO UNet's step at the size timed goes, by kernel: which kind of work bounds
    it on this CPU."""
    seconds = sorted(engine.pipe.unet.denoiser.seconds_by_kernel().items(), key=lambda item: -item[1])
    total = sum(value for _, value in seconds)
    return f"OpenVINO UNet step by kernel ({total:.3f} s): " + ", ".join(
        f"{kernel} {100 * value / total:.0f} %" for kernel, value in seconds if value >= 0.01 * total)


class OtherLoad:
    """How many cores other processes kept busy while the `with` block ran (the machine's busy CPU
    time less this process's, over the wall time): the load average counts this benchmark too."""

    def __enter__(self):
        self._started = (time.perf_counter(), self._busy(), time.process_time())
        return self

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system + times.irq + times.softirq + times.steal

    def __exit__(self, *exc):
        wall, busy, own = self._started
        self.cores = ((self._busy() - busy) - (time.process_time() - own)) / (time.perf_counter() - wall)


def measure(args) -> None:
    """In a child process of its own (--one MODEL LABEL): load one configuration, warm it up, time
    whole images and each part, and leave the figures, the image and the latents in --results;
    its peak memory is the process's, as a replica's would be."""
    model, label = args.one
    model_dir = cache_dir() / f"bench-{MODELS[model][0]}-random"
    configs, _ = configurations(args, own_tiny_vae="vae" not in ARCHITECTURES[MODELS[model][0]])
    started = time.perf_counter()
    engine = load_engine(DiffusionConfig(model=str(model_dir), device=args.device, local_files_only=True,
                                         **configs[label]))
    loaded = time.perf_counter() - started
    settings = engine.resolve(GenerateOptions(seed=0, width=args.size, height=args.size))
    started = time.perf_counter()
    [image] = generate(engine, PROMPT, settings)  # warm-up (and compilation)
    first = time.perf_counter() - started
    latents = engine.pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0, width=args.size, height=args.size,
                          output_type="latent", generator=torch.Generator("cpu").manual_seed(0)).images
    with OtherLoad() as others:
        per_image = median_seconds(lambda: generate(engine, PROMPT, settings), args.device, args.repeat, args.best)
    timings = parts(engine, args.size, args.repeat, args.best)
    backend = "OpenVINO" if engine.backend == "openvino" else "PyTorch"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    # of what is resident, files mapped read-only (libraries, OpenVINO's model files): the kernel can drop them
    resident = psutil.Process().memory_info()
    print(f"{model} {label:28s} {backend:8s} {engine.dtype:8s} {engine.vae:4s} VAE: {per_image:7.3f} s per image "
          f"(load {loaded:.1f} s, first {first:.1f} s; peak memory {peak:.2f} GiB; resident at the end "
          f"{resident.rss / 2**30:.2f} GiB, {resident.shared / 2**30:.2f} GiB of it mapped files; other processes busy "
          f"{others.cores:.2f} cores meanwhile); " + ", ".join(f"{k} {v:.3f} s" for k, v in timings.items())
          + f" [{cpu_kind()}]", flush=True)
    if engine.backend == "openvino" and emulated_cpu():
        print(f"{model} {label}: {openvino_kernels(engine)} [{cpu_kind()}]", flush=True)
    if engine.backend == "openvino":
        print(f"{model} {label}: {unet_time_by_kernel(engine)} [{cpu_kind()}]", flush=True)
    picture = np.asarray(Image.open(io.BytesIO(from_blob(image.png))).convert("RGB"), dtype=np.float64)
    np.savez(args.results / "result.npz", per_image=per_image, picture=picture, latents=latents.float().cpu().numpy(),
             part_names=np.array(list(timings)), part_seconds=np.array(list(timings.values())))


def compare_model(model: str, args) -> tuple[dict[str, float], str]:
    """One architecture, `args.size`², 1 step, no guidance: each configuration in a child process
    of its own, one after another; then how close each fast one draws to its exact one."""
    gpu = args.device.startswith("cuda")
    architecture, description = MODELS[model]
    started = time.perf_counter()
    model_dir = save_random_pipeline(cache_dir() / f"bench-{architecture}-random", architecture)
    print(f"{description}, random weights, in {model_dir} ({time.perf_counter() - started:.0f} s); {args.size}², "
          f"1 step, guidance 0; device {args.device} "
          f"({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}); "
          f"{'best' if args.best else 'median'} of {args.repeat}; each configuration in a process of its own "
          f"[{cpu_kind()}]", flush=True)
    configs, left_out = configurations(args, own_tiny_vae="vae" not in ARCHITECTURES[architecture])
    for line in left_out:
        print(f"{model} {line} [{cpu_kind()}]")
    config_of = {label: DiffusionConfig(model=str(model_dir), device=args.device, **config)
                 for label, config in configs.items()}
    same_as = {label: "defaults (auto)" for label, config in config_of.items()
               if label != "defaults (auto)" and resolved(config) == resolved(config_of["defaults (auto)"])}
    results = {}
    for label in configs:
        if label in same_as:
            print(f"{model} {label}: what the defaults are here, timed as them [{cpu_kind()}]", flush=True)
            continue
        with tempfile.TemporaryDirectory() as directory:
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", model, label,
                                    "--results", directory])
            if child.returncode:
                sys.exit(f"{model} {label}: the measuring process failed (exit {child.returncode})")
            with np.load(Path(directory) / "result.npz") as result:
                results[label] = dict(result)
    for label, alias in same_as.items():
        results[label] = results[alias]
    pairs = [("float32 + full VAE", "bfloat16 + full VAE"), ("float32 + tiny VAE", "defaults (auto)"),
             ("float32 + tiny VAE", "openvino float32 + tiny VAE"),
             ("float32 + tiny VAE", "openvino int8 weights + tiny VAE"),
             ("float32 + tiny VAE", "openvino int8 full + tiny VAE"),
             ("float32 + tiny VAE", "openvino bfloat16 + tiny VAE"),
             ("float32 + tiny VAE", "openvino bfloat16 + int8 full + tiny VAE")]
    for exact, fast in (pair for pair in pairs if set(pair) <= set(results)):
        a, b = results[exact]["picture"], results[fast]["picture"]
        x, y = results[exact]["latents"], results[fast]["latents"]
        print(f"{model} {fast} vs {exact}, same seed: latents after the UNet differ by "
              f"{np.linalg.norm(y - x) / np.linalg.norm(x):.2%} (relative L2); images by "
              f"{np.linalg.norm(b - a) / np.linalg.norm(a):.2%} (relative L2), {np.abs(a - b).mean():.2f} of 255 on "
              f"average, correlation {np.corrcoef(a.ravel(), b.ravel())[0, 1]:.4f} [{cpu_kind()}]")
    if not gpu:
        arithmetic_against_rates(model, model_dir, args.size, config_of, results)
    return {label: float(result["per_image"]) for label, result in results.items()}, next(iter(configs))


def arithmetic_against_rates(model: str, model_dir: Path, size: int, config_of: dict[str, DiffusionConfig],
                             results: dict[str, dict]) -> None:
    """Each float configuration's GFLOPS, per image and per part, and the time its arithmetic would
    take if all of it ran at the best rate this CPU reached in that dtype (any kind of work, PyTorch's
    or OpenVINO's kernels): a bound no engine passes without faster kernels than those."""
    counted = arithmetic(model_dir, size)
    print(f"{model} arithmetic per {size}² image (PyTorch's FlopCounterMode): " + ", ".join(
        f"{part} {gflop:.1f} GFLOP" for part, gflop in counted.items()) + f" [{cpu_kind()}]")
    floats = {label: resolved(config) for label, config in config_of.items() if config.openvino_int8 == "none"}
    for dtype in sorted({dtype for _, dtype, _, _ in floats.values()}):
        rates = fastest_rates(dtype)
        best = max(rates.values())
        print(f"{model} this CPU's {dtype} rates, {torch.get_num_threads()} threads: " + ", ".join(
            f"{name} {rate:.0f} GFLOPS" for name, rate in rates.items()) + f" [{cpu_kind()}]")
        for label, (_, config_dtype, vae, _) in floats.items():
            if config_dtype != dtype:
                continue
            result = results[label]
            gflop = {"text encoder": counted["text encoder"], "UNet step": counted["UNet step"],
                     "VAE decode": counted["tiny VAE decode" if vae == "tiny" else "VAE decode"]}
            seconds = dict(zip(result["part_names"].tolist(), result["part_seconds"].tolist(), strict=True))
            total, per_image = sum(gflop.values()), float(result["per_image"])
            print(f"{model} {label}: {total:.0f} GFLOP in {per_image:.2f} s per image ({total / per_image:.0f} GFLOPS; "
                  + ", ".join(f"{part} {gflop[part] / seconds[part]:.0f}" for part in gflop)
                  + f"); all at the best rate ({best:.0f} GFLOPS) it would take {total / best:.2f} s "
                  f"({total / best / per_image:.0%} of the time measured) [{cpu_kind()}]")


def compare(args) -> None:
    """Each --model's configurations; then the defaults of the others against the first's, and
    last the first's speedup: float32 (float16 on a GPU) + full VAE against the defaults."""
    results = {model: compare_model(model, args) for model in args.model}
    reference, *others = args.model
    for model in others:
        ratio = results[model][0]["defaults (auto)"] / results[reference][0]["defaults (auto)"]
        print(f"{model} defaults: {ratio:.0%} of {reference}'s per image [{cpu_kind()}]")
    per_image, baseline = results[reference]
    base, default = per_image[baseline], per_image["defaults (auto)"]
    print(f"speedup: {base / default:.1f}× per image ({baseline}: {base:.2f} s; defaults: {default:.2f} s)")


def steps_and_sizes(args) -> None:
    """SD 1.5 architecture: per image and per step (the slope between two step counts)."""
    gpu = args.device.startswith("cuda")
    sizes = args.sizes or ([512] if gpu else [256, 512])
    low, high = args.steps or ((10, 25) if gpu else (2, 4))
    batches = args.batches or ([1, 4] if gpu else [1])
    dtype = torch.float16 if gpu else torch.float32
    pipe = build_random_pipeline("sd15").to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.compile:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode="max-autotune", fullgraph=True)
    print(f"SD 1.5 architecture, random weights; device {args.device}, {dtype}")

    def run(batch, size, steps):
        pipe(prompt=[PROMPT] * batch, num_inference_steps=steps, guidance_scale=7.5, width=size, height=size,
             output_type="pil", generator=[torch.Generator("cpu").manual_seed(k) for k in range(batch)])

    for size in sizes:
        for batch in batches:
            run(batch, size, low)  # warm-up (and compilation)
            t_low = median_seconds(lambda batch=batch, size=size: run(batch, size, low), args.device, args.repeat)
            t_high = median_seconds(lambda batch=batch, size=size: run(batch, size, high), args.device, args.repeat)
            per_step = (t_high - t_low) / (high - low)
            print(f"{size}x{size} batch {batch}: {t_high / batch:7.3f} s/image at {high} steps, "
                  f"{t_low / batch:7.3f} s/image at {low} steps; {per_step:6.3f} s/step "
                  f"({batch / per_step:5.1f} image-steps/s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare", action="store_true", help="SD-Turbo: float32 + full VAE vs the defaults")
    parser.add_argument("--model", nargs="+", choices=tuple(MODELS), default=["sd-turbo"],
                        help="--compare: these architectures, each against the first")
    parser.add_argument("--size", type=int, default=512, help="--compare: width and height")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--steps", type=int, nargs=2, help="two step counts; per-step time is their slope")
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--best", action="store_true",
                        help="--compare: the shortest of the runs, not the median (a machine others load)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the UNet and VAE decoder")
    parser.add_argument("--all", action="store_true", help="--compare: also what this CPU only emulates")
    parser.add_argument("--cpu", choices=("native", *CPU_ISA_CAPS), default="native",
                        help="compute as this kind of CPU would (emulated, in a child process)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "LABEL"), help=argparse.SUPPRESS)  # a child of --compare
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return measure(args)
    if args.cpu != "native" and emulated_cpu() != args.cpu:
        child = subprocess.run([sys.executable, *sys.argv], env={**os.environ, **emulation_environment(args.cpu)})
        sys.exit(child.returncode)
    print(f"CPU: {describe_cpu()}; {cpu_kind()}; PyTorch {torch.__version__} "
          f"(ATen {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads", flush=True)
    if emulated_cpu() and cpu_vendor() == "AuthenticAMD":
        print("MKL cannot be capped on AMD CPUs (MKL_ENABLE_INSTRUCTIONS is obeyed on Intel CPUs only): "
              "PyTorch's float32 matmuls run MKL's native kernels here [emulated "
              f"{emulated_cpu()}]", flush=True)
    compare(args) if args.compare else steps_and_sizes(args)


if __name__ == "__main__":
    main()
