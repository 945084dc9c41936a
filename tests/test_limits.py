"""Request and audio limits: one-line refusals naming the parameter, its value and the limit."""

import struct

import numpy as np
import pytest

from speech2image.asr.audio import decode_audio
from speech2image.errors import AudioError, InvalidRequest
from speech2image.limits import AudioLimits, RequestLimits
from speech2image.schema import SpeechImageDoc
from tests.support.audio_files import encode


def wav_header(sample_rate: int, channels: int, frames: int = 16) -> bytes:
    """A PCM wav whose header declares any format (what a hostile client may send)."""
    data = b"\0" * frames * channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, (sample_rate * channels * 2) % 2**32, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_work_budget_names_every_factor_and_the_limit():
    limits = RequestLimits(max_megapixel_steps=10)
    limits.check_work(documents=1, num_images=4, steps=10, width=512, height=512)  # exactly 10
    with pytest.raises(InvalidRequest) as refused:
        limits.check_work(documents=2, num_images=4, steps=10, width=512, height=512)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in ("2 document(s)", "num_images=4", "steps=10", "512x512", "20.0 megapixel-steps",
                     "max_megapixel_steps=10"):
        assert fragment in message


def test_documents_per_request_and_prompt_length():
    limits = RequestLimits(max_documents=2, max_prompt_chars=10)
    limits.check_documents([SpeechImageDoc(prompt="a cat"), SpeechImageDoc(prompt="x" * 10)])
    with pytest.raises(InvalidRequest, match=r"too many documents: 3 > max_documents=2"):
        limits.check_documents([SpeechImageDoc(prompt="a")] * 3)
    with pytest.raises(InvalidRequest, match=r"prompt of document 1 too long: 11 characters > max_prompt_chars=10"):
        limits.check_documents([SpeechImageDoc(prompt="a"), SpeechImageDoc(prompt="x" * 11)])


@pytest.mark.parametrize("field,value", [("max_documents", 0), ("max_megapixel_steps", -1), ("max_sample_rate", 10),
                                         ("max_channels", 1000)])
def test_limits_themselves_are_checked(field, value):
    cls = AudioLimits if field in ("max_sample_rate", "max_channels") else RequestLimits
    with pytest.raises(InvalidRequest, match=f"invalid {field}={value}"):
        cls(**{field: value})


def test_declared_sample_rate_and_channels_are_refused_before_decoding():
    assert decode_audio(wav_header(16_000, 1, 1600)).size == 1600
    with pytest.raises(AudioError, match=r"sample rate 2000000000 Hz is outside 8000..max_sample_rate=192000"):
        decode_audio(wav_header(2_000_000_000, 1))
    with pytest.raises(AudioError, match=r"audio has 200 channels, outside 1..max_channels=8"):
        decode_audio(wav_header(16_000, 200))
    with pytest.raises(AudioError, match=r"max_channels=1"):
        decode_audio(encode(np.zeros(1600, np.float32), 16_000, "wav", "stereo"), AudioLimits(max_channels=1))


def test_a_small_file_that_unpacks_to_hours_stops_at_the_duration_limit():
    hours = encode(np.zeros(16_000 * 1200, np.float32), 16_000, "flac")  # 20 minutes of silence
    assert len(hours) < 2_000_000
    with pytest.raises(AudioError, match=r"audio too long: .* > max_audio_seconds=60"):
        decode_audio(hours, AudioLimits(max_audio_seconds=60))
