"""The OpenVINO backend on the tiny model (random weights, 64×64): images of the requested size
through the executor and a Flow, close to PyTorch's; the converted parts reused by a second
start; and which backend `auto` picks on each kind of CPU.

The tests that run OpenVINO are skipped where it is not installed; the choice of backend is
checked everywhere. Speed is bench/diffusion_speed.py's, never measured here.
"""

import io
import re

import numpy as np
import pytest
from docarray import DocList
from jina import Flow
from PIL import Image

from executors.diffusion.executor import StableDiffusionExecutor
from speech2image import hardware
from speech2image.errors import ConfigurationError, InvalidRequest
from speech2image.imaging import openvino_backend
from speech2image.imaging.diffusion import generate, load_engine, resolve_backend, resolve_device
from speech2image.imaging.options import DiffusionConfig, GenerateOptions
from speech2image.schema import SpeechImageDoc, from_blob
from tests.support.executors import call
from tests.support.speech import ROOT
from tests.test_hardware import AMX_XEON

needs_openvino = pytest.mark.skipif(not openvino_backend.available(),
                                    reason="openvino is not installed: pip install 'speech2image[openvino]'")
OPTIONS = GenerateOptions(seed=3, width=64, height=64, steps=2)


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(from_blob(image.png))).convert("RGB"), dtype=np.float64)


def int8_weights(ir) -> bool:
    """Whether a converted part holds int8 weights."""
    import openvino

    return any(op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8")
               for op in openvino.Core().read_model(ir).get_ordered_ops())


def run(executor, *docs, **parameters):
    return call(executor.generate, docs=DocList[SpeechImageDoc](docs), parameters=parameters)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache directory of this module's own (the tiny model is built into it): its first load converts."""
    directory = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH2IMAGE_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="module")
def executor(cache):
    return StableDiffusionExecutor(model="tiny", diffusion_backend="openvino", dtype="float32")


@needs_openvino
def test_openvino_draws_images_of_the_requested_size_through_the_executor(executor):
    assert executor.engine.backend == "openvino"
    assert isinstance(executor.engine.pipe.unet, openvino_backend.UNet)
    for width, height in ((64, 48), (32, 32)):  # another shape compiles again
        [doc] = run(executor, SpeechImageDoc(prompt="a red apple"), seed=3, width=width, height=height)
        [image] = doc.images
        assert Image.open(io.BytesIO(from_blob(image.png))).size == (width, height)
        assert pixels(image).std() > 1  # an image, not a flat colour


@needs_openvino
@pytest.mark.parametrize("vae", ["full", "tiny"])
def test_openvino_images_are_pytorchs_within_rounding(cache, vae):
    """float16 weights on disk, float32 compute: the same seed draws what PyTorch float32 draws."""
    engines = [load_engine(DiffusionConfig(model="tiny", device="cpu", dtype="float32", vae=vae,
                                           diffusion_backend=backend)) for backend in ("torch", "openvino")]
    exact, converted = (pixels(generate(engine, "a red apple", engine.resolve(OPTIONS))[0]) for engine in engines)
    assert np.corrcoef(exact.ravel(), converted.ravel())[0, 1] > 0.999
    assert np.abs(exact - converted).mean() < 1  # of 255


@needs_openvino
def test_a_second_start_converts_nothing_and_compiles_from_the_cache(executor, cache, monkeypatch):
    converted = sorted(cache.glob("openvino/tiny-*/float/*.xml"))
    assert {path.stem for path in converted} >= {"text_encoder", "unet", "tiny_vae_decoder"}
    written = {path: path.stat().st_mtime_ns for path in converted}
    assert any((converted[0].parent / "compiled").iterdir())  # OpenVINO's compiled models

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino_backend, "convert", no_conversion)
    again = StableDiffusionExecutor(model="tiny", diffusion_backend="openvino", dtype="float32")
    assert len(run(again, SpeechImageDoc(prompt="a cat"), width=64, height=64)[0].images) == 1
    assert {path: path.stat().st_mtime_ns for path in converted} == written


@needs_openvino
def test_the_unet_step_is_timed_by_kernel_for_the_benchmark(executor):
    engine = executor.engine
    generate(engine, "a cat", engine.resolve(GenerateOptions(seed=0, width=64, height=64)))
    seconds = engine.pipe.unet.denoiser.seconds_by_kernel()
    assert seconds and all(value >= 0 for value in seconds.values()) and sum(seconds.values()) > 0
    assert all(re.fullmatch(r"\w+", kernel) for kernel in seconds), seconds  # OpenVINO's names, e.g. brgconv_avx2_f32


@needs_openvino
@pytest.mark.flow  # NNCF compresses and calibrates: tens of seconds
# measured on the tiny model: correlation 0.9996 (weights), 0.992 (full)
@pytest.mark.parametrize("int8,parts,closeness", [("weights", {"text_encoder", "unet"}, 0.995),
                                                   ("full", {"unet"}, 0.97)])
def test_int8_parts_are_converted_apart_and_draw_close_to_float(executor, cache, int8, parts, closeness):
    engine = load_engine(DiffusionConfig(model="tiny", device="cpu", dtype="float32", diffusion_backend="openvino",
                                         openvino_int8=int8))
    directory = next(cache.glob(f"openvino/tiny-*/int8-{int8}"))
    assert {path.stem for path in directory.glob("*.xml")} == {"text_encoder", "unet", "tiny_vae_decoder"}
    assert {part for part in ("text_encoder", "unet", "tiny_vae_decoder")
            if int8_weights(directory / f"{part}.xml")} == parts  # int8 where asked, float elsewhere
    exact = pixels(generate(executor.engine, "a red apple", executor.engine.resolve(OPTIONS))[0])
    quantized = pixels(generate(engine, "a red apple", engine.resolve(OPTIONS))[0])
    assert not np.array_equal(exact, quantized)  # other weights
    assert np.corrcoef(exact.ravel(), quantized.ravel())[0, 1] > closeness


@needs_openvino
@pytest.mark.flow
def test_a_flow_draws_with_openvino(cache):
    flow = Flow().add(uses=str(ROOT / "executors" / "diffusion" / "config.yml"), name="diffusion",
                      uses_with={"model": "tiny", "diffusion_backend": "openvino"},
                      env={"SPEECH2IMAGE_CACHE": str(cache)})
    with flow:
        [doc] = flow.post("/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(prompt="a red apple")]),
                          return_type=DocList[SpeechImageDoc], parameters={"num_images": 2, "seed": 42, "width": 48})
    assert [image.seed for image in doc.images] == [42, 43]
    assert Image.open(io.BytesIO(from_blob(doc.images[0].png))).size == (48, 64)


@pytest.mark.parametrize("cap,backend", [("avx2", "openvino"), ("avx512", "openvino"), ("avx512_bf16", "openvino"),
                                         ("native", "torch")])
def test_auto_picks_the_backend_measured_fastest_on_each_kind_of_cpu(monkeypatch, cap, backend):
    """OpenVINO on AVX2 and AVX512-BF16 CPUs, PyTorch bfloat16 on AMX (docs/benchmarks.md); here an
    AMX Xeon, as itself and capped to each older kind."""
    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: dict(AMX_XEON))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, cap)
    config = DiffusionConfig(device="cpu")
    assert resolve_backend(config, "cpu") == backend


@pytest.mark.parametrize("config", [DiffusionConfig(device="cuda"), DiffusionConfig(device="cpu", compile=True)])
def test_auto_keeps_pytorch_on_a_gpu_and_with_torch_compile(monkeypatch, config):
    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx2")
    assert resolve_backend(config, resolve_device(config)[0]) == "torch"


def test_without_openvino_auto_is_pytorch_and_openvino_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(openvino_backend, "available", lambda: False)
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx2")
    assert resolve_backend(DiffusionConfig(device="cpu"), "cpu") == "torch"
    with pytest.raises(ConfigurationError, match=r"^diffusion_backend='openvino' needs OpenVINO: pip install "
                                                 r"'speech2image\[openvino\]', or diffusion_backend='torch'$"):
        load_engine(DiffusionConfig(model="tiny", device="cpu", diffusion_backend="openvino"))


def test_openvino_on_a_gpu_is_refused_in_one_line():
    with pytest.raises(ConfigurationError, match=r"^diffusion_backend='openvino' needs device='cpu', "):
        load_engine(DiffusionConfig(model="tiny", device="cuda", diffusion_backend="openvino"))


@pytest.mark.parametrize("name,value", [("diffusion_backend", "onnx"), ("openvino_int8", "int4")])
def test_unknown_backend_or_weights_are_refused_with_the_choices(name, value):
    with pytest.raises(InvalidRequest, match=f"invalid {name}='{value}': allowed "):
        DiffusionConfig(**{name: value})
