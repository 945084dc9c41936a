"""Text → images: what an operator and a request may choose. Imports no model library, so the
client and the page validate with the executor's own rules.

Three layers, each default in one place: the dataclass fields here ← the executor's
arguments (config.yml `with:`, flow.yml `uses_with`) ← a request's `parameters`.
"""

from dataclasses import dataclass
from typing import Optional

from ..limits import (
    EDIT_STRENGTH,
    GUIDANCE_SCALE,
    MAX_IMAGES,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PARTIAL_IMAGES,
    MAX_SEED,
    SIZE_MULTIPLE,
    STEPS,
    ReplicaLimits,
    RequestLimits,
)
from ..options import check, option

OFFLINE_MODEL = "tiny"  # random weights, built on first use: no network (app.py --offline); its images are noise
DTYPES = ("auto", "float16", "bfloat16", "float32")
VAES = ("auto", "full", "tiny")
DIFFUSION_BACKENDS = ("auto", "torch", "openvino")
OPENVINO_INT8 = ("none", "weights", "full")
# scheduler names users pass → diffusers class names
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
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
IMAGE_TO_IMAGE_STRENGTH = 0.6  # an edit keeps the picture's layout and changes what the prompt says
INPAINT_STRENGTH = 1.0  # a mask's area is drawn anew


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
    dtype: str = option("auto", "the weights' and computation's type", choices=DTYPES)
    vae: str = option("auto", "the image decoder: the model's own (full) or taesd (tiny)", choices=VAES)
    compile: bool = False
    cache_dir: Optional[str] = None
    local_files_only: bool = False
    safety_checker: bool = False
    cpu_threads: int = option(0, "threads on the CPU; 0: torch's choice", ge=0, le=1024)
    batch_images: bool = False
    diffusion_backend: str = option("auto", "what runs the text encoder, UNet and VAE decoder: torch, openvino, or "
                                    "auto (the fastest measured on this CPU)", choices=DIFFUSION_BACKENDS)
    openvino_int8: str = option("none", "OpenVINO's int8 (NNCF): none, weights (the text encoder's and UNet's "
                                "weights) or full (the UNet's weights and activations)", choices=OPENVINO_INT8)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class GenerateOptions:
    """Per-request options (a request's `parameters` override the executor's defaults); None means
    the model family's preset or native size."""

    num_images: int = option(1, f"images per document, 1-{MAX_IMAGES}; image k uses seed + k", ge=1, le=MAX_IMAGES)
    seed: Optional[int] = option(None, f"0-{MAX_SEED}; unset: random, and recorded on each image", ge=0, le=MAX_SEED)
    negative_prompt: Optional[str] = option(None, f"what not to draw, up to {MAX_NEGATIVE_PROMPT_CHARS} characters",
                                            max_length=MAX_NEGATIVE_PROMPT_CHARS)
    steps: Optional[int] = option(None, f"denoising steps, {STEPS[0]}-{STEPS[1]}; unset: the model family's preset",
                                  ge=STEPS[0], le=STEPS[1])
    guidance_scale: Optional[float] = option(None, f"{GUIDANCE_SCALE[0]:g}-{GUIDANCE_SCALE[1]:g}; unset: the model "
                                                   "family's preset", ge=GUIDANCE_SCALE[0], le=GUIDANCE_SCALE[1])
    width: Optional[int] = option(None, f"a multiple of {SIZE_MULTIPLE}, a quarter to twice the model's native "
                                        "size; unset: native", multiple_of=SIZE_MULTIPLE)
    height: Optional[int] = option(None, f"a multiple of {SIZE_MULTIPLE}, a quarter to twice the model's native "
                                         "size; unset: native", multiple_of=SIZE_MULTIPLE)
    scheduler: Optional[str] = option(None, "one of " + ", ".join(SCHEDULERS) + "; unset: the model's own",
                                      choices=tuple(SCHEDULERS))
    strength: Optional[float] = option(None, f"edits only: how far from the image, {EDIT_STRENGTH[0]:g}-1; unset: "
                                             f"{IMAGE_TO_IMAGE_STRENGTH:g}, or {INPAINT_STRENGTH:g} in a mask's area; "
                                             "an edit runs steps x strength steps (at least one)",
                                       ge=EDIT_STRENGTH[0], le=EDIT_STRENGTH[1])
    partial_images: int = option(0, f"previews of each image a streaming call sends, 0-{MAX_PARTIAL_IMAGES}, decoded "
                                    "at half size at evenly spaced steps", ge=0, le=MAX_PARTIAL_IMAGES)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class DiffusionArguments:
    """What the diffusion executor takes (config.yml `with:`, flow.yml `uses_with`): the fields of
    these options dataclasses, each default in one place (built by `speech2image.options.configure`)."""

    model: DiffusionConfig
    request: RequestLimits
    replica: ReplicaLimits
    defaults: GenerateOptions  # of every request option, which a request's parameters override
