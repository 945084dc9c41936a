"""The HTTP side of the gateway: OpenAI-compatible routes and Jina's JSON document route.

Thin: each route turns a form or JSON into documents and options (`speech2image.api.openai`),
sends them through the Flow with Jina's streamer (to one executor, or both), and turns the
documents that come back into the answer. Before any route: a body over what the route takes
is refused (413), and with keys every route but the health and readiness checks needs
`Authorization: Bearer KEY` (401). Errors answer in one line, never with a stack.
"""

import asyncio
import json
import uuid
from typing import Optional

from docarray import DocList
from fastapi import Body, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict

from speech2image.api import openai
from speech2image.api.images import ImageStore
from speech2image.api.keys import ApiKeys
from speech2image.errors import InvalidRequest, NotFound, Speech2ImageError, TooLarge, Unauthenticated, Unavailable
from speech2image.limits import max_body_bytes
from speech2image.schema import SpeechImageDoc, to_blob

from gateway.admission import Admission
from gateway.grpc_guard import one_line_details

OPEN = ("/", "/dry_run")  # health (Jina installs GET /) and readiness: never behind a key
AUDIO_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/speech-to-image")
KEPT_IMAGES = "/v1/images/"  # GET by a 192-bit name only its answer holds, for an hour: a capability, like a signed URL
DOCS = DocList[SpeechImageDoc]


def create_app(streamer, dry_run, *, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int,
               store: ImageStore, admission: Admission) -> FastAPI:
    """The HTTP app on Jina's `streamer`; `dry_run()` tells whether every part of the Flow answers."""
    app = FastAPI(title="speech2image", description="Speech to images: OpenAI-compatible routes, and Jina's "
                                                    "document route.", version="0.1.0")
    app.add_middleware(Guard, keys=keys, max_request_bytes=max_request_bytes, max_audio_bytes=max_audio_bytes,
                       admission=admission)
    served: dict[str, str] = {}

    async def flow(request: Optional[Request], docs, parameters: dict, target: Optional[str] = None,
                   endpoint: str = "/generate") -> list:
        """Documents through the Flow (to `target` alone when given: an anchored regex, as Jina matches
        it), with the request's deadline; its executor calls are cancelled if the client disconnects."""
        from jina.excepts import InternalNetworkError

        request_id = uuid.uuid4().hex
        streamed = asyncio.ensure_future(_answers(streamer.stream_docs(
            docs=docs, exec_endpoint=endpoint, parameters=admission.deadline(parameters), request_id=request_id,
            target_executor=f"^{target}$" if target else None, return_results=True, return_type=DOCS)))
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
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        return _error(request, InvalidRequest(f"invalid {where}: {first.get('msg', 'malformed')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return _error(request, NotFound(f"no route {request.method} {request.url.path}; GET /v1/models, POST "
                                            "/v1/audio/transcriptions, /v1/audio/translations, /v1/images/generations, "
                                            "/v1/speech-to-image (the routes are in /docs)"))
        return _error(request, InvalidRequest(f"{error.status_code}: {error.detail}"))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception):
        return _error(request, error)  # 500, no detail: the stack goes to the log only

    @app.get("/dry_run", summary="Readiness: every part of the Flow answers")
    async def ready():
        if admission.draining:
            return JSONResponse({"code": 1, "description": "draining: this server is stopping"}, status_code=503)
        status = await dry_run()
        return JSONResponse({"code": status.code, "description": "ready" if status.code == 0 else "not ready"},
                            status_code=200 if status.code == 0 else 503)

    @app.get("/v1/models", summary="The served Whisper and image models")
    async def list_models():
        names = await models()
        return openai.models_answer(names["whisper"], names["diffusion"])

    async def hear(task: str, request: Request, file: UploadFile):
        form = await request.form()
        fields = {key: (form.getlist(key) if key.endswith("[]") else value) for key, value in form.items()
                  if key != "file"}
        asked = openai.transcription_request(fields, task)
        openai.check_model(asked.model, (await models())["whisper"], "Whisper", (openai.WHISPER_ALIAS,))
        [doc] = await flow(request, DOCS([SpeechImageDoc(audio=to_blob(await file.read()))]),
                           openai.parameters("whisper", asked.options), target="whisper")
        media, body = openai.transcript_answer(doc, asked)
        return PlainTextResponse(body) if media == "text/plain" else body

    @app.post("/v1/audio/transcriptions", summary="Speech to text in the spoken language (OpenAI)")
    async def transcriptions(request: Request, file: UploadFile = File(...), model: Optional[str] = Form(None),
                             language: Optional[str] = Form(None), prompt: Optional[str] = Form(None),
                             response_format: str = Form("json"), temperature: Optional[float] = Form(None)):
        return await hear("transcribe", request, file)

    @app.post("/v1/audio/translations", summary="Speech to English text (OpenAI)")
    async def translations(request: Request, file: UploadFile = File(...), model: Optional[str] = Form(None),
                           prompt: Optional[str] = Form(None), response_format: str = Form("json"),
                           temperature: Optional[float] = Form(None)):
        return await hear("translate", request, file)

    @app.post("/v1/images/generations", summary="Text to images (OpenAI), with this server's extensions")
    async def generations(request: Request, body: ImageBody = Body(...)):
        asked = openai.image_request(body.model_dump(exclude_unset=True))
        openai.check_model(asked.model, (await models())["diffusion"], "image")
        [doc] = await flow(request, DOCS([SpeechImageDoc(prompt=asked.prompt)]),
                           openai.parameters("diffusion", asked.options), target="diffusion")
        return openai.images_answer(doc.images, asked, image_url(store, request))

    @app.post("/v1/speech-to-image", summary="Speech to images: the whole pipeline (this server's own route)")
    async def speech_to_image(request: Request, file: UploadFile = File(...), model: Optional[str] = Form(None),
                              image_model: Optional[str] = Form(None), language: Optional[str] = Form(None),
                              n: Optional[int] = Form(None), size: Optional[str] = Form(None),
                              response_format: str = Form("b64_json"), seed: Optional[int] = Form(None),
                              steps: Optional[int] = Form(None), guidance_scale: Optional[float] = Form(None),
                              negative_prompt: Optional[str] = Form(None), scheduler: Optional[str] = Form(None)):
        form = await request.form()
        heard, image = openai.speech_to_image_request({k: v for k, v in form.items() if k != "file"})
        names = await models()
        openai.check_model(heard.model, names["whisper"], "Whisper", (openai.WHISPER_ALIAS,))
        openai.check_model(image.model, names["diffusion"], "image")
        [doc] = await flow(request, DOCS([SpeechImageDoc(audio=to_blob(await file.read()))]),
                           {**openai.parameters("whisper", heard.options), **openai.parameters("diffusion", image.options)})
        return openai.speech_to_image_answer(doc, image, image_url(store, request))

    @app.post("/generate", summary="Jina's document route: SpeechImageDoc documents as JSON")
    async def generate(request: Request, body: JinaRequest = Body(...)):
        target = body.target_executor or (body.header or {}).get("target_executor")
        docs = await flow(request, _documents(body.data), body.parameters or {},
                          target=target.strip("^$") if target else None)
        return {"header": {"status": {"code": 0}}, "parameters": body.parameters or {}, "data": [
            json.loads(doc.json()) for doc in docs]}

    @app.get("/v1/images/{name}", summary="An image of a response_format=url answer, while it is kept")
    async def kept_image(name: str):
        png = store.get(name)
        if png is None:
            raise NotFound("no such image: it was never stored, or it is forgotten (images are kept for an hour)")
        return Response(png, media_type="image/png")

    return app


class ImageBody(BaseModel):
    """POST /v1/images/generations (OpenAI's fields and this server's extensions; others are refused)."""

    model_config = ConfigDict(extra="allow")
    prompt: str
    model: Optional[str] = None
    n: Optional[int] = None
    size: Optional[str] = None
    response_format: Optional[str] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    negative_prompt: Optional[str] = None
    scheduler: Optional[str] = None


class JinaRequest(BaseModel):
    """What Jina's HTTP client posts to an endpoint: documents, parameters, an optional target."""

    model_config = ConfigDict(extra="allow")
    data: list[dict]
    parameters: Optional[dict] = None
    target_executor: Optional[str] = None
    header: Optional[dict] = None


async def _answers(stream) -> list:
    """The documents of a Flow's answers; an executor's error as the project's own error."""
    answered = []
    async for result in stream:
        status = result.header.status
        if status.code == status.ERROR:
            raise openai.executor_error(status.exception.name, status.exception.args)
        answered.extend(result.data.docs)
    return answered


def _documents(data: list[dict]) -> DocList:
    """Jina's JSON documents as SpeechImageDocs; a field of the wrong shape is one line (400)."""
    from pydantic import ValidationError

    docs = []
    for index, fields in enumerate(data):
        try:
            docs.append(SpeechImageDoc(**fields))
        except (ValidationError, TypeError, ValueError) as e:
            errors = e.errors() if isinstance(e, ValidationError) else [{"loc": (), "msg": str(e)}]
            where = ".".join(str(part) for part in errors[0].get("loc", ()))
            message = " ".join(str(errors[0].get("msg", e)).split())
            hint = "; send it as an array of byte values 0-255" if where in ("audio", "images") else ""
            raise InvalidRequest(f"invalid document {index}{' field ' + where if where else ''}: {message}{hint}") from e
    return DOCS(docs)


def image_url(store: ImageStore, request: Request):
    """Where a stored image is served: an absolute URL on the address the request came to."""
    base = str(request.base_url).rstrip("/")
    return lambda png: f"{base}{KEPT_IMAGES}{store.put(png)}"


def _error(request: Request, error: Exception) -> JSONResponse:
    """OpenAI's error shape on /v1; Jina's status header on its document route (its HTTP client reads
    it); Busy with Retry-After."""
    status, body = openai.error_answer(error)
    headers = {"Retry-After": str(openai.retry_after(error))} if status == 429 else None
    if status == 500:
        import logging

        logging.getLogger("speech2image.gateway").error("bug while answering %s", request.url.path, exc_info=error)
    if request.url.path.startswith("/v1"):
        return JSONResponse(body, status_code=status, headers=headers)
    name = type(error).__name__ if status != 500 else "InternalError"
    return JSONResponse({"header": {"status": {"code": 1, "description": f"{name}: {body['error']['message']}",
                                               "exception": {"name": name, "args": [body["error"]["message"]]}}}},
                        status_code=status, headers=headers)


class Guard:
    """ASGI middleware before every route: a body over what the route takes is refused (413: one
    audio file and its fields, Jina's JSON documents, or fields alone; `max_body_bytes`), and
    with keys, a request without a valid one (401); health and readiness stay open. No WebSocket
    is served."""

    def __init__(self, app, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int,
                 admission: Admission):
        self.app, self.keys, self.admission = app, keys, admission
        self.max_request_bytes, self.max_audio_bytes = max_request_bytes, max_audio_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        open_path = scope["path"] in OPEN or (scope["method"] == "GET" and scope["path"].startswith(KEPT_IMAGES))
        if self.keys and not open_path and self.keys.check(headers.get("authorization")) is None:
            return await self._refuse(scope, send, Unauthenticated(
                "missing or unknown API key: send the header Authorization: Bearer KEY"))
        route = "audio" if scope["path"] in AUDIO_ROUTES else "documents" if scope["path"] == "/generate" else "fields"
        limit = max_body_bytes(route, self.max_request_bytes, self.max_audio_bytes)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, self._too_large(int(declared), limit))
        received, over = 0, False

        async def counted():
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                over = True
                raise _BodyTooLarge
            return message

        async def sent(message):
            if not over:  # once over, whatever the route makes of the cut body is not sent: 413 is
                await send(message)

        if self.admission.draining and not open_path:
            return await self._refuse(scope, send, Unavailable("draining: this server is stopping; retry in a "
                                                               "moment (elsewhere, behind a load balancer)"))
        try:
            with self.admission.request():
                await self.app(scope, counted, sent)
        except _BodyTooLarge:
            pass
        if over:
            await self._refuse(scope, send, self._too_large(received, limit))

    @staticmethod
    def _too_large(size: int, limit: int) -> TooLarge:
        return TooLarge(f"request too large: {size} bytes or more > {limit} accepted on this route "
                        "(max_audio_bytes, max_request_bytes); send a smaller file, or many files over gRPC")

    async def _refuse(self, scope, send, error: Speech2ImageError) -> None:
        response = _error(Request(scope), error)
        await response(scope, None, send)


class _BodyTooLarge(Exception):
    """The body streamed in passed max_request_bytes."""
