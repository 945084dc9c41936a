"""Options: the three layers and validation, before any model work."""

import pytest

from speech2image.asr.options import TranscribeOptions, WhisperArguments
from speech2image.errors import InvalidRequest
from speech2image.imaging.options import GenerateOptions
from speech2image.limits import AudioLimits
from speech2image.options import configure, merge


def test_three_layers_defaults_then_config_then_request():
    arguments, rest = configure({"beam_size": 2, "max_audio_seconds": 30, "metas": {"name": "x"}}, WhisperArguments)
    defaults = arguments.defaults
    assert defaults == TranscribeOptions(beam_size=2)
    assert arguments.audio == AudioLimits(max_audio_seconds=30)
    assert rest == {"metas": {"name": "x"}}
    request = merge(defaults, {"beam_size": 1.0, "word_timestamps": "true", "num_images": 3, "__results__": {}})
    assert request == TranscribeOptions(beam_size=1, word_timestamps=True)
    assert merge(defaults, {}) is defaults


@pytest.mark.parametrize("parameters,name", [
    ({"language": "klingon"}, "language"),
    ({"task": "summarize"}, "task"),
    ({"beam_size": 0}, "beam_size"),
    ({"beam_size": 2.5}, "beam_size"),
    ({"vad_filter": "maybe"}, "vad_filter"),
    ({"initial_prompt": "x" * 1001}, "initial_prompt"),
])
def test_invalid_transcribe_options_name_the_parameter(parameters, name):
    with pytest.raises(InvalidRequest) as raised:
        merge(TranscribeOptions(), parameters)
    message = str(raised.value)
    assert message.startswith(f"invalid {name}") and "\n" not in message


@pytest.mark.parametrize("parameters,fragment", [
    ({"num_images": 0}, "num_images=0: allowed 1..8"),
    ({"num_images": 9}, "num_images=9: allowed 1..8"),
    ({"seed": -1}, "seed=-1: allowed 0..2147483647"),
    ({"seed": 2**31}, "seed=2147483648"),
    ({"steps": 0}, "steps=0: allowed 1..150"),
    ({"guidance_scale": 31}, "guidance_scale=31.0: allowed 0.0..30.0"),
    ({"guidance_scale": "high"}, "guidance_scale='high'"),
    ({"width": 100}, "width=100: must be a positive multiple of 8"),
    ({"height": -8}, "height=-8"),
    ({"scheduler": "magic"}, "scheduler='magic': allowed ddim"),
    ({"negative_prompt": "x" * 2001}, "negative_prompt"),
])
def test_invalid_generate_options_name_parameter_value_and_range(parameters, fragment):
    with pytest.raises(InvalidRequest) as raised:
        merge(GenerateOptions(), parameters)
    assert fragment in str(raised.value)


def test_protobuf_floats_become_ints():
    assert merge(GenerateOptions(), {"num_images": 2.0, "seed": 5.0, "width": 64.0}) == GenerateOptions(
        num_images=2, seed=5, width=64)


def test_each_bound_lives_once_and_the_request_schema_states_it():
    """The dataclass refuses what its field's metadata bounds, and the HTTP request models' schema
    (`request_field`) says the same: minimum, maximum, enum, maxLength."""
    from pydantic import TypeAdapter

    from speech2image.options import request_field

    assert TypeAdapter(request_field(GenerateOptions, "num_images")).json_schema() == {
        "type": "integer", "minimum": 1, "maximum": 8, "description": "images per document, 1-8; image k uses seed + k"}
    scheduler = TypeAdapter(request_field(GenerateOptions, "scheduler")).json_schema()
    assert scheduler["enum"] == ["ddim", "pndm", "euler", "euler-ancestral", "heun", "dpm++", "unipc"]
    assert TypeAdapter(request_field(TranscribeOptions, "initial_prompt")).json_schema()["maxLength"] == 1000
    width = TypeAdapter(request_field(GenerateOptions, "width")).json_schema()
    assert (width["multipleOf"], width["exclusiveMinimum"]) == (8, 0)
    with pytest.raises(InvalidRequest, match=r"^invalid num_images=9: allowed 1\.\.8$"):
        GenerateOptions(num_images=9)
    with pytest.raises(InvalidRequest, match=r"^invalid language='xx': allowed en, zh, de, es, ru, ko, fr, ja, … \("):
        TranscribeOptions(language="xx")
