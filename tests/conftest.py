"""Shared fixtures: the speech clips, their texts, and the executors' modules."""

import functools
import json
import os
from pathlib import Path

# Flows start their executors with spawn: a forked child of a process that already
# loaded CTranslate2 or PyTorch thread pools can deadlock.
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("SPEECH2IMAGE_SPEECH_DATA", ROOT.parent / "shared" / "data" / "speech"))
FOREIGN_SPEECH = ROOT / "tests" / "data"  # espeak-ng clips in German, Spanish and French


@pytest.fixture(scope="session")
def clips() -> dict[str, str]:
    """file name → spoken text, from the shared manifest."""
    manifest = json.loads((SPEECH / "manifest.json").read_text())
    return {clip["file"]: clip["text"] for clip in manifest["clips"]}


@pytest.fixture(scope="session")
def jfk_bytes() -> bytes:
    return (SPEECH / "jfk.flac").read_bytes()


@pytest.fixture(scope="session")
def jfk_text(clips) -> str:
    return clips["jfk.flac"]


@pytest.fixture(scope="session")
def foreign_clips() -> dict[str, dict]:
    """file name → its manifest entry (language, text), for tests/data."""
    manifest = json.loads((FOREIGN_SPEECH / "manifest.json").read_text())
    return {clip["file"]: clip for clip in manifest["clips"]}


@functools.lru_cache(maxsize=2)
def _normalizer(english: bool):
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def wer(reference: str, hypothesis: str, english: bool = True) -> float:
    """Word error rate after Whisper's English normalizer (its basic one for other languages)."""
    import jiwer

    normalize = _normalizer(english)
    return jiwer.wer(normalize(reference), normalize(hypothesis))
