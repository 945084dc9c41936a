"""The OpenAI-compatible API, mapped onto the Flow: what the OpenAI SDKs, curl and the tools built
on them send becomes this project's options and documents, and the documents that come back
become OpenAI's answers. No server here: the gateway calls these functions.

Routes (under /v1): `audio/transcriptions` and `audio/translations` (multipart; the Whisper
executor alone), `images/generations` (JSON; the diffusion executor alone), `speech-to-image`
(multipart: the whole pipeline, this project's own), `models`. Errors answer in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with one line and never a stack.
"""

import base64
import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

from .. import errors
from ..asr.options import LANGUAGES, TranscribeOptions
from ..errors import InvalidRequest, Speech2ImageError, UnknownModel
from ..imaging.options import GenerateOptions
from ..options import merge

WHISPER_ALIAS = "whisper-1"  # tools hard-code OpenAI's model name: it means the Whisper model served here
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
IMAGE_FORMATS = ("b64_json", "url")
# OpenAI's image options this server has no equivalent for: refused, never silently ignored
UNSUPPORTED_IMAGE_OPTIONS = ("quality", "style", "background", "moderation", "output_format", "output_compression",
                             "partial_images", "stream")

# error class → HTTP status and OpenAI error type; the first match wins (subclasses first)
STATUSES: list[tuple[type, int, str]] = [
    (errors.NotFound, 404, "invalid_request_error"),
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


def executor_error(name: str, args: Sequence[str]) -> Speech2ImageError:
    """One of the project's errors, rebuilt from the class name and args (as strings) an executor's
    answer carries: its message, and for Busy the seconds to wait."""
    error_class = getattr(errors, name, None)
    if isinstance(error_class, type) and issubclass(error_class, Speech2ImageError):
        return error_class(*(args or [name]))
    return errors.GenerationError(f"the {name} error of an executor: see the server log")


# --- requests --------------------------------------------------------------------------------

def _fields(form: dict, allowed: tuple[str, ...]) -> dict:
    unknown = sorted(set(form) - set(allowed))
    if unknown:
        raise InvalidRequest(f"unknown parameter {unknown[0]!r}: this route takes {', '.join(allowed)}")
    return {k: v for k, v in form.items() if v not in (None, "", [])}


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidRequest(f"invalid {name}={value!r}: allowed {', '.join(choices)}")
    return value


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


TRANSCRIPTION_FIELDS = ("model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]")


def transcription_request(form: dict, task: str) -> TranscriptionRequest:
    """The form of /v1/audio/transcriptions (task transcribe) or /translations (translate: no language)."""
    allowed = TRANSCRIPTION_FIELDS if task == "transcribe" else tuple(f for f in TRANSCRIPTION_FIELDS if f != "language")
    fields = _fields(form, allowed)
    granularities = fields.get("timestamp_granularities[]", [])
    granularities = [granularities] if isinstance(granularities, str) else list(granularities)
    for granularity in granularities:
        _choice("timestamp_granularities[]", granularity, ("word", "segment"))
    response_format = _choice("response_format", fields.get("response_format", "json"), TRANSCRIPT_FORMATS)
    parameters = {"task": task, "language": fields.get("language"), "initial_prompt": fields.get("prompt"),
                  "temperature": fields.get("temperature"), "word_timestamps": "word" in granularities}
    options = merge(TranscribeOptions(), {k: v for k, v in parameters.items() if v is not None})
    return TranscriptionRequest(options, response_format, "word" in granularities, fields.get("model"))


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    prompt: Optional[str]
    options: GenerateOptions
    response_format: str
    model: Optional[str]


IMAGE_FIELDS = ("prompt", "model", "n", "size", "response_format", "user", "seed", "steps", "guidance_scale",
                "negative_prompt", "scheduler")


def image_request(body: dict[str, Any], needs_prompt: bool = True) -> ImageRequest:
    """The JSON of /v1/images/generations (or the image fields of /v1/speech-to-image)."""
    unsupported = sorted(set(body) & set(UNSUPPORTED_IMAGE_OPTIONS))
    if unsupported:
        raise InvalidRequest(f"unsupported parameter {unsupported[0]!r}: this server draws with diffusers; "
                             f"it takes {', '.join(IMAGE_FIELDS)}")
    fields = _fields(body, IMAGE_FIELDS)
    prompt = fields.get("prompt")
    if needs_prompt and (not isinstance(prompt, str) or not prompt.strip()):
        raise InvalidRequest("missing prompt: say what to draw (a string)")
    parameters = {name: fields[name] for name in ("seed", "steps", "guidance_scale", "negative_prompt", "scheduler")
                  if name in fields}
    if "n" in fields:
        parameters["num_images"] = fields["n"]
    if "size" in fields and fields["size"] != "auto":
        width, _, height = str(fields["size"]).lower().partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise InvalidRequest(f"invalid size={fields['size']!r}: use WIDTHxHEIGHT, e.g. 512x512, or auto")
        parameters.update(width=int(width), height=int(height))
    response_format = _choice("response_format", fields.get("response_format", "b64_json"), IMAGE_FORMATS)
    return ImageRequest(prompt, merge(GenerateOptions(), parameters), response_format, fields.get("model"))


SPEECH_TO_IMAGE_FIELDS = ("model", "image_model", "language", "prompt", "temperature", "n", "size",
                          "response_format", "user", "seed", "steps", "guidance_scale", "negative_prompt", "scheduler")


def speech_to_image_request(form: dict) -> tuple[TranscriptionRequest, ImageRequest]:
    """The form of /v1/speech-to-image: a file, the Whisper options (model, language, prompt,
    temperature: task auto, English out) and the image options (image_model, n, size, …)."""
    fields = _fields(form, SPEECH_TO_IMAGE_FIELDS)
    speech = {k: fields[k] for k in ("model", "language", "prompt", "temperature") if k in fields}
    heard = transcription_request(speech, "transcribe")
    heard = dataclasses.replace(heard, options=dataclasses.replace(heard.options, task="auto"))
    image = {k: fields[k] for k in IMAGE_FIELDS if k in fields and k not in ("prompt", "model")}
    if "image_model" in fields:
        image["model"] = fields["image_model"]
    return heard, image_request(image, needs_prompt=False)


def parameters(executor: str, options) -> dict:
    """An options dataclass as Jina parameters addressed to one executor (`whisper__language`…)."""
    return {f"{executor}__{k}": v for k, v in dataclasses.asdict(options).items() if v is not None}


# --- answers ---------------------------------------------------------------------------------

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
