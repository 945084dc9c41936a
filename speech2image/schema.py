"""The one DocArray v2 document schema that travels the whole Flow.

Jina 3.34 refuses to chain executors whose schemas differ, so the WhisperExecutor and
the StableDiffusionExecutor both read and write :class:`SpeechImageDoc`.

Binary payloads (the encoded audio a client sends, the PNG images) are uint8
`NdArray`s: gRPC carries them as raw bytes, and the HTTP gateway as JSON arrays of
numbers (a `bytes` field cannot cross Jina's HTTP gateway). Use :func:`to_blob` and
:func:`from_blob` to convert. Nested lists are `DocList`s, which both protocols carry.
"""

import json
from typing import Optional

import numpy as np
from docarray import BaseDoc, DocList
from docarray.typing import NdArray

from .errors import GenerationError, InvalidRequest, Speech2ImageError


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
    strength: Optional[float] = None  # an edit's: how far from the image it was drawn (none: a new image)
    seconds: float = 0.0
    random_weights: bool = False
    nsfw: bool = False
    prompt_truncated: bool = False
    warnings: list[str] = []
    partial: bool = False  # a preview decoded before the last step (streaming calls only)


EMPTY_DOCUMENT = "empty document: it has neither audio nor a text prompt; send audio bytes or prompt"

# a streaming call's events, in the order they come (error may end it at any point)
TRANSCRIPT_DELTA, TRANSCRIPT_DONE = "transcript.delta", "transcript.done"
STEP, IMAGE_PARTIAL, IMAGE_COMPLETED, STREAM_ERROR = "step", "image.partial", "image.completed", "error"
STREAM_EVENTS = (TRANSCRIPT_DELTA, TRANSCRIPT_DONE, STEP, IMAGE_PARTIAL, IMAGE_COMPLETED, STREAM_ERROR)


class SpeechImageDoc(BaseDoc):
    """A spoken (or typed) prompt, its transcript, and the images made from it."""

    # input: one of audio, waveform, uri (audio); or prompt alone (text-only request).
    # WhisperExecutor clears audio and waveform once transcribed: answers stay small.
    audio: Optional[NdArray] = None  # encoded file bytes (wav, flac, mp3, ogg, m4a) as uint8
    waveform: Optional[NdArray] = None  # float32 mono samples at 16 kHz
    uri: Optional[str] = None  # server-side path or URL; refused unless allow-listed
    prompt: Optional[str] = None  # text prompt; used when there is no audio
    # an image to edit (PNG, JPEG or WebP bytes as uint8): the images are drawn from it; and the
    # mask of the area to repaint (a PNG of its size, transparent there: OpenAI's rule)
    edit_image: Optional[NdArray] = None
    edit_mask: Optional[NdArray] = None

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

    # streaming (the executors' /stream endpoint): Jina's stream_doc carries no request
    # parameters, so the gateway sends them in the document, as JSON. Each document a stream
    # answers is one event, as it happens (flat fields: Jina's gateway cannot rebuild the schema
    # of an optional nested document): a transcript segment decoded, a denoising step done, an
    # image previewed or completed (the image in `images`), or the error that ended the call.
    stream_parameters: Optional[str] = None
    event: Optional[str] = None  # one of STREAM_EVENTS
    delta: Optional[str] = None  # transcript.delta: the segment's text
    error: Optional[str] = None  # error: the class name of the project's error, and its args as strings
    error_args: list[str] = []
    image_index: Optional[int] = None  # the image's index among the request's images
    step: Optional[int] = None  # steps done
    total_steps: Optional[int] = None

    def has_audio(self) -> bool:
        """Whether the document carries audio in any form."""
        return self.audio is not None or self.waveform is not None or bool(self.uri)

    def check_input(self) -> None:
        """InvalidRequest unless the document carries audio or a prompt."""
        if not self.has_audio() and not self.prompt:
            raise InvalidRequest(EMPTY_DOCUMENT)

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
    "stream": ("stream_parameters", "event", "delta", "error", "error_args", "image_index", "step", "total_steps"),
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


def stream_parameters(doc: SpeechImageDoc) -> dict:
    """A streaming call's parameters, which the gateway sends in the document as JSON."""
    try:
        parameters = json.loads(doc.stream_parameters or "{}")
    except (ValueError, RecursionError):
        parameters = None
    if not isinstance(parameters, dict):
        raise InvalidRequest("stream_parameters is not a JSON object; send the request's parameters as one")
    return parameters


def event_doc(event: str, *, images=(), **fields) -> SpeechImageDoc:
    """One event of a streaming call (`images`: the image it is about)."""
    return SpeechImageDoc(event=event, images=DocList[GeneratedImage](images), **fields)


def error_doc(error: Exception, logger=None) -> SpeechImageDoc:
    """The event that ends a streaming call on an error: the project's error as its class name and
    args (as Jina carries an executor's error); any other is a GenerationError, its stack logged."""
    if not isinstance(error, Speech2ImageError):
        if logger:
            logger.error(f"a streaming call failed: {error!r}", exc_info=error)
        error = GenerationError(f"the {type(error).__name__} error of an executor: see the server log")
    return event_doc(STREAM_ERROR, error=type(error).__name__, error_args=[str(arg) for arg in error.args])
