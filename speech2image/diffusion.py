"""Text → images with Hugging Face diffusers.

:func:`load_engine` loads a text-to-image pipeline once (diffusers'
`AutoPipelineForText2Image`: SD 1.x/2.x, SD-Turbo, SDXL, SDXL-Turbo); :func:`generate`
turns one prompt into PNG images with :class:`GenerateOptions`. Each image carries the
settings that made it, so it can be made again: image k of a request uses seed
``seed + k``, and a request with that seed and ``num_images=1`` reproduces it alone.
"""

import functools
import io
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .errors import GenerationError, InvalidRequest, ModelLoadError, one_line
from .metrics import Observe
from .options import check_choice, check_range
from .random_pipelines import TINY_VAE_SUBFOLDER, has_random_weights, save_random_pipeline
from .cache import tiny_diffusion_dir
from .hardware import cpu_has_native_bfloat16

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sd-turbo"
TINY = "tiny"
MAX_SEED = 2**31 - 1  # seeds travel as protobuf int32
MAX_IMAGES = 8
DTYPES = ("auto", "float16", "bfloat16", "float32")
VAES = ("auto", "full", "tiny")
# diffusers' AutoencoderTiny weights for each latent space (SD 1.x/2.x/Turbo; SDXL)
TINY_VAES = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
# zlib level 1: measured 1.1-1.8x faster than PIL's default (6) for 0-14 % larger files (README)
PNG_COMPRESS_LEVEL = 1

# scheduler names users pass → diffusers class names
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}

# model family → (steps, guidance_scale); a request overrides either
PRESETS = {
    "sd": (25, 7.5),
    "sdxl": (30, 5.0),
    "turbo": (1, 0.0),
    "tiny": (4, 7.5),
}


@dataclass(frozen=True)
class GenerateOptions:
    """Per-request options; None means the model family's preset or native size."""

    num_images: int = 1
    seed: Optional[int] = None
    negative_prompt: Optional[str] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    scheduler: Optional[str] = None

    def __post_init__(self):
        check_range("num_images", self.num_images, 1, MAX_IMAGES)
        if self.seed is not None:
            check_range("seed", self.seed, 0, MAX_SEED)
        if self.steps is not None:
            check_range("steps", self.steps, 1, 150)
        if self.guidance_scale is not None:
            check_range("guidance_scale", self.guidance_scale, 0.0, 30.0)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 8):
                raise InvalidRequest(f"invalid {name}={value!r}: must be a positive multiple of 8")
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if self.negative_prompt is not None and len(self.negative_prompt) > 2000:
            raise InvalidRequest(f"invalid negative_prompt: {len(self.negative_prompt)} characters, allowed up to 2000")


@dataclass(frozen=True)
class Settings:
    """GenerateOptions resolved against a model: every value concrete."""

    seeds: tuple[int, ...]
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    negative_prompt: Optional[str]


@dataclass(frozen=True)
class Image:
    """One generated PNG and the settings that made it."""

    png: bytes
    prompt: str
    negative_prompt: Optional[str]
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    model: str
    device: str
    dtype: str
    vae: str
    seconds: float
    random_weights: bool
    nsfw: bool = False
    prompt_truncated: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


class DiffusionEngine:
    """A loaded pipeline and what is known of its model. One generation at a time:
    diffusers schedulers hold state."""

    def __init__(self, pipe, model: str, device: str, dtype: str, random_weights: bool, batch_images: bool = False,
                 vae: str = "full"):
        self.pipe = pipe
        self.batch_images = batch_images
        self.model = model
        self.device = device
        self.dtype = dtype
        self.vae = vae
        self.random_weights = random_weights
        self.lock = threading.Lock()
        self.family = _family(model, pipe, random_weights)
        self.native_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.default_scheduler = _scheduler_name(type(pipe.scheduler).__name__)
        self._schedulers = {self.default_scheduler: pipe.scheduler}
        self.stages = _StageClock()
        self.stages.wrap(pipe, "encode_prompt", "text_encode")
        self.stages.wrap(pipe.vae, "decode", "vae_decode")

    @property
    def size_range(self) -> tuple[int, int]:
        """Allowed width and height: a quarter to twice the native size (tiny: up to 512)."""
        return max(8, self.native_size // 4), 512 if self.family == "tiny" else self.native_size * 2

    def resolve(self, options: GenerateOptions) -> Settings:
        """Check options against this model and fill in presets (no model work)."""
        steps, guidance = PRESETS[self.family]
        low, high = self.size_range
        width, height = options.width or self.native_size, options.height or self.native_size
        for name, value in (("width", width), ("height", height)):
            check_range(name, value, low, high)
        seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
        return Settings(
            seeds=tuple((seed + k) % (MAX_SEED + 1) for k in range(options.num_images)),
            steps=options.steps or steps,
            guidance_scale=options.guidance_scale if options.guidance_scale is not None else guidance,
            width=width, height=height,
            scheduler=options.scheduler or self.default_scheduler,
            negative_prompt=options.negative_prompt,
        )

    def scheduler(self, name: str):
        """The named scheduler, made from the model's own scheduler config once."""
        if name not in self._schedulers:
            import diffusers

            self._schedulers[name] = getattr(diffusers, SCHEDULERS[name]).from_config(self.pipe.scheduler.config)
        return self._schedulers[name]


class _StageClock:
    """When each wrapped stage of the last pipeline call started and ended (time.time_ns())."""

    def __init__(self):
        self.times: dict[str, tuple[int, int]] = {}

    def wrap(self, owner, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                self.times[stage] = (started, time.time_ns())

        setattr(owner, attribute, timed)


def _scheduler_name(class_name: str) -> str:
    return next((name for name, cls in SCHEDULERS.items() if cls == class_name), class_name)


def _family(model: str, pipe, random_weights: bool) -> str:
    if random_weights and model == TINY:
        return "tiny"
    if "turbo" in model.lower():
        return "turbo"
    return "sdxl" if "XL" in type(pipe).__name__ else "sd"


def _resolve_device(device: str, dtype: str, vae: str) -> tuple[str, str, str]:
    """`auto` settings made concrete: CUDA + float16 + the full VAE with a GPU; on a CPU,
    bfloat16 where it computes it natively (else float32) and the tiny VAE."""
    import torch

    check_choice("dtype", dtype, DTYPES)
    check_choice("vae", vae, VAES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device.startswith("cuda")
    if dtype == "auto":
        dtype = "float16" if gpu else ("bfloat16" if cpu_has_native_bfloat16() else "float32")
    if vae == "auto":
        vae = "full" if gpu else "tiny"
    return device, dtype, vae


def fetch_model(model: str, cache_dir_: Optional[str] = None, local_files_only: bool = False) -> None:
    """Download a diffusers model if it is not cached (diffusers' own download code)."""
    if model == TINY or os.path.isdir(model):
        return
    from diffusers import DiffusionPipeline

    try:
        DiffusionPipeline.download(model, cache_dir=cache_dir_, local_files_only=local_files_only)
    except Exception as e:
        raise ModelLoadError(_load_failure(model, e)) from e


def _load_failure(model: str, error: Exception) -> str:
    return (
        f"diffusion model {model!r} could not be loaded ({one_line(error)}); it is neither cached nor downloadable here: "
        f"connect to the internet once (HF_TOKEN for gated models), pass a local diffusers directory, "
        f"or use model='{TINY}' (random weights, no network)"
    )


def load_engine(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                cache_dir_: Optional[str] = None, local_files_only: bool = False,
                safety_checker: bool = False, cpu_threads: int = 0, batch_images: bool = False,
                vae: str = "auto", compile: bool = False) -> DiffusionEngine:
    """Load a text-to-image pipeline: a diffusers model id, a local directory, or "tiny".

    dtype: "auto" (float16 on CUDA; bfloat16 on a CPU that has it natively, else float32),
    or one by name; the weights are loaded in it.
    vae: "full" (the model's own), "tiny" (AutoencoderTiny: several times faster to
    decode), or "auto" (tiny on a CPU, full on a GPU).
    compile: torch.compile the UNet and the VAE decoder, in channels-last memory layout
    (the first image of each size takes minutes longer).
    batch_images: draw a request's images in one batch (faster on a GPU) instead of one
    by one; batched numerics differ slightly, so image k is then not byte-identical to
    the same seed drawn alone."""
    import torch
    from diffusers import AutoPipelineForText2Image

    device, dtype, vae = _resolve_device(device, dtype, vae)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    source = str(save_random_pipeline(tiny_diffusion_dir(), "tiny")) if model == TINY else model
    extra = {} if safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    started = time.perf_counter()
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(
            source, dtype=getattr(torch, dtype), cache_dir=cache_dir_,
            local_files_only=local_files_only or model == TINY, **extra,
        )
    except Exception as e:  # hub, file and config errors alike
        raise ModelLoadError(_load_failure(model, e)) from e
    random_weights = has_random_weights(source) if os.path.isdir(source) else False
    if vae == "tiny":
        pipe.vae = _tiny_vae(pipe, source, random_weights, getattr(torch, dtype), cache_dir_, local_files_only)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if compile:
        _compile(pipe)
    engine = DiffusionEngine(pipe, model, device, dtype, random_weights, batch_images, vae)
    why = " (native on this CPU)" if dtype == "bfloat16" and device == "cpu" else ""
    log.info("diffusion model %s (%s) loaded on %s, %s%s, %s VAE%s in %.1f s", model, type(pipe).__name__, device,
             dtype, why, vae, ", compiled" if compile else "", time.perf_counter() - started)
    if random_weights:
        log.warning("diffusion model %s has RANDOM WEIGHTS (a test model): its images are noise", model)
    return engine


def _tiny_vae(pipe, source: str, random_weights: bool, dtype, cache_dir_: Optional[str], local_files_only: bool):
    """The AutoencoderTiny for the pipeline's latent space: taesd or taesdxl (downloaded by
    diffusers), or the random one saved beside a random-weights pipeline."""
    from diffusers import AutoencoderTiny

    repo = TINY_VAES["sdxl" if "XL" in type(pipe).__name__ else "sd"]
    try:
        if random_weights:
            return AutoencoderTiny.from_pretrained(source, subfolder=TINY_VAE_SUBFOLDER, dtype=dtype)
        return AutoencoderTiny.from_pretrained(repo, dtype=dtype, cache_dir=cache_dir_,
                                               local_files_only=local_files_only)
    except Exception as e:  # hub, file and config errors alike
        raise ModelLoadError(
            f"tiny VAE {repo!r} could not be loaded ({one_line(e)}); connect to the internet once, "
            "or use vae='full'"
        ) from e


def _compile(pipe) -> None:
    """torch.compile the UNet and the VAE decoder, channels-last; on a CPU with Inductor's
    weight freezing (constant weights folded and prepacked for oneDNN: measured 2.43 → 2.17 s
    per SD-Turbo image)."""
    import torch
    import torch._inductor.config

    if pipe.device.type == "cpu":
        torch._inductor.config.freezing = True
    for module in (pipe.unet, pipe.vae):
        module.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet)
    pipe.vae.decode = torch.compile(pipe.vae.decode)


class _PastDeadline(Exception):
    """Raised between denoising steps once a request has run out of time."""


def generate(engine: DiffusionEngine, prompt: str, options: GenerateOptions = GenerateOptions(),
             deadline: Optional[float] = None, observe: Optional[Observe] = None) -> list[Image]:
    """Draw `options.num_images` images of `prompt`, stopping between two denoising steps
    with GenerationError once `time.monotonic()` passes `deadline`. `observe` is told when
    each stage of each image ran: `text_encode`, `denoise`, `vae_decode`, `png_encode`."""
    import torch

    settings = engine.resolve(options)
    warnings = []
    tokenizer = engine.pipe.tokenizer
    n_tokens = len(tokenizer(prompt).input_ids)
    truncated = n_tokens > tokenizer.model_max_length
    if truncated:
        warnings.append(f"prompt is {n_tokens} tokens; the text encoder read only the first {tokenizer.model_max_length}")
    n = len(settings.seeds)
    # one seed per pipeline call unless batching: batched numerics differ slightly, and
    # image k must come out byte-identical when its seed is asked for alone
    batches = [settings.seeds] if engine.batch_images else [(seed,) for seed in settings.seeds]
    images, flagged = [], []
    last_step = [0]

    def after_step(pipe, step, timestep, callback_kwargs):
        last_step[0] = time.time_ns()
        if deadline is not None and time.monotonic() > deadline:
            raise _PastDeadline(f"step {step + 1} of {settings.steps} of image {len(images) + 1} of {n}")
        return callback_kwargs

    with engine.lock:
        engine.pipe.scheduler = engine.scheduler(settings.scheduler)
        started = time.perf_counter()
        try:
            for seeds in batches:
                engine.stages.times.clear()
                output = engine.pipe(
                    prompt=[prompt] * len(seeds),
                    negative_prompt=[settings.negative_prompt] * len(seeds) if settings.negative_prompt else None,
                    num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                    width=settings.width, height=settings.height,
                    generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                    output_type="pil", callback_on_step_end=after_step,
                )
                if observe:
                    text, vae = engine.stages.times["text_encode"], engine.stages.times["vae_decode"]
                    observe("text_encode", *text)
                    observe("denoise", text[1], last_step[0])
                    observe("vae_decode", *vae)
                images += output.images
                flagged += output.nsfw_content_detected or [False] * len(seeds)
        except _PastDeadline as e:
            raise GenerationError(
                f"request timed out at {e}: it ran past the executor's request_timeout_seconds; "
                "ask for fewer images, fewer steps or a smaller size"
            ) from e
        except torch.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            raise GenerationError(
                f"CUDA out of memory generating {n} image(s) of {settings.width}x{settings.height}; "
                "ask for fewer images or a smaller size"
            ) from e
        seconds = (time.perf_counter() - started) / n
    pngs = []
    for image in images:
        started = time.time_ns()
        pngs.append(_png(image))
        if observe:
            observe("png_encode", started, time.time_ns())
    return [
        Image(
            png=png, prompt=prompt, negative_prompt=settings.negative_prompt, seed=seed,
            steps=settings.steps, guidance_scale=settings.guidance_scale, width=settings.width,
            height=settings.height, scheduler=settings.scheduler, model=engine.model, device=engine.device,
            dtype=engine.dtype, vae=engine.vae, seconds=seconds, random_weights=engine.random_weights, nsfw=bool(nsfw),
            prompt_truncated=truncated, warnings=tuple(warnings),
        )
        for png, seed, nsfw in zip(pngs, settings.seeds, flagged)
    ]


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
