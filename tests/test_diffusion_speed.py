"""The fast paths: bfloat16 on CPUs that have it, the tiny VAE, torch.compile — and that they stay right.

Speed is measured by bench/diffusion_speed.py, never here; these tests check choices,
metadata and numbers (bfloat16 images close to float32 ones, not garbage).
"""

import io

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from PIL import Image

from speech2image.errors import InvalidRequest
from speech2image.imaging import diffusion
from speech2image.imaging.diffusion import generate, load_engine
from speech2image.imaging.options import DiffusionConfig, GenerateOptions
from speech2image.schema import from_blob

OPTIONS = GenerateOptions(seed=3, width=64, height=64, steps=2)


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(from_blob(image.png))).convert("RGB"), dtype=np.float64)


def draw(engine, options: GenerateOptions = OPTIONS):
    return generate(engine, "a red apple", engine.resolve(options))


@pytest.fixture(scope="module")
def engines():
    """The tiny model in float32 and bfloat16, each with the full and the tiny VAE, in PyTorch."""
    return {(dtype, vae): load_engine(DiffusionConfig(model="tiny", device="cpu", dtype=dtype, vae=vae,
                                                      diffusion_backend="torch"))
            for dtype in ("float32", "bfloat16") for vae in ("full", "tiny")}


def test_auto_picks_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    def resolved(**config):
        return diffusion.resolve_device(DiffusionConfig(**config))

    native = diffusion.cpu_has_native_bfloat16()
    assert resolved(device="cpu") == ("cpu", "bfloat16" if native else "float32", "tiny")
    monkeypatch.setattr(diffusion, "cpu_has_native_bfloat16", lambda: False)
    assert resolved(device="cpu") == ("cpu", "float32", "tiny")
    assert resolved(device="cpu", dtype="float32", vae="full") == ("cpu", "float32", "full")
    assert resolved(device="cuda") == ("cuda", "float16", "full")


def test_this_cpu_reports_native_bfloat16_as_pytorch_reads_it(monkeypatch):
    from speech2image.hardware import CPU_ISA_VARIABLE, cpu_features, cpu_has_native_bfloat16

    monkeypatch.delenv(CPU_ISA_VARIABLE, raising=False)  # the CPU itself, not a cap

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_has_native_bfloat16() == native
    assert native == bool({"avx512_bf16", "amx_tile"} & set(cpu_features()))  # /proc/cpuinfo agrees


@pytest.mark.parametrize("name,value", [("dtype", "float64"), ("vae", "medium")])
def test_unknown_dtype_or_vae_is_refused_with_the_choices(name, value):
    with pytest.raises(InvalidRequest, match=f"invalid {name}='{value}': allowed auto, "):
        DiffusionConfig(model="tiny", **{name: value})


def test_weights_are_loaded_in_the_chosen_dtype_and_vae(engines):
    engine = engines["bfloat16", "tiny"]
    assert engine.pipe.unet.dtype == engine.pipe.text_encoder.dtype == torch.bfloat16
    assert isinstance(engine.pipe.vae, AutoencoderTiny) and engine.pipe.vae.dtype == torch.bfloat16
    assert isinstance(engines["float32", "full"].pipe.vae, AutoencoderKL)


def test_every_image_records_its_dtype_and_vae(engines):
    for (dtype, vae), engine in engines.items():
        [image] = draw(engine)
        assert (image.dtype, image.vae) == (dtype, vae)
        assert Image.open(io.BytesIO(from_blob(image.png))).size == (64, 64)


@pytest.mark.parametrize("vae", ["full", "tiny"])
def test_bfloat16_images_are_close_to_float32_not_garbage(engines, vae):
    exact = pixels(draw(engines["float32", vae])[0])
    fast = pixels(draw(engines["bfloat16", vae])[0])
    assert np.isfinite(fast).all() and fast.std() > 1  # an image, not a flat colour
    assert np.corrcoef(exact.ravel(), fast.ravel())[0, 1] > 0.95
    assert np.abs(exact - fast).mean() < 8  # of 255


def test_bfloat16_latents_after_the_unet_are_close_to_float32(engines):
    def latents(engine):
        return engine.pipe("a red apple", num_inference_steps=2, width=64, height=64, output_type="latent",
                           generator=torch.Generator("cpu").manual_seed(3)).images.float()

    exact, fast = latents(engines["float32", "full"]), latents(engines["bfloat16", "full"])
    assert torch.isfinite(fast).all()
    assert ((fast - exact).norm() / exact.norm()).item() < 0.05


def test_same_seed_gives_the_same_bytes_with_the_fast_defaults(engines):
    engine = engines["bfloat16", "tiny"]
    assert from_blob(draw(engine)[0].png) == from_blob(draw(engine)[0].png)


@pytest.mark.flow
@pytest.mark.slow  # torch.compile's first image of a size: a minute or more of Inductor on 2 cores
def test_compiled_pipeline_draws_the_same_image_size():
    engine = load_engine(DiffusionConfig(model="tiny", device="cpu", dtype="float32", vae="tiny", compile=True))
    [image] = draw(engine, GenerateOptions(seed=3, width=32, height=32, steps=1))
    assert Image.open(io.BytesIO(from_blob(image.png))).size == (32, 32)
    assert pixels(image).std() > 1


def test_the_sdxs_architecture_is_sdxs_512s():
    """3 stages without a mid block, one layer per block, ≈ 0.32 B parameters, SD-Turbo's text
    encoder; built on the meta device (no memory, no time)."""
    from diffusers import UNet2DConditionModel

    from speech2image.imaging.random_pipelines import ARCHITECTURES

    spec = ARCHITECTURES["sdxs"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"])
    assert unet.mid_block is None and len(unet.down_blocks) == len(unet.up_blocks) == 3
    assert all(len(block.resnets) == 1 for block in unet.down_blocks)
    assert 0.31e9 < sum(p.numel() for p in unet.parameters()) < 0.33e9
    assert spec["text"] == ARCHITECTURES["sd-turbo"]["text"]
    assert "vae" not in spec  # its own VAE is the tiny decoder


def test_a_model_distilled_to_one_step_gets_one_step_without_guidance():
    assert diffusion._family("IDKiro/sdxs-512-0.9", None, False) == "turbo"
    assert diffusion._family("stabilityai/sd-turbo", None, False) == "turbo"
