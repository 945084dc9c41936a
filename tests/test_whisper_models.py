"""The embedded model and its conversion to an openai-whisper checkpoint."""

import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from speech2image.asr.embedded import (
    _openai_state_dict,
    convert_ctranslate2_to_openai,
    embedded_ctranslate2_path,
    read_ctranslate2_variables,
    resolve_model,
)
from speech2image.errors import ModelLoadError


def test_embedded_model_ships_with_the_package():
    path = embedded_ctranslate2_path()
    assert (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def test_conversion_fills_every_openai_whisper_parameter_with_the_right_shape():
    dims, state = _openai_state_dict(read_ctranslate2_variables(embedded_ctranslate2_path() / "model.bin"))
    assert dims == dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                        n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    expected = Whisper(ModelDimensions(**dims)).state_dict()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert state[name].shape == tensor.shape, name


def test_converted_checkpoint_loads_with_openai_whisper(tmp_path):
    checkpoint = convert_ctranslate2_to_openai(embedded_ctranslate2_path(), tmp_path / "tiny.en.pt")
    model = whisper.load_model(str(checkpoint), device="cpu")
    assert not model.is_multilingual
    assert torch.equal(
        model.decoder.token_embedding.weight.half(),
        torch.from_numpy(read_ctranslate2_variables(embedded_ctranslate2_path() / "model.bin")["decoder/embeddings/weight"].copy()),
    )


def test_unknown_model_names_list_the_valid_ones():
    with pytest.raises(ModelLoadError) as raised:
        resolve_model("tiny.fr", ["tiny", "tiny.en"])
    assert "use one of embedded, embedded-base, tiny, tiny.en, or a local path" in str(raised.value)
