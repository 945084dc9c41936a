"""Calling a running speech2image Flow from Python: documents in, documents out, PNGs saved.

Jina's gRPC (or HTTP) client behind a few functions that client.py, the page, the tests and the
benchmarks share: :func:`request_parameters` checks a request's options with the executors' own
rules before any upload, :func:`make_documents` sends each file's bytes (never a path for the
server to open), :func:`post` / :func:`post_async` call the Flow and turn Jina's errors into
one-line :class:`~speech2image.errors.ClientError`s, :func:`save` writes the images. Importing
this module imports neither Jina nor torch: Jina is imported on the first call.
"""

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .asr.options import TranscribeOptions
from .errors import ClientError, one_line
from .imaging.options import GenerateOptions
from .options import merge

# each executor's request options, as their dataclasses name them
OPTIONS = {"whisper": TranscribeOptions, "diffusion": GenerateOptions}


@dataclass
class Result:
    """One input's outcome, as `--json` prints it."""

    input: str
    text: Optional[str]
    language: Optional[str]
    language_probability: Optional[float] = None
    task: Optional[str] = None
    images: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    models: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    no_speech: bool = False
    no_images_reason: Optional[str] = None
    warnings: list[str] = field(default_factory=list)


def request_parameters(options: dict) -> dict:
    """Request options → Jina parameters addressed to each executor (`whisper__language`…).

    They are validated here first, with the executors' own rules, so a bad value fails
    before any upload (InvalidRequest, one line).
    """
    parameters = {}
    for executor, option_class in OPTIONS.items():
        chosen = {f.name: options[f.name] for f in dataclasses.fields(option_class) if options.get(f.name) is not None}
        merge(option_class(), chosen)
        parameters.update({f"{executor}__{name}": value for name, value in chosen.items()})
    return parameters


def make_documents(audio_files: list[Path], text: Optional[str] = None, image: Optional[Path] = None,
                   mask: Optional[Path] = None):
    """One document per audio file (its bytes), or one text-only document; each with the image to
    edit (spoken words about it refine it) and its mask, when given."""
    from .schema import SpeechImageDoc, to_blob

    edit = {"edit_image": to_blob(_read(image, "an image")) if image else None,
            "edit_mask": to_blob(_read(mask, "a mask")) if mask else None}
    if text is not None:
        return _doc_list()([SpeechImageDoc(prompt=text, **edit)])
    return _doc_list()([SpeechImageDoc(audio=to_blob(_read(path, "some speech")), **edit) for path in audio_files])


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror}") from e
    if not data:
        raise ClientError(f"{path} is empty: put {what} into it first")
    return data


def post(docs, host: str = "localhost:54322", parameters: Optional[dict] = None, *, timeout: float = 600.0,
         target_executor: Optional[str] = None, api_key: Optional[str] = None):
    """Send the documents through the Flow's /generate endpoint and return them filled.

    `host` is "HOST:PORT" (gRPC), "http://HOST:PORT", "grpcs://…" or "https://…" (TLS), or a
    client from :func:`connect` (which keeps its connection: use one for many requests).
    `target_executor` ("whisper", "diffusion") sends the request to that executor alone;
    `api_key` is sent as `Authorization: Bearer KEY`. Jina's gRPC client serves one thread at a
    time (jina-ai/serve#5192): for concurrent requests from one process use :func:`post_async`
    in one event loop, or processes.
    """
    client, failures = connect(host), []
    with _answered(client, timeout):
        results = client.post("/generate", **_request(client, docs, parameters, timeout, target_executor, api_key,
                                                      failures))
    _raise_failure(failures)
    return results


async def post_async(docs, host: str = "localhost:54322", parameters: Optional[dict] = None, *,
                     timeout: float = 600.0, target_executor: Optional[str] = None, api_key: Optional[str] = None):
    """:func:`post` for asyncio: many of these may run at once in one event loop."""
    client, failures, results = connect(host, asyncio=True), [], _doc_list()()
    with _answered(client, timeout):
        async for answered in client.post("/generate", **_request(client, docs, parameters, timeout, target_executor,
                                                                  api_key, failures)):
            results.extend(answered)
    _raise_failure(failures)
    return results


async def stream_async(doc, host: str = "localhost:54322", parameters: Optional[dict] = None, *,
                       timeout: float = 600.0, target_executor: Optional[str] = None, api_key: Optional[str] = None):
    """One document through the Flow as a stream over gRPC (docs/api.md: Streams): its events as
    they come, each a document whose `event` says what happened — transcript.delta (`delta`),
    transcript.done (the transcribed document), step (`image_index`, `step`, `total_steps`),
    image.partial and image.completed (the image in `images`). An error event, or a refusal,
    is raised as a one-line ClientError. Jina's Client cannot send a key with a stream: this
    calls the gateway's stream_doc with gRPC itself."""
    from .quiet import quiet_jina

    quiet_jina()
    import grpc
    from jina.proto import jina_pb2_grpc
    from jina.types.request.data import SingleDocumentRequest

    from .schema import STREAM_ERROR, SpeechImageDoc

    scheme, hostname, port = _address_of(host)
    if scheme not in ("grpc", "grpcs"):
        raise ClientError(f"streams are served over gRPC: use --host HOST:PORT or grpcs://HOST:PORT, not {host!r} (over "
                          "HTTP, stream=true on the OpenAI-compatible routes)")
    target = f"{hostname}:{port}"
    channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials()) if scheme == "grpcs" else \
        grpc.aio.insecure_channel(target)
    request = SingleDocumentRequest()
    request.header.exec_endpoint = "/stream"
    request.header.target_executor = target_executor or ""
    request.document_cls = SpeechImageDoc
    request.data.doc = doc
    request.parameters = parameters or {}
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
    async with channel:
        try:
            async for response in jina_pb2_grpc.JinaSingleDocumentRequestRPCStub(channel).stream_doc(
                    request, timeout=timeout, metadata=metadata):
                event = SpeechImageDoc.from_protobuf(response.document)
                if event.event == STREAM_ERROR:
                    message = " ".join((event.error_args or [event.error])[0].split())
                    raise ClientError(f"the server stopped the request: {event.error}: {message}")
                yield event
        except grpc.aio.AioRpcError as e:
            raise _grpc_refusal(e, target, timeout) from e


async def stream_documents(docs, host: str, parameters: Optional[dict] = None, *, timeout: float = 600.0,
                           api_key: Optional[str] = None, told=lambda index, event: None):
    """The documents through the Flow one stream each (:func:`stream_async`), each event told to
    `told(document index, event)` as it comes; the documents filled as :func:`post` fills them."""
    from .schema import IMAGE_COMPLETED, TRANSCRIPT_DONE

    answered = _doc_list()()
    for index, doc in enumerate(docs):
        filled = doc.model_copy(update={"audio": None})
        images = []
        async for event in stream_async(doc, host, parameters, timeout=timeout, api_key=api_key):
            told(index, event)
            if event.event == TRANSCRIPT_DONE:
                filled = event.model_copy(update={"event": None})
            elif event.event == IMAGE_COMPLETED:
                images.extend(event.images)
            elif event.event is None:  # nothing drawn, and why
                filled.no_images_reason = event.no_images_reason
        filled.images = type(filled.images)(images)
        answered.append(filled)
    return answered


def _grpc_refusal(error, address: str, timeout: float) -> ClientError:
    code, details = error.code(), one_line(Exception(error.details() or ""))
    if code == code.UNAVAILABLE:
        return ClientError(f"cannot reach the speech2image server at {address}: {details}")
    if code == code.DEADLINE_EXCEEDED:
        return ClientError(f"no answer from the speech2image server at {address} within --timeout {timeout:g} s; ask "
                           "for less, or raise --timeout")
    refused = {"UNAUTHENTICATED": "the server refused the API key"}.get(code.name, "the server refused the request")
    return ClientError(f"{refused}: {details}")


def _request(client, docs, parameters, timeout, target_executor, api_key, failures) -> dict:
    """Jina's post arguments: the key as gRPC metadata or an HTTP header."""
    key = {}
    if api_key:
        bearer = f"Bearer {api_key}"
        key = {"headers": {"Authorization": bearer}} if str(client.args.protocol).lower() == "http" else \
            {"metadata": (("authorization", bearer),)}
    return dict(inputs=docs, parameters=parameters or {}, target_executor=target_executor, return_type=_doc_list(),
                timeout=timeout, on_error=failures.append, **key)


@contextlib.contextmanager
def _answered(client, timeout: float):
    """Jina's client errors as one-line ClientErrors: unreachable, refused (a key, a size, busy),
    out of time, failed."""
    import grpc
    from jina.excepts import BadServerFlow

    try:
        yield
    except OSError as e:  # Jina's ConnectionError (refused, unavailable), timeouts
        if "DEADLINE_EXCEEDED" in str(e) or isinstance(e, TimeoutError):
            raise ClientError(f"no answer from the speech2image server at {_address(client)} within --timeout "
                              f"{timeout:g} s (the server stopped the work); ask for less, or raise --timeout") from e
        raise ClientError(f"cannot reach the speech2image server at {_address(client)}: {one_line(e)}") from e
    except ValueError as e:  # Jina's HTTP client: a refusal, with the status the gateway answered
        raise _http_refusal(e) from e
    except BadServerFlow as e:  # Jina's gRPC client: an error status other than "unavailable"
        code = e.__cause__.code() if hasattr(e.__cause__, "code") else None
        details = one_line(Exception(e.__cause__.details())) if code else one_line(e)
        refused = {"UNAUTHENTICATED": "the server refused the API key", "RESOURCE_EXHAUSTED": "the server refused the "
                   "request"}.get(getattr(code, "name", ""), "the server failed")
        raise ClientError(f"{refused}: {details}") from e
    except grpc.RpcError as e:  # what Jina's gRPC client lets through (a call that broke under way)
        code = e.code().name if hasattr(e, "code") else "UNKNOWN"
        details = e.details() if hasattr(e, "details") else str(e)
        raise ClientError(f"the call to {_address(client)} failed ({code}): {one_line(Exception(details))}; "
                          "try again") from e


def _http_refusal(error: ValueError) -> Exception:
    """The gateway's refusal over HTTP as a ClientError; any other ValueError is a bug, raised as is."""
    answer = error.args[0] if error.args else None
    status = answer.get("header", {}).get("status", {}) if isinstance(answer, dict) else {}
    if "description" not in status:
        return error
    refused = "the API key" if status.get("exception", {}).get("name") == "Unauthenticated" else "the request"
    return ClientError(f"the server refused {refused}: {' '.join(status['description'].split())}")


def connect(host: str, asyncio: bool = False):
    """A Jina client of the Flow at "HOST:PORT", "http://", "grpcs://" or "https://HOST:PORT" (a
    client is returned as is)."""
    from .quiet import quiet_jina

    quiet_jina()  # no telemetry; no import noise: one error line stays one line
    from jina import Client

    if not isinstance(host, str):
        return host
    scheme, hostname, port = _address_of(host)
    protocol, tls = {"grpc": ("grpc", False), "grpcs": ("grpc", True), "http": ("http", False),
                     "https": ("http", True)}[scheme]
    return Client(host=hostname, port=port, protocol=protocol, tls=tls, asyncio=asyncio)


def _address_of(host: str) -> tuple[str, str, int]:
    """(scheme, host name, port) of "HOST:PORT", "grpcs://", "http://" or "https://HOST:PORT"."""
    scheme, address = host.split("://", 1) if "://" in host else ("grpc", host)
    hostname, _, port = address.rpartition(":")
    if scheme not in ("grpc", "grpcs", "http", "https") or not hostname or not port.isdigit():
        raise ClientError(f"invalid --host {host!r}: use HOST:PORT, e.g. localhost:54322, or grpcs://, http:// or "
                          "https://HOST:PORT")
    return scheme, hostname, int(port)


def trust(ca_file: str) -> None:
    """Trust a private certificate authority for TLS, besides the system's: Jina's Client(tls=True)
    reads only the system roots (jina-ai/serve#4948), but gRPC reads its roots from
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH and aiohttp's TLS from SSL_CERT_FILE."""
    path = str(Path(ca_file).resolve())
    if not Path(path).is_file():
        raise ClientError(f"cannot read --ca {ca_file}: no such file")
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = path
    os.environ["SSL_CERT_FILE"] = path


def _address(client) -> str:
    return f"{client.args.host}:{client.args.port}"


def _doc_list():
    from docarray import DocList

    from .schema import SpeechImageDoc

    return DocList[SpeechImageDoc]


def _raise_failure(failures: list) -> None:
    if failures:
        raise ClientError(f"the server refused the request: {_server_error(failures[0])}")


def save(docs, inputs: list[str], out_dir: Path, elapsed: float) -> list[Result]:
    """Write each document's PNGs and one contact sheet of all of them; describe each input."""
    from .schema import from_blob

    out_dir.mkdir(parents=True, exist_ok=True)
    results, sheet = [], []
    for index, (doc, name) in enumerate(zip(docs, inputs, strict=True)):
        stem = Path(name).stem if name != "text" else "text"
        result = Result(input=name, text=doc.text if doc.text is not None else doc.prompt, language=doc.language,
                        language_probability=doc.language_probability, task=doc.task, no_speech=doc.no_speech,
                        no_images_reason=doc.no_images_reason, warnings=list(doc.warnings))
        for image in doc.images:
            path = out_dir / f"{index:02d}-{stem}-seed{image.seed}.png"
            path.write_bytes(from_blob(image.png))
            result.images.append(str(path))
            result.seeds.append(image.seed)
            sheet.append(path)
        result.models = {"whisper": doc.asr_model, "diffusion": doc.images[0].model if doc.images else None}
        result.timings = {
            "transcribe_s": doc.asr_seconds,
            "generate_s_per_image": doc.images[0].seconds if doc.images else None,
            "request_s": round(elapsed, 3),
        }
        results.append(result)
    if sheet:
        contact_sheet(sheet).save(out_dir / "contact_sheet.png")
    return results


def contact_sheet(paths: list[Path]):
    """All images on one page, in rows of up to four."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    width, height = max(i.width for i in images), max(i.height for i in images)
    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for k, image in enumerate(images):
        sheet.paste(image, ((k % columns) * width, (k // columns) * height))
    return sheet


def _server_error(response) -> str:
    exception = response.header.status.exception
    # the executor's own message, without the Name("message") wrapper Jina adds to the description
    message = exception.args[0] if exception.args else response.header.status.description
    return f"{exception.name or 'error'}: {' '.join(message.split())}"
