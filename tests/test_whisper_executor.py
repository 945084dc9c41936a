"""The WhisperExecutor called directly, then in a one-executor Flow over real gRPC."""

import time

import numpy as np
import pytest
from docarray import DocList
from jina import Flow

from executors.whisper.executor import WhisperExecutor
from speech2image.errors import AudioError, DeadlineExceeded, ForbiddenSource, InvalidRequest
from speech2image.schema import SpeechImageDoc, to_blob
from tests.support.audio_files import encode
from tests.support.executors import call
from tests.support.speech import ROOT, SPEECH, wer


@pytest.fixture(scope="module")
def executor():
    return WhisperExecutor(model="embedded", max_audio_seconds=60, max_audio_bytes=2_000_000)


def run(executor, *docs, **parameters):
    return call(executor.transcribe, docs=DocList[SpeechImageDoc](docs), parameters=parameters)


def test_all_documents_are_transcribed_and_text_only_passes_through(executor, jfk_bytes, jfk_text, clips):
    prompt = SpeechImageDoc(prompt="a cat on a sofa")
    docs = run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)), prompt,
               SpeechImageDoc(audio=to_blob((SPEECH / "prompt1.wav").read_bytes())), word_timestamps=True)
    assert wer(jfk_text, docs[0].text) == 0
    assert docs[0].language == "en" and docs[0].language_probability == 1.0 and docs[0].duration == 11.0
    assert docs[0].segments[0].words[0].word == "And"
    assert (docs[0].asr_backend, docs[0].asr_model, docs[0].asr_device, docs[0].asr_compute_type) == (
        "faster-whisper", "embedded (tiny.en)", "cpu", "int8")
    assert docs[1].text is None and docs[1].prompt == "a cat on a sofa" and docs[1].image_prompt() == "a cat on a sofa"
    assert wer(clips["prompt1.wav"], docs[2].text) == 0


def test_compressed_stereo_audio_at_other_rates(executor, jfk_bytes, jfk_text):
    from speech2image.asr.audio import decode_audio

    waveform = decode_audio(jfk_bytes)
    for name, rate in (("mp3", 44_100), ("m4a", 48_000), ("ogg-opus", 48_000)):
        doc = run(executor, SpeechImageDoc(audio=to_blob(encode(waveform, rate, name, "stereo"))))[0]
        assert wer(jfk_text, doc.text) == 0, name


def test_float_waveform_input(executor, jfk_bytes, jfk_text):
    from speech2image.asr.audio import decode_audio

    assert wer(jfk_text, run(executor, SpeechImageDoc(waveform=decode_audio(jfk_bytes)))[0].text) == 0


def test_silence_is_no_speech_not_an_error(executor):
    doc = run(executor, SpeechImageDoc(waveform=np.zeros(32_000, np.float32)))[0]
    assert doc.text == "" and doc.no_speech


@pytest.mark.parametrize("doc,parameters,error,fragment", [
    (SpeechImageDoc(audio=to_blob(b"")), {}, AudioError, "empty audio"),
    (SpeechImageDoc(audio=to_blob(b"not audio" * 100)), {}, AudioError, "not audio"),
    (SpeechImageDoc(waveform=np.zeros(61 * 16_000, np.float32)), {}, AudioError, "max_audio_seconds=60"),
    (SpeechImageDoc(audio=to_blob(bytes(2_000_001))), {}, AudioError, "max_audio_bytes=2000000"),
    (SpeechImageDoc(prompt="x"), {"language": "xx"}, InvalidRequest, "invalid language='xx'"),
    (SpeechImageDoc(uri="https://example.com/a.wav"), {}, ForbiddenSource, "allowed_audio_urls"),
    (SpeechImageDoc(uri="/etc/passwd"), {}, ForbiddenSource, "allowed_audio_dirs"),
    (SpeechImageDoc(), {}, InvalidRequest, "neither audio nor a text prompt"),
])
def test_bad_input_fails_alone_and_the_executor_keeps_serving(executor, jfk_bytes, doc, parameters, error, fragment):
    with pytest.raises(error) as raised:
        run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)), doc, **parameters)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)))[0].text.startswith("And so")


def test_long_audio_is_rejected_while_decoding(executor):
    from speech2image.asr.audio import decode_audio

    long = encode(np.tile(decode_audio((SPEECH / "prompt4.wav").read_bytes()), 30), 16_000, "mp3")
    with pytest.raises(AudioError, match="audio too long"):
        run(executor, SpeechImageDoc(audio=to_blob(long)))


def test_allow_listed_directory_is_read(tmp_path, jfk_bytes, jfk_text):
    (tmp_path / "jfk.flac").write_bytes(jfk_bytes)
    executor = WhisperExecutor(model="embedded", allowed_audio_dirs=[str(tmp_path)])
    assert wer(jfk_text, run(executor, SpeechImageDoc(uri=str(tmp_path / "jfk.flac")))[0].text) == 0


@pytest.mark.flow
def test_one_executor_flow_over_grpc(jfk_bytes, jfk_text):
    flow = Flow().add(uses=str(ROOT / "executors" / "whisper" / "config.yml"), name="whisper",
                      uses_with={"backend": "openai-whisper", "model": "embedded"})
    with flow:
        docs = flow.post("/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(jfk_bytes))]),
                         return_type=DocList[SpeechImageDoc], parameters={"word_timestamps": True})
        assert wer(jfk_text, docs[0].text) == 0 and docs[0].asr_backend == "openai-whisper"
        assert docs[0].segments[0].words[0].word == "And"
        with pytest.raises(Exception, match="not audio"):
            flow.post("/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(b"junk" * 50))]),
                      return_type=DocList[SpeechImageDoc])
        docs = flow.post("/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(jfk_bytes))]),
                         return_type=DocList[SpeechImageDoc])
        assert wer(jfk_text, docs[0].text) == 0


def test_request_limits_are_checked_before_any_audio_is_decoded(jfk_bytes):
    executor = WhisperExecutor(model="embedded", max_documents=2, max_prompt_chars=20)
    audio = SpeechImageDoc(audio=to_blob(jfk_bytes))
    with pytest.raises(InvalidRequest, match="too many documents: 3 > max_documents=2"):
        run(executor, audio, audio, audio)
    with pytest.raises(InvalidRequest, match="prompt of document 1 too long: 21 characters > max_prompt_chars=20"):
        run(executor, audio, SpeechImageDoc(prompt="x" * 21))
    assert audio.text is None  # refused before any transcription


@pytest.mark.parametrize("planted", [dict(text="a planted transcript"), dict(language="en"),
                                     dict(no_speech=True), dict(no_images_reason="none")])
def test_fields_only_the_server_fills_are_refused_on_the_way_in(executor, jfk_bytes, planted):
    with pytest.raises(InvalidRequest, match=rf"document 0 sets {next(iter(planted))}, which the server fills"):
        run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes), **planted))


def test_a_work_budget_bounds_audio_seconds_times_beam(jfk_bytes):
    executor = WhisperExecutor(model="embedded", max_audio_beam_seconds=50)
    audio = SpeechImageDoc(audio=to_blob(jfk_bytes))
    with pytest.raises(InvalidRequest, match=r"request too long to transcribe: 11.0 s of audio x beam_size=5 = 55 "
                                             r"beam-seconds > max_audio_beam_seconds=50"):
        run(executor, audio)
    assert audio.text is None  # refused before any model work
    assert run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)), beam_size=4)[0].text.startswith("And so")


def test_a_request_out_of_time_is_not_worked_on_and_the_replica_keeps_serving(executor, jfk_bytes):
    """The deadline the gateway carries (wall clock) holds in the executor: a copy of a request that
    arrives after it (Jina retried it) is dropped before any work."""
    with pytest.raises(DeadlineExceeded, match=r"^deadline passed before the request reached the replica"):
        run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)), deadline=time.time() - 1)
    assert run(executor, SpeechImageDoc(audio=to_blob(jfk_bytes)))[0].text.startswith("And so")
