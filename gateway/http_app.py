"""The HTTP side of the gateway: OpenAI-compatible routes and Jina's JSON document route.

Thin: each route takes one pydantic model (`speech2image.api.openai`'s, or Jina's request below),
whose schema — with the options' bounds and choices — is the route's in `/openapi.json`, and
whose refusal is a one-line 400; it turns the model into documents and options, sends them
through the Flow with Jina's streamer (to one executor, or both), and turns the documents that
come back into the answer. Every answer a route can give is in the document with its shape.
Before any route: a body over what the route takes is refused (413), and with keys every route
but the health and readiness checks and the kept images needs `Authorization: Bearer KEY` (401)
and counts against the key's rate (429 past it).
Errors answer in one line, never with a stack; a method a route does not have is 405.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from typing import Annotated, Any, Literal, Optional

from docarray import DocList
from fastapi import Depends, FastAPI, File, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.admission import Admission
from gateway.grpc_guard import one_line_details
from gateway.streaming import EXECUTORS, pipeline
from speech2image.api import images, openai
from speech2image.api.images import ImageStore
from speech2image.api.keys import ApiKeys
from speech2image.asr.options import TranscribeOptions
from speech2image.errors import (
    Busy,
    ForeignOrigin,
    InvalidRequest,
    MethodNotAllowed,
    MisdirectedHost,
    NotFound,
    SlowRequest,
    Speech2ImageError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from speech2image.imaging.options import GenerateOptions
from speech2image.imaging.pictures import checked_picture
from speech2image.limits import MAX_EDIT_IMAGE_BYTES, ConnectionLimits, max_body_bytes
from speech2image.options import request_field
from speech2image.schema import EMPTY_DOCUMENT, FILLED_BY, SpeechImageDoc, to_blob
from speech2image.serving.network import HostPolicy

OPEN = ("/", "/dry_run")  # health (Jina installs GET /) and readiness: never behind a key
AUDIO_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
IMAGE_ROUTES = ("/v1/images/edits", "/v1/speech-to-image")  # an image with its mask, or audio with an image
CALLER = "speech2image_caller"  # the request's key id (None without keys), in the ASGI scope's state
KEPT_IMAGES = "/v1/images/"  # GET by a 192-bit name only its answer holds, for an hour: a capability, like a signed URL
NO_SUCH_IMAGE = "no such image: it was never stored, or it is forgotten (images are kept for an hour)"
DOCS = DocList[SpeechImageDoc]
# Jina's parameters become protobuf Structs, converted recursively, sent to every executor and echoed
MAX_PARAMETERS, MAX_PARAMETER_DEPTH, MAX_PARAMETER_VALUES = 64, 8, 1000


class ImageName(StringConvertor):
    """A kept image's name in a path: other paths under /v1/images/ (POST generations) are not one."""

    regex = images.NAME


register_url_convertor("image_name", ImageName())


def create_app(streamer, dry_run, *, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int,
               max_documents: int, store: ImageStore, admission: Admission, hosts: HostPolicy,
               connections: ConnectionLimits = ConnectionLimits(), public_url: Optional[str] = None) -> FastAPI:
    """The HTTP app on Jina's `streamer`; `dry_run()` tells whether every part of the Flow answers.
    Images kept for `response_format: url` are linked under `public_url`, or by a relative URL."""
    # no /docs or /redoc: their pages load Swagger and ReDoc from a CDN; /openapi.json is the document
    app = FastAPI(title="speech2image", description="Speech to images: OpenAI-compatible routes, and Jina's "
                                                    "document route.", version="0.1.0", docs_url=None,
                  redoc_url=None)
    app.add_middleware(Guard, keys=keys, max_request_bytes=max_request_bytes, max_audio_bytes=max_audio_bytes,
                       admission=admission, hosts=hosts, connections=connections)
    JinaRequest = jina_request(max_documents)
    document_the_guard(app, keys, rated=bool(keys and admission.rates))
    served: dict[str, str] = {}

    async def flow(request: Optional[Request], docs, parameters: dict, target: Optional[str] = None,
                   endpoint: str = "/generate") -> list:
        """Documents through the Flow (to the `target` executor alone when given), with the request's
        deadline and caller; its executor calls are cancelled if the client disconnects."""
        from jina.excepts import InternalNetworkError

        request_id = uuid.uuid4().hex
        streamed = asyncio.ensure_future(_answers(streamer.stream_docs(
            docs=docs, exec_endpoint=endpoint, parameters=admission.admit(parameters, caller=_caller(request)),
            request_id=request_id, target_executor=f"^{target}$" if target else None, return_results=True,
            return_type=DOCS)))
        try:
            while not streamed.done():
                await asyncio.wait({streamed}, timeout=0.25)
                if not streamed.done() and request is not None and await request.is_disconnected():
                    admission.cancel(request_id)  # nobody waits for it: the replicas stop its work
                    streamed.cancel()
            return streamed.result()
        except InternalNetworkError as e:
            raise Unavailable(one_line_details(e.details())) from e
        finally:
            streamed.cancel()

    def events(request: Request, doc: SpeechImageDoc, parameters: dict, executors: tuple[str, ...]):
        return pipeline(admission, doc, parameters, executors, caller=_caller(request))

    async def server_sent_events(request: Request, answers, shapes: openai.StreamShapes) -> StreamingResponse:
        """The events as a text/event-stream. Until the first one, an error is the route's usual
        answer (400, 429, 503…); after it, one error event ends the stream. A client that closes
        the stream, before or after it opened, closes `answers`: the replica stops its work."""
        first = asyncio.ensure_future(anext(answers))
        try:
            while not first.done():
                await asyncio.wait({first}, timeout=0.25)
                if not first.done() and await request.is_disconnected():
                    first.cancel()
                    await answers.aclose()
                    return Response(status_code=204)  # nobody to tell: the work is stopped, no error logged
            opening = first.result()
        except StopAsyncIteration:  # no event at all: an empty stream
            opening = SpeechImageDoc()
        except BaseException:
            first.cancel()
            await answers.aclose()
            raise

        async def body():
            async with contextlib.aclosing(answers):
                try:
                    for shaped in shapes.events(opening):
                        yield openai.server_sent(shaped)
                    async for event in answers:
                        for shaped in shapes.events(event):
                            yield openai.server_sent(shaped)
                except Speech2ImageError as error:
                    yield openai.server_sent(openai.stream_error(error))
                except Exception as error:  # a bug: the stack to the log, one line to the client
                    logging.getLogger(__name__).exception("a stream failed")
                    yield openai.server_sent(openai.stream_error(error))

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def models() -> dict[str, str]:
        if not served:
            [doc] = await flow(None, DOCS([SpeechImageDoc()]), {}, endpoint="/models")
            served.update(whisper=doc.asr_model, diffusion=doc.images[0].model)
        return served

    @app.exception_handler(Speech2ImageError)
    async def speech2image_error(request: Request, error: Speech2ImageError):
        return _error(request, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        loc = first.get("loc", ())
        if loc[1:2] == ("data",) and len(loc) > 2 and isinstance(loc[2], int):
            return _error(request, _invalid_document(loc[2], [str(part) for part in loc[3:]], first))
        return _error(request, openai.invalid(first, _fields_taken(request)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        path = request.scope["path"]
        if error.status_code == 404 and request.method == "GET" and path.startswith(KEPT_IMAGES):
            return _error(request, NotFound(NO_SUCH_IMAGE))  # not even the shape of an image's name
        if error.status_code == 404:
            return _error(request, NotFound(f"no route {request.method} {path}; GET /v1/models, POST "
                                            "/v1/audio/transcriptions, /v1/audio/translations, /v1/images/generations, "
                                            "/v1/speech-to-image (the routes are in /openapi.json)"))
        if error.status_code == 405:
            allowed = ", ".join(sorted((error.headers or {}).get("Allow", "").split(", ")))
            return _error(request, MethodNotAllowed(
                f"method {request.method} not allowed on {path}: use {allowed}", allowed))
        return _error(request, InvalidRequest(f"{error.detail}"))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception):
        return _error(request, error)  # 500, no detail: the stack goes to the log only

    @app.get("/dry_run", summary="Readiness: every part of the Flow answers", responses={
        200: {"model": Readiness}, 503: {"model": Readiness, "description": REASONS[503]}})
    async def ready():
        if admission.draining:
            return JSONResponse({"code": 1, "description": "draining: this server is stopping"}, status_code=503)
        status = await dry_run()
        return JSONResponse({"code": status.code, "description": "ready" if status.code == 0 else "not ready"},
                            status_code=200 if status.code == 0 else 503)

    @app.get("/v1/models", summary="The served Whisper and image models",
             responses={200: {"model": openai.ModelList}, **refusals(503)})
    async def list_models():
        names = await models()
        return openai.models_answer(names["whisper"], names["diffusion"])

    async def hear(task: str, request: Request, form: openai.TranslationForm):
        asked = openai.transcription_request(form, task)
        openai.check_model(asked.model, (await models())["whisper"], "Whisper", (openai.WHISPER_ALIAS,))
        audio = SpeechImageDoc(audio=to_blob(await form.file.read()))
        if asked.stream:
            return await server_sent_events(request, events(
                request, audio, openai.parameters("whisper", asked.options), ("whisper",)), openai.StreamShapes())
        [doc] = await flow(request, DOCS([audio]), openai.parameters("whisper", asked.options), target="whisper")
        media, body = openai.transcript_answer(doc, asked)
        return PlainTextResponse(body) if media == "text/plain" else body

    @app.post("/v1/audio/transcriptions", summary="Speech to text in the spoken language (OpenAI)",
              responses={**TRANSCRIPT, **refusals(400, 404, 429, 503, 504)}, openapi_extra=AUDIO_FORM,
              dependencies=ONCE_EACH)
    async def transcriptions(request: Request, form: Annotated[openai.TranscriptionForm, File()]):
        return await hear("transcribe", request, form)

    @app.post("/v1/audio/translations", summary="Speech to English text (OpenAI)",
              responses={**TRANSCRIPT, **refusals(400, 404, 429, 503, 504)}, openapi_extra=AUDIO_FORM,
              dependencies=ONCE_EACH)
    async def translations(request: Request, form: Annotated[openai.TranslationForm, File()]):
        return await hear("translate", request, form)

    @app.post("/v1/images/generations", summary="Text to images (OpenAI), with this server's extensions",
              responses={200: {"model": openai.ImagesAnswer, "content": EVENT_STREAM}, **refusals(400, 404, 429, 503, 504)})
    async def generations(request: Request, body: openai.ImageBody):
        asked = openai.image_request(body, body.prompt, body.model)
        openai.check_model(asked.model, (await models())["diffusion"], "image")
        if asked.stream:
            return await server_sent_events(request, events(
                request, SpeechImageDoc(prompt=asked.prompt), openai.parameters("diffusion", asked.options),
                ("diffusion",)), openai.StreamShapes(asked))
        [doc] = await flow(request, DOCS([SpeechImageDoc(prompt=asked.prompt)]),
                           openai.parameters("diffusion", asked.options), target="diffusion")
        return openai.images_answer(doc.images, asked, image_url(store, request, public_url))

    @app.post("/v1/images/edits", summary="An image edited as a prompt says (OpenAI): image to image, or inpainting "
                                           "with a mask", responses={200: {"model": openai.ImagesAnswer,
                                                                           "content": EVENT_STREAM},
                                                                     **refusals(400, 404, 429, 503, 504)},
              openapi_extra=IMAGE_FORM, dependencies=ONCE_EACH)
    async def edits(request: Request, form: Annotated[openai.ImageEditForm, File()]):
        asked = openai.edit_request(form)
        openai.check_model(asked.model, (await models())["diffusion"], "image")
        image = checked(await form.edited().read(), "image")
        mask = checked(await form.mask.read(), "mask") if form.mask is not None else None
        doc = SpeechImageDoc(prompt=asked.prompt, edit_image=image, edit_mask=mask)
        if asked.stream:
            return await server_sent_events(request, events(
                request, doc, openai.parameters("diffusion", asked.options), ("diffusion",)),
                openai.StreamShapes(asked, kind="image_edit"))
        [answer] = await flow(request, DOCS([doc]), openai.parameters("diffusion", asked.options), target="diffusion")
        return openai.images_answer(answer.images, asked, image_url(store, request, public_url))

    @app.post("/v1/speech-to-image", summary="Speech to images: the whole pipeline (this server's own route)",
              responses={200: {"model": openai.SpeechToImageAnswer, "content": EVENT_STREAM},
                         **refusals(400, 404, 429, 503, 504)},
              openapi_extra=SPEECH_IMAGE_FORM, dependencies=ONCE_EACH)
    async def speech_to_image(request: Request, form: Annotated[openai.SpeechToImageForm, File()]):
        heard, image = openai.speech_to_image_request(form)
        names = await models()
        openai.check_model(heard.model, names["whisper"], "Whisper", (openai.WHISPER_ALIAS,))
        openai.check_model(image.model, names["diffusion"], "image")
        audio = SpeechImageDoc(audio=to_blob(await form.file.read()),  # an image is checked before Whisper's work
                               edit_image=checked(await form.image.read(), "image") if form.image is not None else None)
        parameters = {**openai.parameters("whisper", heard.options), **openai.parameters("diffusion", image.options)}
        if image.stream:
            return await server_sent_events(request, events(request, audio, parameters, EXECUTORS),
                                            openai.StreamShapes(image))
        [doc] = await flow(request, DOCS([audio]), parameters)
        return openai.speech_to_image_answer(doc, image, image_url(store, request, public_url))

    @app.post("/generate", summary="Jina's document route: SpeechImageDoc documents as JSON",
              responses={200: {"model": JinaAnswer}, **refusals(400, 429, 503, 504, shape=JinaError)})
    async def generate(request: Request, body: JinaRequest):
        target = body.target_executor or (body.header.target_executor if body.header else None)
        parameters = body.parameters.model_dump(exclude_none=True) if body.parameters else {}
        docs = await flow(request, DOCS([doc.speech_image_doc() for doc in body.data]), parameters, target=target)
        for doc in docs:  # an image sent to be edited is not sent back (a request to Whisper alone keeps it)
            doc.edit_image = doc.edit_mask = None
        # the answer may hold megabytes of images as numbers: encoded off the event loop
        return Response(await asyncio.to_thread(_jina_answer, parameters, docs), media_type="application/json")

    @app.get("/v1/images/{name:image_name}", summary="An image of a response_format=url answer, while it is kept",
             response_class=Response, responses={
                 200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                       "description": "the PNG"},
                 **refusals(404)})
    async def kept_image(name: Annotated[str, Path(pattern=f"^{images.NAME}$")]):
        png = store.get(name)
        if png is None:
            raise NotFound(NO_SUCH_IMAGE)
        return Response(png, media_type="image/png")

    return app


# --- Jina's document route -----------------------------------------------------------------------

Executor = Literal[EXECUTORS]
INPUTS = ("audio", "waveform", "uri", "prompt")
EDITS = ("edit_image", "edit_mask")  # what a document may carry beside its input


class DocumentInput(BaseModel):
    """A document as a client sends it: audio (a file's bytes), a waveform, a uri the operator
    allowed or a prompt; and an image to edit with its mask. The fields the executors fill come
    empty, as Jina's clients send them, or not at all (a text to draw is a prompt here)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in INPUTS]})
    id: Optional[str] = None
    audio: Optional[list[Annotated[int, Field(ge=0, le=255)]]] = Field(
        None, min_length=1, description="the bytes of an audio file (wav, flac, mp3, ogg/opus, m4a/mp4/aac, webm), "
                                        "as numbers")
    waveform: Optional[list[Annotated[float, Field(ge=-1, le=1)]]] = Field(
        None, min_length=1, description="mono samples at 16 kHz")
    uri: Optional[str] = Field(None, description="a path or http(s) URL the operator allowed (allowed_audio_dirs, "
                                                 "allowed_audio_urls); refused otherwise")
    prompt: Optional[str] = Field(None, min_length=1, description="text to draw, when there is no audio")
    edit_image: Optional[list[Annotated[int, Field(ge=0, le=255)]]] = Field(
        None, min_length=1, max_length=MAX_EDIT_IMAGE_BYTES,
        description="the bytes of an image to edit (PNG, JPEG or WebP), as numbers; spoken words about it refine it")
    edit_mask: Optional[list[Annotated[int, Field(ge=0, le=255)]]] = Field(
        None, min_length=1, max_length=MAX_EDIT_IMAGE_BYTES,
        description="the bytes of a PNG of the image's size, transparent where it is repainted")

    @model_validator(mode="after")
    def _has_input(self):
        if all(getattr(self, name) is None for name in INPUTS):
            raise ValueError(EMPTY_DOCUMENT)
        return self

    def speech_image_doc(self) -> SpeechImageDoc:
        return SpeechImageDoc(**self.model_dump(include={"id", *INPUTS, *EDITS}, exclude_none=True))


def _filled_fields() -> dict:
    """The fields the executors and the gateway fill, each allowed only at its default (empty)."""
    fields = {}
    for name in dict.fromkeys(name for names in FILLED_BY.values() for name in names):
        if name in DocumentInput.model_fields:
            continue
        default = SpeechImageDoc.model_fields[name].get_default()
        if default is None or default is False:
            kind = type(None) if default is None else Literal[False]
        else:  # a list
            kind, default = Annotated[list, Field(max_length=0)], []
        fields[name] = (kind, Field(default, description="the server fills it"))
    return fields


JinaDocument = create_model("JinaDocument", __base__=DocumentInput, **_filled_fields())


def _shape(value: Any) -> tuple[int, int]:
    """How deep lists and objects nest in `value`, and how many values it holds (counted without
    recursion, and only until either is over its bound: a client chooses them)."""
    deepest, values, stack = 0, 0, [(value, 1)]
    while stack and deepest <= MAX_PARAMETER_DEPTH and values <= MAX_PARAMETER_VALUES:
        item, depth = stack.pop()
        values += 1
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest, values


class ParametersInput(BaseModel):
    """Jina's request parameters: the executors' request options (by name, or for one executor as
    `whisper__NAME` or `diffusion__NAME`), the client's `timeout` in seconds, and other keys (each
    executor ignores what it does not take); at most 64 keys, nested at most 8 deep."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"maxProperties": MAX_PARAMETERS})
    timeout: Optional[float] = Field(None, gt=0, description="the client's time, in seconds: the request's deadline")

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, value):
        if isinstance(value, dict) and len(value) > MAX_PARAMETERS:
            raise ValueError(f"{len(value)} keys, more than {MAX_PARAMETERS}; send the options you mean")
        if isinstance(value, dict):
            depth, values = _shape(value)
            if depth > MAX_PARAMETER_DEPTH:
                raise ValueError(f"nested deeper than {MAX_PARAMETER_DEPTH} levels; send options as name: value")
            if values > MAX_PARAMETER_VALUES:
                raise ValueError(f"more than {MAX_PARAMETER_VALUES} values; send the options you mean")
        return value


def _option_fields() -> dict:
    fields = {}
    for executor, option_class in (("whisper", TranscribeOptions), ("diffusion", GenerateOptions)):
        for field in dataclasses.fields(option_class):
            kind = (Optional[request_field(option_class, field.name)], None)
            fields.update({field.name: kind, f"{executor}__{field.name}": kind})
    return fields


JinaParameters = create_model("JinaParameters", __base__=ParametersInput, **_option_fields())


class JinaHeader(BaseModel):
    """Jina's request header, as its HTTP client sends it (this route is /generate, whatever
    exec_endpoint says)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: Optional[str] = None
    exec_endpoint: Optional[str] = None
    target_executor: Optional[Executor] = None
    timeout: Optional[int] = None


class JinaRequestBase(BaseModel):
    """POST /generate: what Jina's HTTP client posts — documents (at most max_documents, 16 by
    default), parameters, and an optional target executor."""

    model_config = ConfigDict(extra="forbid", strict=True)
    data: list[JinaDocument]
    parameters: Optional[JinaParameters] = None
    target_executor: Optional[Executor] = Field(None, description="that executor alone; unset: the whole Flow")
    header: Optional[JinaHeader] = None
    exec_endpoint: Optional[str] = None


def jina_request(max_documents: int) -> type:
    """The /generate model of a gateway that takes at most `max_documents` documents: they are
    counted before any is built (a small body of many empty documents costs nothing)."""

    class JinaRequest(JinaRequestBase):
        data: list[JinaDocument] = Field(max_length=max_documents)

        @model_validator(mode="before")
        @classmethod
        def _counted(cls, value):
            data = value.get("data") if isinstance(value, dict) else None
            if isinstance(data, list) and len(data) > max_documents:
                raise ValueError(f"too many documents: {len(data)} > max_documents={max_documents}; split the "
                                 "request, or send many files over gRPC")
            return value

    return JinaRequest


class JinaAnswer(BaseModel):
    header: dict = Field(description='{"status": {"code": 0}}')
    parameters: dict
    data: list[dict] = Field(description="the documents, filled: SpeechImageDoc as JSON")


class JinaException(BaseModel):
    name: str
    args: list[str]


class JinaStatus(BaseModel):
    code: int
    description: str
    exception: JinaException


class JinaHeaderStatus(BaseModel):
    status: JinaStatus


class JinaError(BaseModel):
    """Jina's status header, which its HTTP client reads: the error's name and one line."""

    header: JinaHeaderStatus


class Readiness(BaseModel):
    code: int = Field(description="0: ready")
    description: str


# --- answers and their documentation -------------------------------------------------------------

REASONS = {
    400: "invalid request: one line naming the field and how to fix it",
    401: "missing or unknown API key",
    403: "a request that changes something, from another site's page (Origin)",
    404: "no such model or image",
    408: "the body paused too long or arrived too slowly",
    413: "the body is over what the route takes",
    421: "a host name this server is not served under (app.py --allowed-hosts)",
    429: "busy (every replica's queue is full) or over the key's rate; retry after Retry-After seconds",
    503: "a part of the Flow does not answer, or this server is stopping",
    504: "the request's deadline passed",
}
RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}
# stream=true: server-sent events (docs/api.md: Streams), each `event: TYPE` and `data: JSON`
EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string", "description": "server-sent events (stream=true)"}}}
TRANSCRIPT = {200: {"description": "the transcript: JSON (response_format json, verbose_json) or text (text, srt, "
                                   "vtt)",
                    "content": {"application/json": {"schema": {"anyOf": [
                        {"$ref": "#/components/schemas/Transcript"},
                        {"$ref": "#/components/schemas/VerboseTranscript"}]}},
                                "text/plain": {"schema": {"type": "string"}},
                                **EVENT_STREAM}}}
AUDIO_FORM = {"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {"contentType": "audio/*"}}}}}}
IMAGES = {"contentType": "image/png, image/jpeg, image/webp"}
IMAGE_FORM = {"requestBody": {"content": {"multipart/form-data": {"encoding": {
    "image": IMAGES, "image[]": IMAGES, "mask": {"contentType": "image/png"}}}}}}
SPEECH_IMAGE_FORM = {"requestBody": {"content": {"multipart/form-data": {"encoding": {
    "file": {"contentType": "audio/*"}, "image": IMAGES}}}}}


async def _each_field_once(request: Request) -> None:
    """A form field sent twice is refused: its model would read one of them, silently."""
    form = await request.form()
    for key in form:
        if not key.endswith("[]") and len(form.getlist(key)) > 1:
            raise InvalidRequest(f"{key} sent {len(form.getlist(key))} times: send each form field once")


ONCE_EACH = [Depends(_each_field_once)]


def checked(data: bytes, what: str):
    """An image's bytes for a document, once its header passed the executor's checks (format,
    pixels, bytes): a bad image is refused before any work."""
    checked_picture(data, what)
    return to_blob(data)


def refusals(*statuses: int, shape: type = openai.ErrorAnswer) -> dict:
    """The error answers a route gives, for its `responses=`."""
    return {status: {"model": shape, "description": REASONS[status], **({"headers": RETRY_AFTER} if status == 429
                                                                        else {})} for status in statuses}


def _jina_answer(parameters: dict, docs) -> bytes:
    """Jina's answer to the document route, as JSON bytes."""
    return json.dumps({"header": {"status": {"code": 0}}, "parameters": parameters,
                       "data": [json.loads(doc.json()) for doc in docs]}).encode()


def document_the_guard(app: FastAPI, keys: Optional[ApiKeys], rated: bool = False) -> None:
    """FastAPI's OpenAPI document, with what the Guard answers before any route (413; with keys 401
    and the bearer scheme, and 429 with a rate per key; 503 while draining) and without the 422
    FastAPI adds to every route (a request a model refuses is 400 here)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = build()
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for model in (openai.ErrorAnswer, openai.Transcript, openai.VerboseTranscript, JinaError):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas.setdefault(model.__name__, schema)
            if keys:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in document["paths"].items():
                shape = "ErrorAnswer" if path.startswith("/v1") else "JinaError"
                for method, operation in operations.items():
                    answers = operation["responses"]
                    answers.pop("422", None)
                    guarded = {413, 421} if _open(method.upper(), path) else {408, 413, 421, 503,
                                                                              *({401} if keys else ()),
                                                                              *({429} if rated else ())}
                    if method.upper() not in HostPolicy.READING:
                        guarded.add(403)
                    for status in sorted(guarded):
                        answers.setdefault(str(status), {"description": REASONS[status], "content": {
                            "application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}},
                            **({"headers": RETRY_AFTER} if status == 429 else {})})
                    if keys and not _open(method.upper(), path):
                        operation["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi


async def _answers(stream) -> list:
    """The documents of a Flow's answers; an executor's error as the project's own error."""
    answered = []
    async with contextlib.aclosing(stream):  # however the route ends, Jina stops sending the rest
        async for result in stream:
            status = result.header.status
            if status.code == status.ERROR:
                raise openai.executor_error(status.exception.name, status.exception.args)
            answered.extend(result.data.docs)
    return answered


def _invalid_document(index: int, where: list[str], error: dict) -> InvalidRequest:
    """A document of Jina's route that its model refuses, in one line naming the document and field."""
    message = str(error.get("ctx", {}).get("error", "")) if error.get("type") == "value_error" else error.get("msg")
    hint = "; send it as an array of byte values 0-255" if where[:1] == ["audio"] else ""
    field = f" field {'.'.join(where)}" if where else ""
    return InvalidRequest(" ".join(f"invalid document {index}{field}: {message}{hint}".split()))


def _fields_taken(request: Request) -> list[str]:
    """The fields of the request model of the route a request reached (named in its refusals)."""
    model = getattr(getattr(request.scope.get("route"), "body_field", None), "type_", None)
    return [field.alias or name for name, field in getattr(model, "model_fields", {}).items()]


def _caller(request: Optional[Request]) -> Optional[str]:
    """The key id of a request (the Guard's), none without keys or without a request."""
    return request.scope.get("state", {}).get(CALLER) if request is not None else None


def image_url(store: ImageStore, request: Request, public_url: Optional[str]):
    """Where a stored image is served, kept in its caller's room of the store: under the configured
    public URL, else a URL relative to this server (never one built from the request's Host)."""
    base = (public_url or "").rstrip("/")
    return lambda png: f"{base}{KEPT_IMAGES}{store.put(png, _caller(request))}"


def _error(request: Request, error: Exception) -> JSONResponse:
    """OpenAI's error shape on /v1; Jina's status header on its document route (its HTTP client reads
    it); Busy with Retry-After, a method not allowed with Allow. It reads the path from the scope,
    never from a URL made of the request's Host (which may not parse)."""
    status, body = openai.error_answer(error)
    path = request.scope["path"]
    headers = {"Retry-After": str(openai.retry_after(error))} if status == 429 else \
        {"Allow": error.allowed} if status == 405 else None
    if status == 500:
        logging.getLogger("speech2image.gateway").error("bug while answering %s", path, exc_info=error)
    if path.startswith("/v1"):
        return JSONResponse(body, status_code=status, headers=headers)
    name = type(error).__name__ if status != 500 else "InternalError"
    return JSONResponse({"header": {"status": {"code": 1, "description": f"{name}: {body['error']['message']}",
                                               "exception": {"name": name, "args": [body["error"]["message"]]}}}},
                        status_code=status, headers=headers)


def _open(method: str, path: str) -> bool:
    """Whether a route answers without a key: health, readiness, and the kept images (by name)."""
    return path in OPEN or (method in ("GET", "HEAD") and path.startswith(KEPT_IMAGES))


class Guard:
    """ASGI middleware before every route: a body over what the route takes is refused (413: one
    audio file and its fields, Jina's JSON documents, or fields alone; `max_body_bytes`), and
    with keys, a request without a valid one (401) or past its key's rate (429); health and
    readiness stay open. No WebSocket is served."""

    def __init__(self, app, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int,
                 admission: Admission, hosts: HostPolicy, connections: ConnectionLimits):
        self.app, self.keys, self.admission, self.hosts = app, keys, admission, hosts
        self.connections = connections
        self.max_request_bytes, self.max_audio_bytes = max_request_bytes, max_audio_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.hosts.serves(host):
            return await self._refuse(scope, send, MisdirectedHost(
                "this server is not served under that host name; its operator can add it (app.py --allowed-hosts)"))
        if self.hosts.foreign(headers.get("origin", ""), host, scope["method"]):
            return await self._refuse(scope, send, ForeignOrigin("requests from another site's page are refused"))
        open_path = _open(scope["method"], scope["path"])
        caller = self.keys.check(headers.get("authorization")) if self.keys else None
        if self.keys and not open_path and caller is None:
            return await self._refuse(scope, send, Unauthenticated(
                "missing or unknown API key: send the header Authorization: Bearer KEY"))
        if not open_path:
            try:
                self.admission.limit_rate(caller)
            except Busy as refusal:
                return await self._refuse(scope, send, refusal)
        scope.setdefault("state", {})[CALLER] = caller  # whose room of the image store, whose turn in a replica
        route = ("audio" if scope["path"] in AUDIO_ROUTES else "images" if scope["path"] in IMAGE_ROUTES
                 else "documents" if scope["path"] == "/generate" else "fields")
        limit = max_body_bytes(route, self.max_request_bytes, self.max_audio_bytes)
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, self._too_large(int(declared), limit))
        received, over, body_done = 0, None, False
        loop = asyncio.get_running_loop()
        started, grace = loop.time(), self.connections.header_timeout_seconds

        async def counted():
            nonlocal received, over, body_done
            if body_done:  # the body is in: what follows is a disconnect, however late
                return await receive()
            try:  # a body that pauses for as long as a head may take is refused
                message = await asyncio.wait_for(receive(), grace)
            except asyncio.TimeoutError:
                over = SlowRequest(f"the request body paused for {grace:g} s; send it without pauses")
                raise _BodyRefused from None
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > limit:
                over = self._too_large(received, limit)
                raise _BodyRefused
            late = loop.time() - started - grace
            if not body_done and late > 0 and received < self.connections.min_body_bytes_per_second * late:
                over = SlowRequest(f"the request body arrives slower than "
                                   f"{self.connections.min_body_bytes_per_second} bytes/s; send it faster")
                raise _BodyRefused
            return message

        async def sent(message):
            if over is None:  # once refused, whatever the route makes of the cut body is not sent
                await send(message)

        if self.admission.draining and not open_path:
            return await self._refuse(scope, send, Unavailable("draining: this server is stopping; retry in a "
                                                               "moment (elsewhere, behind a load balancer)"))
        try:
            with self.admission.request():
                await self.app(scope, counted, sent)
        except _BodyRefused:
            pass
        if over is not None:
            await self._refuse(scope, send, over)

    @staticmethod
    def _too_large(size: int, limit: int) -> TooLarge:
        return TooLarge(f"request too large: {size} bytes or more > {limit} accepted on this route "
                        "(max_audio_bytes, max_request_bytes); send a smaller file, or many files over gRPC")

    async def _refuse(self, scope, send, error: Speech2ImageError) -> None:
        response = _error(Request(scope), error)
        await response(scope, None, send)


class _BodyRefused(Exception):
    """The body streamed in is refused: too large, or too slow."""
