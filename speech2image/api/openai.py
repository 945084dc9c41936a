"""The OpenAI-compatible API, mapped onto the Flow: what the OpenAI SDKs, curl and the tools built
on them send becomes this project's options and documents, and the documents that come back
become OpenAI's answers. No server here: the gateway calls these functions, and its routes take
these request models, whose schemas (bounds and choices from the options dataclasses) are the
OpenAPI document's.

Routes (under /v1): `audio/transcriptions` and `audio/translations` (multipart; the Whisper
executor alone), `images/generations` (JSON; the diffusion executor alone), `speech-to-image`
(multipart: the whole pipeline, this project's own), `models`. Errors answer in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with one line and never a stack.
"""

import base64
import dataclasses
import json
import time
from typing import Any, Callable, Literal, Optional, Sequence

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from .. import errors
from ..asr.options import LANGUAGES, TranscribeOptions
from ..errors import InvalidRequest, Speech2ImageError, UnknownModel
from ..imaging.options import GenerateOptions
from ..options import request_field, shown

WHISPER_ALIAS = "whisper-1"  # tools hard-code OpenAI's model name: it means the Whisper model served here
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
IMAGE_FORMATS = ("b64_json", "url")
# OpenAI's image options this server has no equivalent for: refused, never silently ignored
UNSUPPORTED_IMAGE_OPTIONS = ("quality", "style", "background", "moderation", "output_format", "output_compression")

# error class → HTTP status and OpenAI error type; the first match wins (subclasses first)
STATUSES: list[tuple[type, int, str]] = [
    (errors.NotFound, 404, "invalid_request_error"),
    (errors.MethodNotAllowed, 405, "invalid_request_error"),
    (errors.MisdirectedHost, 421, "invalid_request_error"),
    (errors.SlowRequest, 408, "invalid_request_error"),
    (errors.ForeignOrigin, 403, "invalid_request_error"),
    (errors.TooLarge, 413, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
    (errors.Unauthenticated, 401, "invalid_request_error"),
    (errors.Busy, 429, "rate_limit_error"),
    (errors.DeadlineExceeded, 504, "server_error"),
    (errors.Unavailable, 503, "server_error"),
    (errors.GenerationError, 503, "server_error"),
    (errors.ModelLoadError, 503, "server_error"),
]


def error_answer(error: Exception) -> tuple[int, dict]:
    """HTTP status and OpenAI error body for an error; a bug is 500 with no detail (it is in the log)."""
    for error_class, status, kind in STATUSES:
        if isinstance(error, error_class):
            code = "model_not_found" if isinstance(error, UnknownModel) else {401: "invalid_api_key"}.get(status)
            return status, error_body(str(error), kind, code=code)
    return 500, error_body("internal error: the server could not answer; the cause is in its log", "server_error")


def retry_after(error: errors.Busy) -> int:
    """The whole seconds a Busy refusal asks a client to wait (Retry-After), at least 1."""
    return max(1, round(error.retry_after))


def error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": " ".join(message.split()), "type": kind, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str = Field(description="one line: what is wrong, and how to fix it")
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error")
    param: Optional[str]
    code: Optional[str] = Field(description="model_not_found, invalid_api_key, or null")


class ErrorAnswer(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


def executor_error(name: str, args: Sequence[str]) -> Speech2ImageError:
    """One of the project's errors, rebuilt from the class name and args (as strings) an executor's
    answer carries: its message, and for Busy the seconds to wait."""
    error_class = getattr(errors, name, None)
    if isinstance(error_class, type) and issubclass(error_class, Speech2ImageError):
        return error_class(*(args or [name]))
    return errors.GenerationError(f"the {name} error of an executor: see the server log")


# --- requests: one pydantic model each, whose schema is the OpenAPI document's ----------------

SIZE = r"^(auto|[0-9]{1,5}x[0-9]{1,5})$"  # ASCII digits only: "²".isdigit() is true, int("²") fails


def _form_schema(schema: dict, model) -> None:
    """A multipart form has no null: a field left out is unset, so its schema offers no null."""
    for field in schema.get("properties", {}).values():
        kept = [branch for branch in field.get("anyOf", ()) if branch != {"type": "null"}]
        if "anyOf" in field and len(kept) == 1:
            del field["anyOf"]
            field.update(kept[0])
        if field.get("default", 0) is None:
            del field["default"]


class TranslationForm(BaseModel):
    """POST /v1/audio/translations: OpenAI's multipart form; English text of the audio."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_schema)
    file: UploadFile = Field(description="the audio file: wav, flac, mp3, ogg/opus, m4a/mp4/aac or webm")
    model: Optional[str] = Field(None, description=f"the served Whisper model (GET /v1/models), or {WHISPER_ALIAS}; "
                                                   "unset: the served one")
    prompt: Optional[request_field(TranscribeOptions, "initial_prompt")] = None
    response_format: Literal[TRANSCRIPT_FORMATS] = "json"
    temperature: Optional[request_field(TranscribeOptions, "temperature")] = None
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        [], alias="timestamp_granularities[]", description="word: word timings (with response_format verbose_json)")
    stream: bool = Field(False, description="true: server-sent events, transcript.text.delta as each segment is "
                                            "decoded, then transcript.text.done")


class TranscriptionForm(TranslationForm):
    """POST /v1/audio/transcriptions: OpenAI's multipart form; text in the spoken language."""

    language: Optional[request_field(TranscribeOptions, "language")] = None


class ImageOptions(BaseModel):
    """The image options of /v1/images/generations and /v1/speech-to-image: OpenAI's and this
    server's (seed, steps, guidance_scale, negative_prompt, scheduler). An image's work (n × steps ×
    width × height, max_megapixel_steps) and its size (a quarter to twice the model's native size)
    are checked against the served model."""

    model_config = ConfigDict(extra="forbid")
    n: Optional[request_field(GenerateOptions, "num_images")] = None
    size: Optional[str] = Field(None, pattern=SIZE, description="WIDTHxHEIGHT (multiples of 8, a quarter to twice "
                                                                "the model's native size) or auto: native")
    response_format: Optional[Literal[IMAGE_FORMATS]] = Field(None, description="unset: b64_json")
    user: Optional[str] = Field(None, description="accepted, unused")
    seed: Optional[request_field(GenerateOptions, "seed")] = None
    steps: Optional[request_field(GenerateOptions, "steps")] = None
    guidance_scale: Optional[request_field(GenerateOptions, "guidance_scale")] = None
    negative_prompt: Optional[request_field(GenerateOptions, "negative_prompt")] = None
    scheduler: Optional[request_field(GenerateOptions, "scheduler")] = None
    partial_images: Optional[request_field(GenerateOptions, "partial_images")] = None
    stream: bool = Field(False, description="true: server-sent events, each image's partial images as they form, "
                                            "then image_generation.completed for each image")
    progress: bool = Field(False, description="with stream: also image_generation.progress {index, step, steps} "
                                              "after each denoising step (this server's own event)")


class ImageBody(ImageOptions):
    """POST /v1/images/generations: OpenAI's JSON, with this server's options (JSON's types: a
    number is not a string or a boolean)."""

    model_config = ConfigDict(strict=True)

    prompt: str = Field(pattern=r"\S", description="what to draw (at most max_prompt_chars, 1000 by default)")
    model: Optional[str] = Field(None, description="the served image model (GET /v1/models); unset: it")


class SpeechToImageForm(ImageOptions):
    """POST /v1/speech-to-image: this server's multipart form; the audio, Whisper's options (task
    auto: English out) and the image options; with an image, the words say what to change in it
    (refining: docs/api.md#refine-by-voice)."""

    model_config = ConfigDict(json_schema_extra=_form_schema)
    file: UploadFile = Field(description="the audio file: wav, flac, mp3, ogg/opus, m4a/mp4/aac or webm")
    model: Optional[str] = Field(None, description=f"the served Whisper model, or {WHISPER_ALIAS}; unset: it")
    image_model: Optional[str] = Field(None, description="the served image model; unset: it")
    language: Optional[request_field(TranscribeOptions, "language")] = None
    prompt: Optional[request_field(TranscribeOptions, "initial_prompt")] = None
    temperature: Optional[request_field(TranscribeOptions, "temperature")] = None
    image: Optional[UploadFile] = Field(None, description="an image to refine (PNG, JPEG or WebP): the spoken words "
                                                          "say what to change; its settings chunk gives its prompt "
                                                          "and seed")
    strength: Optional[request_field(GenerateOptions, "strength")] = None


class ImageEditForm(ImageOptions):
    """POST /v1/images/edits: OpenAI's multipart form, with this server's options. No mask: image to
    image; a mask (transparent where the image is repainted): inpainting."""

    model_config = ConfigDict(json_schema_extra=_form_schema)
    image: Optional[UploadFile] = Field(None, description="the image to edit: PNG, JPEG or WebP")
    images: list[UploadFile] = Field([], alias="image[]", description="images sent as a list: the first is edited")
    mask: Optional[UploadFile] = Field(None, description="a PNG of the image's size, transparent (alpha 0) where the "
                                                         "image is repainted")
    prompt: str = Field(pattern=r"\S", description="what the edited image shows")
    model: Optional[str] = Field(None, description="the served image model (GET /v1/models); unset: it")
    strength: Optional[request_field(GenerateOptions, "strength")] = None

    def edited(self) -> UploadFile:
        """The image to edit: `image`, else the first of `image[]`."""
        if self.image is None and not self.images:
            raise InvalidRequest("missing image: send the image to edit as the form field image")
        return self.image or self.images[0]


def invalid(error: dict, taken: Sequence[str]) -> InvalidRequest:
    """A request model's first validation error (pydantic's) as one line: the field, its value, and
    what it should be (or the fields the route takes)."""
    loc = error.get("loc", ())[1:]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "body"
    kind, message = error.get("type", ""), str(error.get("msg", "malformed"))
    if kind == "extra_forbidden" and len(loc) == 1:
        if where in UNSUPPORTED_IMAGE_OPTIONS:
            return InvalidRequest(f"unsupported parameter {where!r}: this server draws with diffusers; it takes "
                                  f"{', '.join(taken)}")
        return InvalidRequest(f"unknown parameter {where!r}: this route takes {', '.join(taken)}")
    if kind == "missing":
        return InvalidRequest(f"missing {where}: this route needs it ({', '.join(taken)})")
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
    value = error.get("input")
    shown_value = f"={shown(value)}" if value is None or isinstance(value, (str, int, float, bool)) else ""
    if not message[1:2].isupper():  # "Input should be" → "input should be"; "JSON decode error" stays
        message = message[:1].lower() + message[1:]
    return InvalidRequest(" ".join(f"invalid {where}{shown_value}: {message}".split()))


def check_model(model: Optional[str], served: str, kind: str, aliases: tuple[str, ...] = ()) -> None:
    """Refuse a `model` that is neither the served one (nor one of its aliases); unset is fine."""
    if model and model != served and model not in aliases:
        names = ", ".join((served, *aliases))
        raise UnknownModel(f"the {kind} model {model!r} is not served here; use {names} (GET /v1/models lists them)")


@dataclasses.dataclass(frozen=True)
class TranscriptionRequest:
    options: TranscribeOptions
    response_format: str
    words: bool  # timestamp_granularities[] includes "word"
    model: Optional[str]
    stream: bool = False
    progress: bool = False  # image_generation.progress events in a stream


def transcription_request(form: TranslationForm, task: str) -> TranscriptionRequest:
    """The form of /v1/audio/transcriptions (task transcribe) or /translations (translate)."""
    words = "word" in form.timestamp_granularities
    return TranscriptionRequest(_transcribe_options(form, task, words), form.response_format, words, form.model,
                                form.stream)


def _transcribe_options(form, task: str, words: bool = False) -> TranscribeOptions:
    chosen = {"task": task, "language": getattr(form, "language", None), "initial_prompt": form.prompt or None,
              "temperature": form.temperature, "word_timestamps": words}
    return dataclasses.replace(TranscribeOptions(), **{k: v for k, v in chosen.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    prompt: Optional[str]
    options: GenerateOptions
    response_format: str
    model: Optional[str]
    stream: bool = False
    progress: bool = False  # image_generation.progress events in a stream


def image_request(body: ImageOptions, prompt: Optional[str] = None, model: Optional[str] = None) -> ImageRequest:
    """The image options of /v1/images/generations (with its prompt and model) or /v1/speech-to-image."""
    chosen = {"num_images": body.n, "seed": body.seed, "steps": body.steps, "guidance_scale": body.guidance_scale,
              "negative_prompt": body.negative_prompt, "scheduler": body.scheduler,
              "partial_images": body.partial_images}
    if body.size and body.size != "auto":
        chosen["width"], chosen["height"] = (int(side) for side in body.size.split("x"))
    if not body.stream and (body.partial_images or body.progress):
        asked = "partial_images" if body.partial_images else "progress"
        raise InvalidRequest(f"{asked} is sent in a stream: add stream=true, or leave {asked} out")
    options = dataclasses.replace(GenerateOptions(), **{k: v for k, v in chosen.items() if v is not None})
    return ImageRequest(prompt, options, body.response_format or "b64_json", model, body.stream, body.progress)


def edit_request(form: ImageEditForm) -> ImageRequest:
    """The form of /v1/images/edits: an image request with its strength."""
    return with_strength(image_request(form, form.prompt, form.model), form.strength)


def with_strength(asked: ImageRequest, strength: Optional[float]) -> ImageRequest:
    if strength is None:
        return asked
    return dataclasses.replace(asked, options=dataclasses.replace(asked.options, strength=strength))


def speech_to_image_request(form: SpeechToImageForm) -> tuple[TranscriptionRequest, ImageRequest]:
    """The form of /v1/speech-to-image: Whisper's part (task auto: English out) and the image part."""
    heard = TranscriptionRequest(_transcribe_options(form, "auto"), "json", False, form.model, form.stream)
    if form.strength is not None and form.image is None:
        raise InvalidRequest("strength applies to an image to refine: send the image, or leave strength out")
    return heard, with_strength(image_request(form, model=form.image_model), form.strength)


def parameters(executor: str, options) -> dict:
    """An options dataclass as Jina parameters addressed to one executor (`whisper__language`…)."""
    return {f"{executor}__{k}": v for k, v in dataclasses.asdict(options).items() if v is not None}


# --- answers ---------------------------------------------------------------------------------

class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """GET /v1/models: the served Whisper model, its OpenAI alias, and the served image model."""

    object: Literal["list"]
    data: list[Model]


class Transcript(BaseModel):
    """response_format json."""

    text: str


class TranscriptSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str


class TranscriptWord(BaseModel):
    word: str
    start: float
    end: float


class VerboseTranscript(BaseModel):
    """response_format verbose_json; `words` with timestamp_granularities[] word."""

    task: Optional[str]
    language: str = Field(description="the language's name, e.g. english")
    duration: Optional[float]
    text: str
    segments: list[TranscriptSegment]
    words: Optional[list[TranscriptWord]] = None


class ImageData(BaseModel):
    """One image: b64_json or url, its prompt as revised_prompt, and the settings that made it."""

    model_config = ConfigDict(extra="allow")
    b64_json: Optional[str] = None
    url: Optional[str] = None
    revised_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    model: str


class ImagesAnswer(BaseModel):
    created: int
    data: list[ImageData]


class SpeechToImageAnswer(ImagesAnswer):
    text: Optional[str]
    language: Optional[str]
    task: Optional[str]
    warnings: list[str]
    no_images_reason: Optional[str] = Field(description="why there are no images (no speech found), else null")


def transcript_answer(doc, request: TranscriptionRequest) -> tuple[str, Any]:
    """(media type, body) of a transcription in the asked format."""
    if request.response_format == "text":
        return "text/plain", f"{doc.text}\n"
    if request.response_format in ("srt", "vtt"):
        return "text/plain", subtitles(doc.segments, request.response_format)
    if request.response_format == "json":
        return "application/json", {"text": doc.text}
    answer = {"task": doc.task, "language": LANGUAGES.get(doc.language, doc.language or "").lower(),
              "duration": doc.duration, "text": doc.text,
              "segments": [{"id": k, "start": s.start, "end": s.end, "text": s.text}
                           for k, s in enumerate(doc.segments)]}
    if request.words:
        answer["words"] = [{"word": w.word, "start": w.start, "end": w.end} for s in doc.segments for w in s.words]
    return "application/json", answer


def subtitles(segments, style: str) -> str:
    """SubRip (srt) or WebVTT (vtt) subtitles of the segments."""
    def stamp(seconds: float) -> str:
        milliseconds = round(seconds * 1000)
        hours, rest = divmod(milliseconds, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        whole, milli = divmod(rest, 1000)
        return f"{hours:02d}:{minutes:02d}:{whole:02d}{',' if style == 'srt' else '.'}{milli:03d}"

    cues = [f"{stamp(s.start)} --> {stamp(s.end)}\n{s.text}\n" for s in segments]
    if style == "srt":
        return "\n".join(f"{k}\n{cue}" for k, cue in enumerate(cues, 1))
    return "WEBVTT\n\n" + "\n".join(cues)


def image_data(images, response_format: str, store_url: Callable[[bytes], str]) -> list[dict]:
    """OpenAI's `data` list: each image as b64_json or url, its prompt as revised_prompt, and the
    settings that made it beside them (seed, steps, … — this project's extension)."""
    from ..schema import from_blob

    data = []
    for image in images:
        png = from_blob(image.png)
        entry = {"b64_json": base64.b64encode(png).decode()} if response_format == "b64_json" else {"url": store_url(png)}
        settings = image.model_dump(exclude={"id", "png", "prompt"})
        data.append({**entry, "revised_prompt": image.prompt, **settings})
    return data


def images_answer(images, request: ImageRequest, store_url: Callable[[bytes], str]) -> dict:
    return {"created": int(time.time()), "data": image_data(images, request.response_format, store_url)}


def speech_to_image_answer(doc, request: ImageRequest, store_url: Callable[[bytes], str]) -> dict:
    return {"created": int(time.time()), "text": doc.text, "language": doc.language, "task": doc.task,
            "warnings": list(doc.warnings), "no_images_reason": doc.no_images_reason,
            "data": image_data(doc.images, request.response_format, store_url)}


def models_answer(whisper: str, diffusion: str) -> dict:
    """GET /v1/models: the served Whisper and image models (and Whisper's OpenAI alias)."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "speech2image"}
        for name in (whisper, WHISPER_ALIAS, diffusion)]}


# --- streams: server-sent events in OpenAI's shapes --------------------------------------------

class StreamShapes:
    """A streaming call's events (the executors' event documents) as OpenAI's stream events:
    transcript.text.delta / .done, image_generation.partial_image / .completed (with `index` and
    `seed`, so that n > 1 is unambiguous, and each image's settings), and this server's own
    image_generation.progress (each step, when asked for) and speech_to_image.done (the end of a
    pipeline that drew nothing). An edit's images are image_edit.* events, as OpenAI names them."""

    def __init__(self, image: Optional[ImageRequest] = None, kind: str = "image_generation"):
        self.image, self.kind = image, kind
        self.created = int(time.time())
        self.said = False  # a delta was sent: the next one starts with a space
        self.partials: dict[int, int] = {}  # image index → its partial images sent

    def events(self, doc) -> list[dict]:
        from ..schema import IMAGE_COMPLETED, IMAGE_PARTIAL, STEP, TRANSCRIPT_DELTA, TRANSCRIPT_DONE

        if doc.event is None:  # the diffusion step's document when it drew nothing
            return [self.done(doc)] if doc.no_images_reason else []
        if doc.event == TRANSCRIPT_DELTA:
            if not doc.delta:
                return []
            delta, self.said = (" " if self.said else "") + doc.delta, True
            return [{"type": "transcript.text.delta", "delta": delta}]
        if doc.event == TRANSCRIPT_DONE:
            return [{"type": "transcript.text.done", "text": doc.text or "", "language": doc.language,
                     "duration": doc.duration, "task": doc.task, "warnings": list(doc.warnings),
                     "segments": [{"id": k, "start": s.start, "end": s.end, "text": s.text}
                                  for k, s in enumerate(doc.segments)]}]
        if doc.event == STEP:
            if not (self.image and self.image.progress):
                return []
            return [{"type": f"{self.kind}.progress", "index": doc.image_index, "step": doc.step,
                     "steps": doc.total_steps}]
        if doc.event in (IMAGE_PARTIAL, IMAGE_COMPLETED):
            return [self._image(doc, doc.images[0])]
        return []

    def done(self, doc) -> dict:
        """speech_to_image.done: the pipeline's end when it drew nothing (no speech found)."""
        return {"type": "speech_to_image.done", "text": doc.text, "no_images_reason": doc.no_images_reason}

    def _image(self, event, image) -> dict:
        from ..schema import IMAGE_PARTIAL, from_blob

        common = {"b64_json": base64.b64encode(from_blob(image.png)).decode(), "created_at": self.created,
                  "size": f"{image.width}x{image.height}", "output_format": "png", "background": "opaque",
                  "quality": "auto", "index": event.image_index, "seed": image.seed}
        if event.event == IMAGE_PARTIAL:
            number = self.partials.get(event.image_index, 0)
            self.partials[event.image_index] = number + 1
            return {"type": f"{self.kind}.partial_image", **common, "partial_image_index": number,
                    "step": event.step, "steps": event.total_steps}
        settings = image.model_dump(exclude={"id", "png", "prompt", "partial"})
        return {"type": f"{self.kind}.completed", **common, "usage": NO_TOKENS, "revised_prompt": image.prompt,
                **settings}


# OpenAI's images count tokens; these are drawn by diffusers, which counts none: zeros, as the
# SDKs' completed event declares a usage
NO_TOKENS = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}, "output_tokens": 0,
             "total_tokens": 0}


def server_sent(event: dict) -> bytes:
    """One server-sent event: its type as the event name, the JSON as its data."""
    name = event.get("type", "error")
    return f"event: {name}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def stream_error(error: Exception) -> dict:
    """The last event of a stream that failed after it opened: OpenAI's error body (the SDKs raise it)."""
    return error_answer(error)[1]
