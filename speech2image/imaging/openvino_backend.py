"""OpenVINO on the CPU: the pipeline's own torch modules (text encoder, UNet, VAE decoder) converted
with `openvino.convert_model`, saved once under the cache directory, compiled for each request's
static shape; diffusers' pipeline keeps the rest (tokenizer, scheduler, the denoising loop and
its callbacks, the image processor). optimum-intel would do the same but cannot be installed
beside the project's transformers.

On disk, `<cache>/openvino/<model>-<fingerprint>/<int8 mode>/`: each part as OpenVINO IR (`.xml`,
`.bin`, its module's config in `.json`), converted the first time a replica needs it (the
fingerprint covers the model directory's files, their sizes and times, and OpenVINO's version);
and `compiled/`, OpenVINO's own cache of compiled models, per input shape and precision. A
replica's second start converts nothing and imports what it compiled before.

`openvino` is an extra (`pip install speech2image[openvino]`): without it nothing here is imported.
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_dir
from ..quiet import no_openvino_telemetry

log = logging.getLogger(__name__)

# the project's dtype → OpenVINO's inference precision on the CPU
PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# the parts whose weights openvino_int8="weights" compresses (NNCF: matmuls and convolutions); "full"
# quantizes the UNet alone, weights and activations; the rest keeps float weights (float16 on disk,
# computed in the precision)
INT8_PARTS = ("text_encoder", "unet")
# what calibrates openvino_int8="full": the UNet's inputs while the torch pipeline draws these
CALIBRATION_PROMPTS = (
    "a photograph of an astronaut riding a horse", "a red apple on a wooden table",
    "an oil painting of a lighthouse in a storm", "a watercolor portrait of an old fisherman",
    "a city street at night in the rain, neon signs", "a bowl of ramen, studio lighting",
    "a mountain lake at sunrise, mist over the water", "a cartoon cat wearing a wizard hat",
)
CALIBRATION_SAMPLES = 32  # at most, spread over the prompts and steps
# the diffusers pipelines whose modules this converts: SD 1.x/2.x, SD-Turbo, SDXS
PIPELINES = ("StableDiffusionPipeline",)
FORMAT = 1  # of the files written here: a change makes every replica convert again


def available() -> bool:
    """Whether OpenVINO is installed (the `openvino` extra)."""
    return importlib.util.find_spec("openvino") is not None


def supports(model_index: dict) -> bool:
    """Whether a diffusers pipeline (its model_index.json) is one whose modules this converts."""
    return model_index.get("_class_name") in PIPELINES


class CompiledModel(torch.nn.Module):
    """A converted model, compiled for the static shape of its latest inputs (a request of another
    size compiles again: once per shape, then from OpenVINO's cache). A torch module, so the
    pipeline's stage clock times it through forward hooks as it times torch's."""

    def __init__(self, core, path: Path, config: dict):
        super().__init__()
        self._core, self._path, self._config = core, path, config
        self._shapes: list[tuple[int, ...]] = []
        self.compiled = self._request = None  # for the latest shape

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [np.ascontiguousarray(x.detach().cpu().float().numpy() if x.is_floating_point() else x.cpu().numpy())
                  for x in inputs]
        shapes = [array.shape for array in arrays]
        if shapes != self._shapes:
            self.compiled = self._compile(shapes, self._config)
            self._request = self.compiled.create_infer_request()
            self._shapes = shapes
        self._request.infer(arrays)
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())

    def seconds_by_kernel(self) -> dict[str, float]:
        """Where a run at the latest inputs' shapes spends its time (its values do not change it):
        seconds per OpenVINO kernel (e.g. brgconv_avx2_f32), compiled again with OpenVINO's per-node
        counters (for benchmarks)."""
        request = self._compile(self._shapes, {**self._config, "PERF_COUNT": True}).create_infer_request()
        inputs = [np.zeros(shape, port.get_element_type().to_dtype()) for shape, port in zip(
            self._shapes, self.compiled.inputs, strict=True)]
        request.infer(inputs)  # the first run also allocates
        request.infer(inputs)
        seconds: dict[str, float] = {}
        for node in request.get_profiling_info():
            seconds[node.exec_type] = seconds.get(node.exec_type, 0.0) + node.real_time.total_seconds()
        return seconds

    def _compile(self, shapes: list[tuple[int, ...]], config: dict):
        model = self._core.read_model(self._path)  # not kept: its mapped weights are cold once compiled
        model.reshape({index: list(shape) for index, shape in enumerate(shapes)})
        return self._core.compile_model(model, "CPU", config)


class TextEncoder(torch.nn.Module):
    """The CLIP text encoder as the pipeline calls it: input ids → (last hidden state,)."""

    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, encoder: CompiledModel, config):
        super().__init__()
        self.encoder, self.config = encoder, config

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None):
        if attention_mask is not None or output_hidden_states:
            raise NotImplementedError("the OpenVINO text encoder returns the last hidden state only (no clip_skip)")
        return (self.encoder(input_ids),)


class UNet(torch.nn.Module):
    """The UNet as the pipeline calls it: (latents, timestep, text embeddings) → noise prediction."""

    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, denoiser: CompiledModel, config):
        super().__init__()
        self.denoiser, self.config = denoiser, config

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None, cross_attention_kwargs=None,
                added_cond_kwargs=None, return_dict=True):
        if timestep_cond is not None or cross_attention_kwargs or added_cond_kwargs:
            raise NotImplementedError("the OpenVINO UNet takes latents, timestep and text embeddings only")
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        noise = self.denoiser(sample, timestep, encoder_hidden_states)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)


class VaeDecoder(torch.nn.Module):
    """A VAE as the pipeline calls it: decode(latents) → images (the full VAE's or the tiny one's)."""

    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, decoder: CompiledModel, config):
        super().__init__()
        self.decoder, self.config = decoder, config
        self.encoding = None  # a torch VAE whose encoder an edit's image goes through (set on the first edit)

    def decode(self, latents, return_dict=True, generator=None):
        from diffusers.models.autoencoders.vae import DecoderOutput

        images = self.decoder(latents)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def encode(self, images, return_dict=True):
        return self.encoding.encode(images, return_dict=return_dict)


class _LastHiddenState(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


class _NoisePrediction(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class _Decode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


def _example_inputs(pipe) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """Each part of a torch pipeline, wrapped to take and give plain tensors, with example inputs."""
    unet = pipe.unet.config
    latents = torch.randn(1, unet.in_channels, unet.sample_size, unet.sample_size)
    ids = torch.zeros(1, pipe.tokenizer.model_max_length, dtype=torch.int64)
    embeddings = torch.randn(1, pipe.tokenizer.model_max_length, unet.cross_attention_dim)
    return {
        "text_encoder": (_LastHiddenState(pipe.text_encoder), (ids,)),
        "unet": (_NoisePrediction(pipe.unet), (latents, torch.tensor([999.0]), embeddings)),
        "vae_decoder": (_Decode(pipe.vae), (torch.randn(1, pipe.vae.config.latent_channels, 8, 8),)),
    }


def fingerprint(model_dir: Path) -> str:
    """What the converted files depend on: the model directory's files (names, sizes, times), OpenVINO's
    version and this module's format."""
    import openvino

    digest = hashlib.sha256(f"{FORMAT} {openvino.__version__}".encode())
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def converted_dir(model: str, model_dir: Path, int8: str) -> Path:
    """Where a model's converted parts live, per int8 mode ("none": `float`)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model.strip("/"))[-60:].strip("-.") or "model"
    mode = "float" if int8 == "none" else f"int8-{int8}"
    return cache_dir() / "openvino" / f"{name}-{fingerprint(model_dir)}" / mode


def convert(module: torch.nn.Module, example: tuple):
    """One torch module as an OpenVINO model, every dimension left dynamic (made static at
    compilation). Traced here without torch's trace check, which convert_model would run: it
    reruns the module and compares, 25 times the rest of the conversion (50 s vs 2 s, tiny UNet)."""
    import openvino

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # diffusers' shape checks, constant for the traced graph: every dimension stays an input's
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # TorchScript is what OpenVINO's PyTorch frontend reads (convert_model traces modules too)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False, strict=False)
        return openvino.convert_model(traced, example_input=example)


def _save(model, directory: Path, part: str, config: dict, int8: str, calibration: Callable[[], list]) -> None:
    """A part's IR and config, written so that a reader never sees half of them (the .xml last)."""
    import openvino

    if int8 == "full" and part == "unet":
        import nncf

        samples = calibration()
        model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              model_type=nncf.ModelType.TRANSFORMER)
    elif int8 == "weights" and part in INT8_PARTS:
        import nncf

        model = nncf.compress_weights(model)  # int8, per output channel: no data needed
    partial = directory / f"{part}.{os.getpid()}.partial"
    openvino.save_model(model, f"{partial}.xml")  # float weights as float16 on disk (OpenVINO's default)
    Path(f"{partial}.json").write_text(json.dumps(config, default=list))
    for suffix in (".bin", ".json", ".xml"):
        os.replace(f"{partial}{suffix}", directory / f"{part}{suffix}")


def unet_inputs(pipe, steps: int, guidance_scale: float) -> list[list[np.ndarray]]:
    """The UNet's inputs while the torch pipeline draws CALIBRATION_PROMPTS (`steps` each), at most
    CALIBRATION_SAMPLES of them, spread evenly: what int8 activations are calibrated on."""
    seen = []

    def record(module, args, kwargs):
        seen.append([args[0].numpy(), torch.as_tensor(args[1], dtype=torch.float32).reshape(-1).numpy(),
                     kwargs["encoder_hidden_states"].numpy()])

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.inference_mode():
            for seed, prompt in enumerate(CALIBRATION_PROMPTS):
                pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="latent",
                     generator=torch.Generator("cpu").manual_seed(seed))
    finally:
        handle.remove()
    every = max(1, len(seen) // CALIBRATION_SAMPLES)
    return seen[::every][:CALIBRATION_SAMPLES]


def _config(module) -> dict:
    config = module.config
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def load_parts(model: str, model_dir: Path, *, int8: str, vae_part: str, torch_pipeline: Callable,
               calibration: Callable, precision: str, threads: int) -> dict[str, torch.nn.Module]:
    """The text encoder, UNet and VAE decoder (`vae_part`: the model's own `vae_decoder` or the
    swapped-in `tiny_vae_decoder`), converted unless the cache holds them already (`torch_pipeline()`
    gives the float32 torch pipeline, with that VAE, to convert from; `calibration(pipe)` the UNet
    inputs int8="full" is calibrated on), compiled lazily per shape."""
    no_openvino_telemetry()
    import openvino
    from diffusers.configuration_utils import FrozenDict

    directory = converted_dir(model, model_dir, int8)
    parts = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": vae_part}
    missing = [part for part in parts.values() if not (directory / f"{part}.xml").exists()]
    if missing:
        started = time.perf_counter()
        directory.mkdir(parents=True, exist_ok=True)
        pipe = torch_pipeline()
        for role, (module, example) in _example_inputs(pipe).items():
            if parts[role] in missing:
                config = _config(getattr(pipe, role.removesuffix("_decoder")))
                _save(convert(module, example), directory, parts[role], config, int8,
                      lambda: calibration(pipe))
        del pipe
        log.info("converted %s for OpenVINO (int8: %s) into %s in %.0f s", ", ".join(missing), int8, directory,
                 time.perf_counter() - started)
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "CACHE_DIR": str(directory / "compiled")}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    wrappers = {"text_encoder": TextEncoder, "unet": UNet, "vae_decoder": VaeDecoder}
    loaded = {}
    for role, part in parts.items():
        compiled = CompiledModel(core, directory / f"{part}.xml", config)
        loaded[role.removesuffix("_decoder")] = wrappers[role](
            compiled, FrozenDict(json.loads((directory / f"{part}.json").read_text())))
    return loaded
