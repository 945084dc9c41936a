"""The speech clips, their texts, and word error rates (Whisper's normalizers)."""

import functools
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# jfk.flac and espeak-ng English prompts, with their texts in manifest.json
SPEECH = Path(os.environ.get("SPEECH2IMAGE_SPEECH_DATA", ROOT.parent / "shared" / "data" / "speech"))
FOREIGN_SPEECH = ROOT / "tests" / "data"  # espeak-ng clips in German, Spanish, French, Italian


@functools.lru_cache(maxsize=2)
def manifest(directory: Path = SPEECH) -> dict[str, dict]:
    """file name → its manifest entry (text; language for tests/data), for the clips that exist."""
    clips = json.loads((directory / "manifest.json").read_text())["clips"]
    return {clip["file"]: clip for clip in clips if (directory / clip["file"]).exists()}


def texts(directory: Path = SPEECH) -> dict[str, str]:
    """file name → spoken text."""
    return {name: clip["text"] for name, clip in manifest(directory).items()}


@functools.lru_cache(maxsize=2)
def _normalizer(english: bool):
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def wer(reference: str, hypothesis: str, english: bool = True) -> float:
    """Word error rate after Whisper's English normalizer (its basic one for other languages)."""
    import jiwer

    normalize = _normalizer(english)
    return jiwer.wer(normalize(reference), normalize(hypothesis or "-"))


def closest(text: str, candidates: dict[str, str]) -> str:
    """The key of the text in `candidates` nearest to `text` (lowest WER)."""
    return min(candidates, key=lambda name: wer(candidates[name], text))
