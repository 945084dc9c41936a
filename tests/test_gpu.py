"""On a CUDA GPU: float16 by default, the tiny VAE and torch.compile, Whisper in float16, the whole Flow.

Marked `gpu`: left out of the default run; `python -m pytest -m gpu` on a machine with a GPU.
"""

import json
import sys

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from speech2image.asr.audio import decode_audio  # noqa: E402
from speech2image.asr.options import BACKENDS, WhisperConfig  # noqa: E402
from speech2image.asr.transcription import load_engine as load_whisper  # noqa: E402
from speech2image.asr.transcription import transcribe  # noqa: E402
from speech2image.imaging.diffusion import generate, load_engine  # noqa: E402
from speech2image.imaging.options import DiffusionConfig, GenerateOptions  # noqa: E402
from speech2image.schema import from_blob  # noqa: E402
from tests.support.speech import SPEECH, wer  # noqa: E402


def test_auto_is_cuda_float16_with_the_full_vae():
    engine = load_engine(DiffusionConfig(model="tiny"))
    [image] = generate(engine, "a red apple", engine.resolve(GenerateOptions(seed=1, steps=2)))
    assert (image.device, image.dtype, image.vae) == ("cuda", "float16", "full")
    assert engine.pipe.unet.dtype == torch.float16


def test_compiled_float16_with_the_tiny_vae_is_deterministic():
    engine = load_engine(DiffusionConfig(model="tiny", device="cuda", compile=True, vae="tiny"))
    settings = engine.resolve(GenerateOptions(seed=1, steps=2, width=64, height=64))
    first, again = generate(engine, "a red apple", settings), generate(engine, "a red apple", settings)
    assert first[0].vae == "tiny" and from_blob(first[0].png) == from_blob(again[0].png)


@pytest.mark.parametrize("backend", BACKENDS)
def test_whisper_runs_on_cuda_in_float16(backend, jfk_bytes, jfk_text):
    engine = load_whisper(WhisperConfig(backend=backend, model="embedded"))
    assert (engine.device, engine.compute_type) == ("cuda", "float16")
    assert wer(jfk_text, transcribe(engine, decode_audio(jfk_bytes)).text) == 0


@pytest.mark.flow
def test_the_whole_flow_on_the_gpu(tmp_path):
    from tests.support.app import App, run_client

    with App("--device", "cuda") as app:
        done = run_client(SPEECH / "jfk.flac", "--host", f"localhost:{app.port}", "--num-images", 2, "--out", tmp_path,
                          "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["images"]) == 2 and "country" in result["text"].lower()
    print(f"whole Flow on the GPU, jfk.flac -> 2 images: {result['timings']['request_s']} s", file=sys.stderr)
