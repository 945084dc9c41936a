"""The speech clips, their texts, and word error rates (Whisper's normalizers)."""

import functools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# jfk.flac, espeak-ng English prompts and espeak-ng clips in German, Spanish, French, Italian,
# with their texts and languages in manifest.json
SPEECH = ROOT / "tests" / "data"


@functools.lru_cache(maxsize=1)
def manifest() -> dict[str, dict]:
    """file name → its manifest entry (text, language, how it was made)."""
    clips = json.loads((SPEECH / "manifest.json").read_text())["clips"]
    return {clip["file"]: clip for clip in clips}


def texts(language: str = "en") -> dict[str, str]:
    """file name → spoken text, of the clips in `language`."""
    return {name: clip["text"] for name, clip in manifest().items() if clip["language"] == language}


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
