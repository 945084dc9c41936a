"""Text → images: what an operator and a request may choose. Imports no model library, so the
client and the page validate with the executor's own rules.

Three layers, each default in one place: the dataclass fields here ← the executor's
arguments (config.yml `with:`, flow.yml `uses_with`) ← a request's `parameters`.
"""

from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidRequest
from ..limits import (GUIDANCE_SCALE, MAX_IMAGES, MAX_NEGATIVE_PROMPT_CHARS, MAX_SEED, SIZE_MULTIPLE, STEPS,
                      ReplicaLimits, RequestLimits)
from ..options import check_choice, check_range, option

OFFLINE_MODEL = "tiny"  # random weights, built on first use: no network (app.py --offline); its images are noise
DTYPES = ("auto", "float16", "bfloat16", "float32")
VAES = ("auto", "full", "tiny")
DIFFUSION_BACKENDS = ("auto", "torch", "openvino")
OPENVINO_INT8 = ("none", "weights", "full")
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
# model family → (steps, guidance_scale) when a request names neither
PRESETS = {
    "sd": (25, 7.5),
    "sdxl": (30, 5.0),
    "turbo": (1, 0.0),
    "tiny": (4, 7.5),
}


@dataclass(frozen=True)
class DiffusionConfig:
    """The executor's pipeline, loaded once.

    model: a diffusers model id (downloaded once; HF_TOKEN from the environment for gated
        ones), a local diffusers directory, or "tiny" (random weights, no network).
    device, dtype, vae: "auto" is CUDA, float16 and the model's own VAE with a GPU; else the
        CPU, bfloat16 where the CPU computes it natively (else float32) and the tiny VAE.
    compile: torch.compile the UNet and the VAE decoder (the first image of each size takes
        minutes longer).
    batch_images: draw a request's images in one batch (faster on a GPU); batched numerics
        differ slightly, so image k is then not byte-identical to its seed drawn alone.
    diffusion_backend: what runs the text encoder, UNet and VAE decoder: "torch" (PyTorch),
        "openvino" (the CPU only; the `openvino` extra; SD 1.x/2.x, SD-Turbo and SDXS models,
        converted once into the cache directory) or "auto": OpenVINO on a CPU where it is
        installed, PyTorch on a GPU, on CPUs with AMX and with `compile`.
    openvino_int8: OpenVINO only, NNCF: "weights" compresses the text encoder's and the UNet's
        weights to int8 (activations stay in dtype); "full" quantizes the UNet, weights and
        activations, calibrated on its own inputs for a few prompts (the most speed and the
        most difference: docs/benchmarks.md); "none" keeps float weights.
    """

    model: str = "stabilityai/sd-turbo"
    device: str = "auto"
    dtype: str = "auto"
    vae: str = "auto"
    compile: bool = False
    cache_dir: Optional[str] = None
    local_files_only: bool = False
    safety_checker: bool = False
    cpu_threads: int = 0
    batch_images: bool = False
    diffusion_backend: str = "auto"
    openvino_int8: str = "none"

    def __post_init__(self):
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("vae", self.vae, VAES)
        check_range("cpu_threads", self.cpu_threads, 0, 1024)
        check_choice("diffusion_backend", self.diffusion_backend, DIFFUSION_BACKENDS)
        check_choice("openvino_int8", self.openvino_int8, OPENVINO_INT8)


@dataclass(frozen=True)
class GenerateOptions:
    """Per-request options (a request's `parameters` override the executor's defaults); None means
    the model family's preset or native size."""

    num_images: int = option(1, f"images per document, 1-{MAX_IMAGES}; image k uses seed + k")
    seed: Optional[int] = option(None, f"0-{MAX_SEED}; unset: random, and recorded on each image")
    negative_prompt: Optional[str] = option(None, f"what not to draw, up to {MAX_NEGATIVE_PROMPT_CHARS} characters")
    steps: Optional[int] = option(None, f"denoising steps, {STEPS[0]}-{STEPS[1]}; unset: the model family's preset")
    guidance_scale: Optional[float] = option(None, f"{GUIDANCE_SCALE[0]:g}-{GUIDANCE_SCALE[1]:g}; unset: the model "
                                                   "family's preset")
    width: Optional[int] = option(None, f"a multiple of {SIZE_MULTIPLE}, a quarter to twice the model's native "
                                        "size; unset: native")
    height: Optional[int] = option(None, f"a multiple of {SIZE_MULTIPLE}, a quarter to twice the model's native "
                                         "size; unset: native")
    scheduler: Optional[str] = option(None, "one of " + ", ".join(SCHEDULERS) + "; unset: the model's own")

    def __post_init__(self):
        check_range("num_images", self.num_images, 1, MAX_IMAGES)
        if self.seed is not None:
            check_range("seed", self.seed, 0, MAX_SEED)
        if self.steps is not None:
            check_range("steps", self.steps, *STEPS)
        if self.guidance_scale is not None:
            check_range("guidance_scale", self.guidance_scale, *GUIDANCE_SCALE)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % SIZE_MULTIPLE):
                raise InvalidRequest(f"invalid {name}={value!r}: must be a positive multiple of {SIZE_MULTIPLE}")
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if self.negative_prompt is not None and len(self.negative_prompt) > MAX_NEGATIVE_PROMPT_CHARS:
            raise InvalidRequest(f"invalid negative_prompt: {len(self.negative_prompt)} characters, "
                                 f"allowed up to {MAX_NEGATIVE_PROMPT_CHARS}")


# what the diffusion executor takes: the fields of these, each default in one place
ARGUMENTS = (DiffusionConfig, RequestLimits, ReplicaLimits, GenerateOptions)
