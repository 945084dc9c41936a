"""On a CUDA GPU: float16 by default, the tiny VAE and torch.compile, Whisper in float16, the whole Flow.

Marked `gpu`: left out of the default run; `python -m pytest -m gpu` on a machine with a GPU.
"""

import json
import sys

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from speech2image.audio import decode_audio  # noqa: E402
from speech2image.diffusion import GenerateOptions, generate, load_engine  # noqa: E402
from speech2image.transcription import BACKENDS, transcribe  # noqa: E402
from speech2image.transcription import load_engine as load_whisper  # noqa: E402
from tests.conftest import SPEECH, wer  # noqa: E402


def test_auto_is_cuda_float16_with_the_full_vae():
    engine = load_engine("tiny")
    [image] = generate(engine, "a red apple", GenerateOptions(seed=1, steps=2))
    assert (image.device, image.dtype, image.vae) == ("cuda", "float16", "full")
    assert engine.pipe.unet.dtype == torch.float16


def test_compiled_float16_with_the_tiny_vae_is_deterministic():
    engine = load_engine("tiny", "cuda", compile=True, vae="tiny")
    options = GenerateOptions(seed=1, steps=2, width=64, height=64)
    first, again = generate(engine, "a red apple", options), generate(engine, "a red apple", options)
    assert first[0].vae == "tiny" and first[0].png == again[0].png


@pytest.mark.parametrize("backend", BACKENDS)
def test_whisper_runs_on_cuda_in_float16(backend, jfk_bytes, jfk_text):
    engine = load_whisper(backend, "embedded")
    assert (engine.device, engine.compute_type) == ("cuda", "float16")
    assert wer(jfk_text, transcribe(engine, decode_audio(jfk_bytes)).text) == 0


def test_the_whole_flow_on_the_gpu(tmp_path):
    from tests.test_end_to_end import client, start_app, stop_app

    port, process = start_app("--device", "cuda")
    try:
        done = client(SPEECH / "jfk.flac", "--host", f"localhost:{port}", "--num-images", 2, "--out", tmp_path,
                      "--json")
    finally:
        stop_app(process)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["images"]) == 2 and "country" in result["text"].lower()
    print(f"whole Flow on the GPU, jfk.flac -> 2 images: {result['timings']['request_s']} s", file=sys.stderr)
