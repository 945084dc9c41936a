"""Text → images with Hugging Face diffusers.

:func:`load_engine` loads a text-to-image pipeline once (a :class:`DiffusionConfig`;
diffusers' `AutoPipelineForText2Image`: SD 1.x/2.x, SD-Turbo, SDXS, SDXL, SDXL-Turbo).
:meth:`DiffusionEngine.resolve` checks a request's :class:`GenerateOptions` against the
model and makes every value concrete (:class:`Settings`), once; :func:`generate` draws
them as PNG images, each a document that echoes the settings that made it: image k uses
seed ``seed + k``, and the same seed with ``num_images=1`` reproduces it alone.
"""

import io
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..cache import tiny_diffusion_dir
from ..errors import ConfigurationError, GenerationError, InvalidRequest, ModelLoadError, one_line
from ..hardware import cpu_features, cpu_has_native_bfloat16
from ..limits import MAX_SEED, SIZE_MULTIPLE, SIZE_RANGE, TINY_MAX_SIZE
from ..observability.names import DENOISE, PNG_ENCODE, PREVIEW_DECODE, TEXT_ENCODE, VAE_DECODE
from ..observability.stages import StageClock
from ..options import check_range
from ..schema import IMAGE_COMPLETED, IMAGE_PARTIAL, STEP, GeneratedImage, to_blob
from ..serving.scheduler import Turn
from . import provenance
from .options import (
    IMAGE_TO_IMAGE_STRENGTH,
    INPAINT_STRENGTH,
    OFFLINE_MODEL,
    PRESETS,
    SCHEDULERS,
    DiffusionConfig,
    GenerateOptions,
)
from .pictures import Source
from .random_pipelines import TINY_VAE_SUBFOLDER, has_random_weights, save_random_pipeline

log = logging.getLogger(__name__)

# diffusers' AutoencoderTiny weights for each latent space (SD 1.x/2.x/Turbo; SDXL)
TINY_VAES = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
# names of the models distilled to draw in one step without guidance (SD-Turbo, SDXL-Turbo, SDXS)
ONE_STEP_MODELS = ("turbo", "sdxs")
# zlib level 1: measured 1.1-1.8x faster than PIL's default (6) for 0-14 % larger files (README)
PNG_COMPRESS_LEVEL = 1
PREVIEW_MIN_LATENTS = 4  # a preview is decoded at half size unless that leaves fewer latents a side
PNDM_PRK_STEPS = 4  # diffusers' PNDM starts with 4 Runge-Kutta steps, unless the model's config skips them


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
    strength: Optional[float] = None  # an edit's (None: a new image)
    warnings: tuple[str, ...] = ()  # what was changed from the request, and why

    @property
    def denoise_steps(self) -> int:
        """The steps that run: an edit starts `strength` of the way, so it runs steps × strength."""
        return int(self.steps * self.strength) if self.strength is not None else self.steps


class DiffusionEngine:
    """A loaded pipeline and what is known of its model. One generation at a time: diffusers
    schedulers hold state (the executor's scheduler gives each request its turn)."""

    def __init__(self, pipe, config: DiffusionConfig, *, device: str, dtype: str, vae: str, backend: str,
                 random_weights: bool, load_encoder: Optional[Callable[[], object]] = None):
        self.pipe = pipe
        self.model = config.model
        self.batch_images = config.batch_images
        self.device, self.dtype, self.vae, self.backend = device, dtype, vae, backend
        self.random_weights = random_weights
        self.family = _family(config.model, pipe, random_weights)
        self.native_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.default_scheduler = _scheduler_name(type(pipe.scheduler).__name__)
        self._schedulers = {self.default_scheduler: pipe.scheduler}
        self._edit_pipelines: dict[bool, object] = {}  # inpainting? → the pipeline sharing pipe's modules
        self.load_encoder = load_encoder  # OpenVINO: loads the torch VAE whose encoder an edit's image goes through
        encoders = [m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if m]
        self.stage_modules = {TEXT_ENCODE: encoders, DENOISE: [pipe.unet], VAE_DECODE: [pipe.vae.decoder]}

    @property
    def size_range(self) -> tuple[int, int]:
        """Allowed width and height: a quarter to twice the native size (tiny: up to 512)."""
        low, high = (int(self.native_size * factor) for factor in SIZE_RANGE)
        return max(8, low), TINY_MAX_SIZE if self.family == "tiny" else high

    def resolve(self, options: GenerateOptions, source: Optional[Source] = None) -> Settings:
        """Check options against this model and fill in presets (no model work). An edit's size is
        by default its image's, scaled down to fit the model's range; its steps are raised where
        steps × strength would run none (a warning says so)."""
        preset_steps, guidance = PRESETS[self.family]
        low, high = self.size_range
        width, height = options.width or self.native_size, options.height or self.native_size
        if source is not None and not (options.width and options.height):
            width, height = fitted(source.size, low, high, options.width, options.height)
        for name, value in (("width", width), ("height", height)):
            check_range(name, value, low, high)
        steps, scheduler = options.steps or preset_steps, options.scheduler or self.default_scheduler
        skips_prk = self._schedulers[self.default_scheduler].config.get("skip_prk_steps", False)
        if scheduler == "pndm" and steps < PNDM_PRK_STEPS and not skips_prk:
            raise InvalidRequest(f"invalid steps={steps}: the pndm scheduler takes {PNDM_PRK_STEPS} or more with "
                                 "this model; ask for more steps, or another scheduler")
        strength, warnings = None, ()
        if source is not None:
            strength = options.strength or (INPAINT_STRENGTH if source.mask is not None else IMAGE_TO_IMAGE_STRENGTH)
            asked = steps
            while int(steps * strength) < 1:
                steps += 1
            if steps != asked:
                warnings = (f"steps raised from {asked} to {steps}: an edit runs steps x strength of them "
                            f"({steps} x {strength:g}), and at least one",)
        seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
        return Settings(
            seeds=tuple((seed + k) % (MAX_SEED + 1) for k in range(options.num_images)),
            steps=steps,
            guidance_scale=options.guidance_scale if options.guidance_scale is not None else guidance,
            width=width, height=height,
            scheduler=scheduler,
            negative_prompt=options.negative_prompt,
            strength=strength, warnings=warnings,
        )

    def pipeline(self, source: Optional[Source]):
        """The pipeline that draws from `source`: the loaded text-to-image one, or diffusers'
        image-to-image or inpainting pipeline made from it once (its modules: no second copy)."""
        if source is None:
            return self.pipe
        inpaint = source.mask is not None
        if inpaint not in self._edit_pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            if self.load_encoder is not None and getattr(self.pipe.vae, "encoding", None) is None:
                self.pipe.vae.encoding = self.load_encoder()
            made = (AutoPipelineForInpainting if inpaint else AutoPipelineForImage2Image).from_pipe(self.pipe)
            made.set_progress_bar_config(disable=True)
            self._edit_pipelines[inpaint] = made
        return self._edit_pipelines[inpaint]

    def scheduler(self, name: str):
        """The named scheduler, made from the model's own scheduler config once."""
        if name not in self._schedulers:
            import diffusers

            self._schedulers[name] = getattr(diffusers, SCHEDULERS[name]).from_config(self.pipe.scheduler.config)
        return self._schedulers[name]


def fitted(size: tuple[int, int], low: int, high: int, width: Optional[int] = None,
           height: Optional[int] = None) -> tuple[int, int]:
    """An edit's size: its image's, scaled to the one side asked (`width` or `height`: the other
    keeps the image's aspect ratio), else down (never up) to fit `high` a side; in multiples of
    SIZE_MULTIPLE, within `low`..`high`."""
    scale = width / size[0] if width else height / size[1] if height else min(1.0, high / max(size))
    fit = [min(high, max(low, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)) for side in size]
    return width or fit[0], height or fit[1]


def _scheduler_name(class_name: str) -> str:
    return next((name for name, cls in SCHEDULERS.items() if cls == class_name), class_name)


def _family(model: str, pipe, random_weights: bool) -> str:
    if random_weights and model == OFFLINE_MODEL:
        return "tiny"
    if any(one_step in model.lower() for one_step in ONE_STEP_MODELS):
        return "turbo"
    return "sdxl" if "XL" in type(pipe).__name__ else "sd"


def resolve_device(config: DiffusionConfig) -> tuple[str, str, str]:
    """`auto` settings made concrete: CUDA + float16 + the full VAE with a GPU; on a CPU,
    bfloat16 where it computes it natively (else float32) and the tiny VAE."""
    import torch

    device, dtype, vae = config.device, config.dtype, config.vae
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device.startswith("cuda")
    if dtype == "auto":
        dtype = "float16" if gpu else ("bfloat16" if cpu_has_native_bfloat16() else "float32")
    if vae == "auto":
        vae = "full" if gpu else "tiny"
    return device, dtype, vae


def fetch_model(config: DiffusionConfig) -> None:
    """Download a diffusers model if it is not cached (diffusers' own download code)."""
    if config.model == OFFLINE_MODEL or os.path.isdir(config.model):
        return
    from diffusers import DiffusionPipeline

    try:
        DiffusionPipeline.download(config.model, cache_dir=config.cache_dir, local_files_only=config.local_files_only)
    except Exception as e:
        raise ModelLoadError(_load_failure(config.model, e)) from e


def _load_failure(model: str, error: Exception) -> str:
    return (
        f"diffusion model {model!r} could not be loaded ({one_line(error)}); it is neither cached nor downloadable here: "
        f"connect to the internet once (HF_TOKEN for gated models), pass a local diffusers directory, "
        f"or use model='{OFFLINE_MODEL}' (random weights, no network)"
    )


def resolve_backend(config: DiffusionConfig, device: str) -> str:
    """`auto` made concrete: what bench/diffusion_speed.py measured fastest on each kind of CPU
    (docs/benchmarks.md): OpenVINO where it is installed (AVX2, and AVX512-BF16 CPUs in bfloat16),
    PyTorch on AMX CPUs (its bfloat16 UNet runs on AMX; OpenVINO is not measured there); PyTorch
    on a GPU and with `compile` (torch.compile)."""
    from . import openvino_backend

    if config.diffusion_backend != "auto":
        return config.diffusion_backend
    if device != "cpu" or config.compile or not openvino_backend.available() or "amx_tile" in cpu_features():
        return "torch"
    return "openvino"


def load_engine(config: DiffusionConfig = DiffusionConfig()) -> DiffusionEngine:
    """Load a text-to-image pipeline: a diffusers model id, a local directory, or "tiny"; the
    weights in the chosen dtype, the chosen VAE, on the chosen backend, compiled if asked."""
    import torch

    device, dtype, vae = resolve_device(config)
    backend = resolve_backend(config, device)
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    tiny = config.model == OFFLINE_MODEL
    source = str(save_random_pipeline(tiny_diffusion_dir(), "tiny")) if tiny else config.model
    random_weights = has_random_weights(source) if os.path.isdir(source) else False
    started = time.perf_counter()
    load_encoder = None
    if backend == "openvino":
        pipe, vae, backend, load_encoder = _openvino_pipeline(source, config, device=device, dtype=dtype, vae=vae)
    else:
        pipe, vae = _torch_pipeline(source, config, device=device, dtype=dtype, vae=vae)
        if config.compile:
            _compile(pipe)
    engine = DiffusionEngine(pipe, config, device=device, dtype=dtype, vae=vae, backend=backend,
                             random_weights=random_weights, load_encoder=load_encoder)
    why = " (native on this CPU)" if dtype == "bfloat16" and device == "cpu" else ""
    log.info("diffusion model %s (%s) loaded on %s, %s%s, %s VAE, %s%s in %.1f s", config.model,
             type(pipe).__name__, device, dtype, why, vae, "OpenVINO" if backend == "openvino" else "PyTorch",
             ", compiled" if config.compile else "", time.perf_counter() - started)
    if random_weights:
        log.warning("diffusion model %s has RANDOM WEIGHTS (a test model): its images are noise", config.model)
    return engine


def _torch_pipeline(source: str, config: DiffusionConfig, *, device: str, dtype: str, vae: str):
    """The diffusers pipeline in PyTorch, weights in `dtype`, with the chosen VAE; and that VAE's name."""
    import torch
    from diffusers import AutoPipelineForText2Image

    extra = {} if config.safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(
            source, dtype=getattr(torch, dtype), cache_dir=config.cache_dir,
            local_files_only=config.local_files_only or config.model == OFFLINE_MODEL, **extra,
        )
    except Exception as e:  # hub, file and config errors alike
        raise ModelLoadError(_load_failure(config.model, e)) from e
    if type(pipe.vae).__name__ == "AutoencoderTiny":
        vae = "tiny"  # the model's own decoder is a tiny one (SDXS): kept whatever `vae` asked
    elif vae == "tiny":
        random_weights = has_random_weights(source) if os.path.isdir(source) else False
        pipe.vae = _tiny_vae(pipe, source, config, random_weights=random_weights, dtype=getattr(torch, dtype))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, vae


def _openvino_pipeline(source: str, config: DiffusionConfig, *, device: str, dtype: str, vae: str):
    """The diffusers pipeline with its text encoder, UNet and VAE decoder run by OpenVINO (converted
    from the torch pipeline once, then from the cache); its VAE's name, the backend, and what
    loads the torch VAE that encodes an edit's image (None in PyTorch). Under `auto`, a pipeline
    OpenVINO does not convert here (SDXL) loads in PyTorch instead."""
    from diffusers import DiffusionPipeline

    from . import openvino_backend

    chosen = config.diffusion_backend == "openvino"
    if chosen and (device != "cpu" or config.compile or not openvino_backend.available()):
        raise ConfigurationError(
            "diffusion_backend='openvino' needs " + ("device='cpu'" if device != "cpu" else
                                                     "compile=false (torch.compile is PyTorch's)" if config.compile
                                                     else "OpenVINO: pip install 'speech2image[openvino]'")
            + ", or diffusion_backend='torch'")
    local = config.local_files_only or config.model == OFFLINE_MODEL
    try:
        model_dir = Path(source if os.path.isdir(source) else DiffusionPipeline.download(
            source, cache_dir=config.cache_dir, local_files_only=local))
        index = DiffusionPipeline.load_config(model_dir)
    except Exception as e:  # hub, file and config errors alike
        raise ModelLoadError(_load_failure(config.model, e)) from e
    if not openvino_backend.supports(index):
        if chosen:
            raise ConfigurationError(f"diffusion_backend='openvino' converts {', '.join(openvino_backend.PIPELINES)} "
                                     f"models; {config.model!r} is a {index.get('_class_name')}: use "
                                     "diffusion_backend='torch'")
        pipe, vae = _torch_pipeline(source, config, device=device, dtype=dtype, vae=vae)
        return pipe, vae, "torch", None
    own_tiny = index.get("vae", [None, None])[1] == "AutoencoderTiny"
    vae = "tiny" if own_tiny else vae
    def calibration(pipe):  # the UNet's inputs at the model family's preset steps and guidance
        steps, guidance = PRESETS[_family(config.model, pipe, has_random_weights(model_dir))]
        return openvino_backend.unet_inputs(pipe, steps, guidance)

    parts = openvino_backend.load_parts(
        config.model, model_dir, int8=config.openvino_int8, precision=dtype, threads=config.cpu_threads,
        vae_part="tiny_vae_decoder" if vae == "tiny" and not own_tiny else "vae_decoder",
        torch_pipeline=lambda: _torch_pipeline(str(model_dir), config, device="cpu", dtype="float32", vae=vae)[0],
        calibration=calibration,
    )
    extra = {} if config.safety_checker else {"safety_checker": None}
    try:  # the tokenizer, scheduler (and safety checker) only: the modules are OpenVINO's
        skeleton = DiffusionPipeline.from_pretrained(model_dir, text_encoder=None, unet=None, vae=None, **extra)
    except Exception as e:  # file and config errors alike
        raise ModelLoadError(_load_failure(config.model, e)) from e
    pipe = type(skeleton)(**{**skeleton.components, **parts}, requires_safety_checker=config.safety_checker)
    pipe.set_progress_bar_config(disable=True)

    def load_encoder():  # the VAE whose decoder OpenVINO runs, in PyTorch: its encoder is used
        import torch
        from diffusers import AutoencoderKL, AutoencoderTiny

        if vae == "tiny" and not own_tiny:
            return _tiny_vae(pipe, str(model_dir), config, random_weights=has_random_weights(model_dir),
                             dtype=torch.float32)
        return (AutoencoderTiny if own_tiny else AutoencoderKL).from_pretrained(model_dir, subfolder="vae")

    return pipe, vae, "openvino", load_encoder


def _tiny_vae(pipe, source: str, config: DiffusionConfig, *, random_weights: bool, dtype):
    """The AutoencoderTiny for the pipeline's latent space: taesd or taesdxl (downloaded by
    diffusers), or the random one saved beside a random-weights pipeline."""
    from diffusers import AutoencoderTiny

    repo = TINY_VAES["sdxl" if "XL" in type(pipe).__name__ else "sd"]
    try:
        if random_weights:
            return AutoencoderTiny.from_pretrained(source, subfolder=TINY_VAE_SUBFOLDER, dtype=dtype)
        return AutoencoderTiny.from_pretrained(repo, dtype=dtype, cache_dir=config.cache_dir,
                                               local_files_only=config.local_files_only)
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
    pipe.vae.decoder = torch.compile(pipe.vae.decoder)


# a streaming call's events (`progress(event, index, step, steps, image)`): each step of each
# image, its previews, and each image as soon as it is done
Progress = Callable[[str, int, int, int, Optional[GeneratedImage]], None]


def preview_steps(steps: int, partial_images: int) -> tuple[int, ...]:
    """The steps after which a preview is decoded: `partial_images` of them, evenly spaced before
    the last step (fewer when there are fewer steps than that)."""
    return tuple(sorted({round(k * steps / (partial_images + 1)) for k in range(1, partial_images + 1)} - {0, steps}))


def generate(engine: DiffusionEngine, prompt: str, settings: Settings, *, turn: Optional[Turn] = None,
             clock: StageClock = StageClock(), drawn: Callable[[int], None] = lambda count: None,
             progress: Optional[Progress] = None, partial_images: int = 0,
             source: Optional[Source] = None, heard: Optional[dict] = None) -> list[GeneratedImage]:
    """Draw the images of `settings` (from :meth:`DiffusionEngine.resolve`) for `prompt`, anew or
    from `source` (an edit: image to image, or inpainting with its mask); between
    two denoising steps `turn` may stop it (DeadlineExceeded, Cancelled). `clock` times the
    request's text_encode (once, however many images) and each image's denoise, vae_decode and
    png_encode; `drawn` is told how many images
    each pipeline call drew, as they come (work done counts even when the rest is stopped).
    `progress`, when given, is told each step, `partial_images` previews of each image (decoded
    from its latents by the pipeline's VAE) and each image as soon as it is done. Each PNG carries
    its settings (and `heard`: the transcript and language of a spoken prompt)."""
    turn = turn or Turn()  # no deadline, never cancelled
    import torch

    warnings = list(settings.warnings)
    tokenizer = engine.pipe.tokenizer
    n_tokens = len(tokenizer(prompt).input_ids)
    truncated = n_tokens > tokenizer.model_max_length
    if truncated:
        warnings.append(f"prompt is {n_tokens} tokens; the text encoder read only the first {tokenizer.model_max_length}")
    n = len(settings.seeds)
    # one seed per pipeline call unless batching: batched numerics differ slightly, and
    # image k must come out byte-identical when its seed is asked for alone
    batches = [settings.seeds] if engine.batch_images else [(seed,) for seed in settings.seeds]
    steps = settings.denoise_steps
    previews = preview_steps(steps, partial_images) if progress else ()
    pipe = engine.pipeline(source)
    edit = {"width": settings.width, "height": settings.height}
    if source is not None:  # image to image draws at its image's size: the image (and mask) resized to the settings'
        size = (settings.width, settings.height)
        edit = {"image": source.image.resize(size), "strength": settings.strength}
        if source.mask is not None:
            edit.update(mask_image=source.mask.resize(size), width=settings.width, height=settings.height)
    images: list[GeneratedImage] = []

    def image(picture, seed: int, seconds: float, nsfw: bool = False, partial: bool = False) -> GeneratedImage:
        made = GeneratedImage(
            prompt=prompt, negative_prompt=settings.negative_prompt, seed=seed,
            steps=settings.steps, guidance_scale=settings.guidance_scale, width=settings.width,
            height=settings.height, scheduler=settings.scheduler, model=engine.model, device=engine.device,
            dtype=engine.dtype, vae=engine.vae, strength=settings.strength, seconds=seconds,
            random_weights=engine.random_weights, nsfw=nsfw, prompt_truncated=truncated,
            warnings=[] if partial else list(warnings), partial=partial)
        with clock.stage(PNG_ENCODE):
            made.png = to_blob(encode_png(picture, provenance.chunk(made, heard)))
        return made

    pipe.scheduler = engine.scheduler(settings.scheduler)
    try:
        turn.check("the prompt, before its encoding")
        encoding_started = time.perf_counter()
        with clock.watch(engine.stage_modules):
            embeddings = _encode_prompt(pipe, engine.device, prompt, settings)
        for seeds in batches:
            first = len(images)
            turn.check(f"image {first + 1} of {n}, before its first step")
            # the first image's seconds count the prompt's encoding, as when it is drawn alone
            started = encoding_started if first == 0 else time.perf_counter()

            def after_step(pipe, step, timestep, callback_kwargs, seeds=seeds, first=first, started=started):
                turn.check(f"step {step + 1} of {steps} of image {first + 1} of {n}")
                if progress:
                    for k in range(len(seeds)):
                        progress(STEP, first + k, step + 1, steps, None)
                    if step + 1 in previews:
                        with clock.aside(), clock.stage(PREVIEW_DECODE):
                            pictures = _decode(pipe, callback_kwargs["latents"])
                        for k, (picture, seed) in enumerate(zip(pictures, seeds, strict=True)):
                            progress(IMAGE_PARTIAL, first + k, step + 1, steps,
                                     image(picture, seed, time.perf_counter() - started, partial=True))
                return callback_kwargs

            with clock.watch(engine.stage_modules):
                output = pipe(
                    **embeddings, num_images_per_prompt=len(seeds), num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance_scale,
                    generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                    output_type="pil", callback_on_step_end=after_step, **edit,
                )
            drawn(len(output.images))
            seconds = (time.perf_counter() - started) / len(seeds)
            flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(seeds)  # SDXL has no checker
            pictures = output.images
            if "mask_image" in edit:  # OpenAI's edits keep the image outside the mask as it was, pixel for pixel
                pictures = [pipe.image_processor.apply_overlay(edit["mask_image"], edit["image"], picture).convert("RGB")
                            for picture in pictures]
            for picture, seed, nsfw in zip(pictures, seeds, flagged, strict=True):
                images.append(image(picture, seed, seconds, bool(nsfw)))
                if progress:
                    progress(IMAGE_COMPLETED, len(images) - 1, steps, steps, images[-1])
    except torch.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        raise GenerationError(
            f"CUDA out of memory generating {n} image(s) of {settings.width}x{settings.height}; "
            "ask for fewer images or a smaller size"
        ) from e
    return images


def _encode_prompt(pipe, device: str, prompt: str, settings: Settings) -> dict:
    """The pipeline's own encoding of the prompt (and of the negative prompt where guidance needs
    it), by the names its call takes them, for one image (its `num_images_per_prompt` repeats them):
    once per request, not once per image. SD gives two tensors, SDXL four (with the pooled ones).
    Without autograd, as the pipeline's call runs."""
    import torch

    # diffusers' own condition for classifier-free guidance (a UNet conditioned on the guidance
    # scale, as LCM's, needs no negative prompt)
    guided = settings.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    with torch.no_grad():
        encoded = pipe.encode_prompt(prompt=prompt, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guided,
                                     negative_prompt=settings.negative_prompt or None)
    return dict(zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds"), encoded, strict=False))


def _decode(pipe, latents) -> list:
    """Latents in the middle of denoising as PIL images at half the image's size, decoded as the
    pipeline decodes its last: a quarter of the decoding, encoding and sending of a full one."""
    import torch

    with torch.no_grad():
        halved = torch.nn.functional.avg_pool2d(latents, 2) if min(latents.shape[-2:]) >= 2 * PREVIEW_MIN_LATENTS else \
            latents
        decoded = pipe.vae.decode(halved.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil")


def encode_png(picture, settings: Optional[str] = None) -> bytes:
    """A PIL image as PNG bytes, at the project's compression level, with its settings chunk
    (`speech2image.imaging.provenance`) when given."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if settings is not None:
        info = PngInfo()
        info.add_text(provenance.KEY, settings)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=info)
    return buffer.getvalue()
