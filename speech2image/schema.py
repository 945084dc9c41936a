"""The one DocArray v2 document schema that travels the whole Flow.

Jina 3.34 refuses to chain executors whose schemas differ, so the WhisperExecutor and
the StableDiffusionExecutor both read and write :class:`SpeechImageDoc`.

Binary payloads (the encoded audio a client sends, the PNG images) are uint8
`NdArray`s: gRPC carries them as raw bytes, and the HTTP gateway as JSON arrays of
numbers (a `bytes` field cannot cross Jina's HTTP gateway). Use :func:`to_blob` and
:func:`from_blob` to convert. Nested lists are `DocList`s, which both protocols carry.
"""

from typing import Optional

import numpy as np
from docarray import BaseDoc, DocList
from docarray.typing import NdArray

from .errors import InvalidRequest


def to_blob(data: bytes) -> np.ndarray:
    """Bytes → the uint8 array a binary field holds."""
    return np.frombuffer(data, dtype=np.uint8)


def from_blob(blob) -> bytes:
    """A binary field's value (uint8 array, or numbers from JSON) → bytes."""
    array = np.asarray(blob)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("a binary field holds numbers outside 0..255")
        array = array.astype(np.uint8)
    return array.tobytes()


class Word(BaseDoc):
    """One word with its timing (when word timestamps are asked for)."""

    word: str = ""
    start: float = 0.0
    end: float = 0.0
    probability: float = 0.0


class Segment(BaseDoc):
    """A stretch of speech and its text."""

    start: float = 0.0
    end: float = 0.0
    text: str = ""
    words: DocList[Word] = DocList[Word]()


class GeneratedImage(BaseDoc):
    """One PNG image and the options that produced it."""

    png: Optional[NdArray] = None
    prompt: str = ""
    negative_prompt: Optional[str] = None
    seed: int = 0
    steps: int = 0
    guidance_scale: float = 0.0
    width: int = 0
    height: int = 0
    scheduler: str = ""
    model: str = ""
    device: str = ""
    dtype: str = ""  # the weights' and computation's: float16, bfloat16 or float32
    vae: str = ""  # the decoder: full or tiny
    seconds: float = 0.0
    random_weights: bool = False
    nsfw: bool = False
    prompt_truncated: bool = False
    warnings: list[str] = []


class SpeechImageDoc(BaseDoc):
    """A spoken (or typed) prompt, its transcript, and the images made from it."""

    # input: one of audio, waveform, uri (audio); or prompt alone (text-only request).
    # WhisperExecutor clears audio and waveform once transcribed: answers stay small.
    audio: Optional[NdArray] = None  # encoded file bytes (wav, flac, mp3, ogg, m4a) as uint8
    waveform: Optional[NdArray] = None  # float32 mono samples at 16 kHz
    uri: Optional[str] = None  # server-side path or URL; refused unless allow-listed
    prompt: Optional[str] = None  # text prompt; used when there is no audio

    # speech -> text (WhisperExecutor)
    text: Optional[str] = None
    language: Optional[str] = None
    language_probability: Optional[float] = None
    task: Optional[str] = None
    duration: Optional[float] = None
    segments: DocList[Segment] = DocList[Segment]()
    no_speech: bool = False
    asr_backend: Optional[str] = None
    asr_model: Optional[str] = None
    asr_device: Optional[str] = None
    asr_compute_type: Optional[str] = None
    asr_seconds: Optional[float] = None
    warnings: list[str] = []  # e.g. an unsure language detection, and what was done about it

    # text -> images (StableDiffusionExecutor)
    images: DocList[GeneratedImage] = DocList[GeneratedImage]()
    no_images_reason: Optional[str] = None

    def has_audio(self) -> bool:
        """Whether the document carries audio in any form."""
        return self.audio is not None or self.waveform is not None or bool(self.uri)

    def filled(self, executor: str) -> list[str]:
        """The fields `executor` fills that are set already (a client must not set them)."""
        defaults = SpeechImageDoc.model_fields
        return [name for name in FILLED_BY[executor] if getattr(self, name) != defaults[name].get_default()]

    def image_prompt(self) -> Optional[str]:
        """The English text the diffusion step draws: the transcript, else the prompt."""
        return self.text if self.text is not None else self.prompt


# the fields each executor fills: nothing a client sends in them is trusted
FILLED_BY = {
    "whisper": ("text", "language", "language_probability", "task", "duration", "segments", "no_speech",
                "asr_backend", "asr_model", "asr_device", "asr_compute_type", "asr_seconds", "warnings"),
    "diffusion": ("images", "no_images_reason"),
}


def refuse_filled(docs, *executors: str) -> None:
    """InvalidRequest when a document sets a field one of `executors` fills: nothing a client puts
    there is trusted (the text drawn, the images, a transcript's language…)."""
    for index, doc in enumerate(docs):
        for executor in executors:
            filled = doc.filled(executor)
            if filled:
                raise InvalidRequest(f"document {index} sets {filled[0]}, which the server fills; send audio or a "
                                     "prompt, and leave the answer's fields empty")
