"""Every bound on what one request may ask for, in one place.

Two kinds. The operator's limits (:class:`AudioLimits`, :class:`RequestLimits`) are set in
either executor's config.yml `with:` (or `uses_with`); requests cannot change them. The
ranges of request options below are fixed. Each is checked before any model work, and a
request over one is refused with a one-line message naming the parameter, its value and
the limit.
"""

from dataclasses import dataclass
from typing import Optional

from .errors import AudioError, InvalidRequest
from .options import check, option

MEGA = 2**20
MIN_SAMPLE_RATE = 8_000  # telephone speech; lower rates make the resampler allocate gigabytes per frame

# ranges of request options (speech2image.asr.options, speech2image.imaging.options)
MAX_IMAGES = 8  # per document
MAX_PARTIAL_IMAGES = 3  # previews of each image in a streaming call (OpenAI's bound)
MAX_SEED = 2**31 - 1  # seeds travel as protobuf int32
STEPS = (1, 150)
EDIT_STRENGTH = (0.01, 1.0)  # an edit runs steps x strength steps: at 0.01, 100 of them make one
GUIDANCE_SCALE = (0.0, 30.0)
MAX_NEGATIVE_PROMPT_CHARS = 2000
SIZE_MULTIPLE = 8  # width and height: multiples of it, from a quarter to twice the model's native size
SIZE_RANGE = (0.25, 2.0)
TINY_MAX_SIZE = 512  # the random-weights test model: its attention makes larger images slow on a CPU
BEAM_SIZE = (1, 16)
MAX_INITIAL_PROMPT_CHARS = 1000
# an image to edit, and its mask: bytes, and pixels as its header declares them (checked before it
# is decoded: a small file can declare gigapixels)
MAX_EDIT_IMAGE_BYTES = 16 * MEGA
MAX_EDIT_IMAGE_PIXELS = 4096 * 4096
EDIT_FORMATS = ("PNG", "JPEG", "WEBP")  # a camera's MPO opens as a JPEG (its first picture)


@dataclass(frozen=True)
class AudioLimits:
    """Bounds on one document's audio, and on the work of decoding it (which runs in a worker
    process with `decode_memory_bytes` of address space and `decode_timeout_seconds`)."""

    max_audio_bytes: int = option(25_000_000, "the largest audio file, in bytes", ge=1, le=2**31)
    max_audio_seconds: float = option(600.0, "the longest audio, in seconds", ge=0.1, le=24 * 3600)
    max_sample_rate: int = option(192_000, "the highest sample rate a file may declare, in Hz", ge=MIN_SAMPLE_RATE,
                                  le=768_000)
    max_channels: int = option(8, "the most channels a file may declare", ge=1, le=64)
    decode_timeout_seconds: float = option(30.0, "the longest decoding may take (600 s of mp3 decodes in about 2 s)",
                                           ge=0.001, le=3600)
    decode_memory_bytes: int = option(2 * 2**30, "the decoding worker's address space (its libraries take about "
                                                 "300 MB)", ge=2**29, le=2**40)

    def __post_init__(self):
        check(self)

    def check_format(self, sample_rate: int, channels: int) -> None:
        """Refuse a stream whose declared format is over the limits, before decoding it."""
        if not MIN_SAMPLE_RATE <= sample_rate <= self.max_sample_rate:
            raise AudioError(
                f"audio sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..max_sample_rate="
                f"{self.max_sample_rate}; resample the file (16 kHz is enough for speech)"
            )
        if not 0 < channels <= self.max_channels:
            raise AudioError(
                f"audio has {channels} channels, outside 1..max_channels={self.max_channels}; send mono or stereo"
            )


@dataclass(frozen=True)
class ReplicaLimits:
    """Bounds on one executor replica: how many requests may wait for it, and how many of its places
(the one running and the queue's) one caller may hold while another's waits (docs/admission.md)."""

    max_queued_requests: int = option(4, "requests that may wait for the replica; one more is refused as busy",
                                      ge=0, le=10_000)
    max_caller_share: float = option(0.5, "the share of the replica's places (1 + max_queued_requests) one caller "
                                          "(API key) may hold while another's request waits (at least one place); "
                                          "1: no share", ge=0.01, le=1.0)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on one request: its documents, the text drawn, the work and the time it may take.

    The work of a request's images is documents × num_images × steps × width × height,
    counted in megapixel-steps (2^20 pixels through one denoising step): 4 SDXL images of
    1024² at 30 steps are 120, 8 SD images of 512² at 50 steps 100. The work of its
    transcription is its seconds of audio × beam_size, in beam-seconds: a 10-minute
    recording at beam 5 is 3000. Past request_timeout_seconds, image generation stops
    between two denoising steps and transcription between two segments.
    """

    max_documents: int = option(16, "documents per request", ge=1, le=10_000)
    max_prompt_chars: int = option(1000, "the longest text drawn: a prompt, or a transcript a client sent straight "
                                         "to diffusion", ge=1, le=100_000)
    max_megapixel_steps: float = option(128.0, "the most image work per request", ge=0.001, le=1e6)
    max_audio_beam_seconds: float = option(3000.0, "the most transcription work per request", ge=1, le=1e7)
    request_timeout_seconds: float = option(300.0, "the longest a request may take, queue included", ge=0.001,
                                            le=24 * 3600)

    def __post_init__(self):
        check(self)

    def check_documents(self, docs) -> None:
        """Refuse too many documents, or a text to draw that is too long (whichever field it is in)."""
        if len(docs) > self.max_documents:
            raise InvalidRequest(
                f"too many documents: {len(docs)} > max_documents={self.max_documents}; split the request"
            )
        for index, doc in enumerate(docs):
            field = "text" if doc.text is not None else "prompt"
            text = getattr(doc, field)
            if text is not None and len(text) > self.max_prompt_chars:
                raise InvalidRequest(
                    f"{field} of document {index} too long: {len(text)} characters > "
                    f"max_prompt_chars={self.max_prompt_chars}; shorten it"
                )

    def check_transcription(self, *, audio_seconds: float, beam_size: int) -> float:
        """The work of a transcription, in beam-seconds; refused over max_audio_beam_seconds."""
        work = audio_seconds * beam_size
        if work > self.max_audio_beam_seconds:
            raise InvalidRequest(
                f"request too long to transcribe: {audio_seconds:.1f} s of audio x beam_size={beam_size} = "
                f"{work:.0f} beam-seconds > max_audio_beam_seconds={self.max_audio_beam_seconds:g}; "
                "send shorter audio, fewer documents or a smaller beam_size"
            )
        return work

    def check_work(self, *, documents: int, num_images: int, steps: int, width: int, height: int) -> float:
        """The work of a request's images, in megapixel-steps; refused over max_megapixel_steps."""
        work = documents * num_images * steps * width * height / MEGA
        if work > self.max_megapixel_steps:
            raise InvalidRequest(
                f"request too large: {documents} document(s) x num_images={num_images} x steps={steps} x "
                f"{width}x{height} = {work:.1f} megapixel-steps > max_megapixel_steps={self.max_megapixel_steps:g}; "
                "ask for fewer images, fewer steps or a smaller size"
            )
        return work

    def check_total_work(self, works: list[float]) -> float:
        """The work of documents drawn at sizes and steps of their own (edits), together; refused
        over max_megapixel_steps."""
        work = sum(works)
        if work > self.max_megapixel_steps:
            raise InvalidRequest(f"request too large: its {len(works)} documents take {work:.1f} megapixel-steps > "
                                 f"max_megapixel_steps={self.max_megapixel_steps:g}; send fewer documents, images or "
                                 "steps, or smaller images")
        return work


def max_request_bytes(audio: AudioLimits, request: RequestLimits) -> int:
    """The largest request the gateway accepts (a gRPC message): every document at its largest
    audio, and a mebibyte for the rest."""
    return request.max_documents * audio.max_audio_bytes + MEGA


def max_body_bytes(route: str, max_request_bytes: int, max_audio_bytes: int) -> int:
    """The largest HTTP body each kind of route accepts (never over max_request_bytes): "audio", a
    form with one audio file; "documents", Jina's JSON route, whose bytes are decimal numbers (up
    to 4 characters a byte, and its parsing costs many times its size in memory: one file's
    worth — more files go over gRPC); "fields", a JSON or form request without audio; "images", a
    form with an image to edit and its mask, or audio and an image to refine."""
    sizes = {"audio": max_audio_bytes + MEGA, "documents": 4 * max_audio_bytes + MEGA, "fields": MEGA,
             "images": max(max_audio_bytes, MAX_EDIT_IMAGE_BYTES) + MAX_EDIT_IMAGE_BYTES + MEGA}
    return min(sizes[route], max_request_bytes * (4 if route == "documents" else 1))


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on the gateway's HTTP connections (its `uses_with`): a connection that has not sent a
    whole request head within `header_timeout_seconds` (idle, or sending it slowly) is closed; a
    body that pauses for as long, or arrives slower than `min_body_bytes_per_second` after that
    grace, is refused (408); past `max_connections` open at once a new one is closed at once."""

    header_timeout_seconds: float = option(10.0, "the longest a connection may take to send a whole request head",
                                           ge=0.1, le=3600)
    max_connections: int = option(1000, "HTTP connections open at once; a new one past it is closed at once",
                                  ge=1, le=1_000_000)
    min_body_bytes_per_second: int = option(16 * 1024, "the slowest a request body may arrive, on average, after "
                                            "header_timeout_seconds (a 25 MB file: 26 minutes)", ge=1, le=2**30)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class KeyLimits:
    """Bounds on each API key at the gateway (its `uses_with`): a token bucket of
    `requests_per_minute_per_key` requests, refilled at that many a minute (a key may send a
    minute's worth at once); past it a request is refused (429, RESOURCE_EXHAUSTED) with when to
    retry. Every HTTP request with a key counts (health, readiness and kept images ask none), and
    every gRPC data request. Unset: no rate; without keys nothing is counted."""

    requests_per_minute_per_key: Optional[float] = option(None, "requests one API key may send a minute; unset: any",
                                                          ge=1, le=1e6)

    def __post_init__(self):
        check(self)
