"""Post audio files (or a text prompt) to a running speech2image Flow and save the images.

    python client.py AUDIO [AUDIO ...] [--host localhost:54322] [--num-images N] [--seed S]
                     [--out DIR] [--json] [--text "a prompt"] [request options ...]

The client sends each file's bytes (never a path for the server to open), prints each
transcript, writes the PNGs and one contact sheet into --out, and prints where they
are. Importing this module does not import torch or any model library.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from speech2image.asr.options import TASKS, TranscribeOptions
from speech2image.errors import ClientError, Speech2ImageError, one_line
from speech2image.imaging.options import SCHEDULERS, GenerateOptions
from speech2image.options import merge

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


def make_documents(audio_files: list[Path], text: Optional[str] = None):
    """One document per audio file (its bytes), or one text-only document."""
    from speech2image.schema import SpeechImageDoc, to_blob

    if text is not None:
        return _doc_list()([SpeechImageDoc(prompt=text)])
    docs = []
    for path in audio_files:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ClientError(f"cannot read {path}: {e.strerror}") from e
        if not data:
            raise ClientError(f"{path} is empty: record some speech into it first")
        docs.append(SpeechImageDoc(audio=to_blob(data)))
    return _doc_list()(docs)


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
    from speech2image.quiet import quiet_jina

    quiet_jina()  # no telemetry; no import noise: one error line stays one line
    from jina import Client

    if not isinstance(host, str):
        return host
    scheme, address = host.split("://", 1) if "://" in host else ("grpc", host)
    protocol, tls = {"grpc": ("grpc", False), "grpcs": ("grpc", True), "http": ("http", False),
                     "https": ("http", True)}.get(scheme, (None, False))
    hostname, _, port = address.rpartition(":")
    if not protocol or not hostname or not port.isdigit():
        raise ClientError(f"invalid --host {host!r}: use HOST:PORT, e.g. localhost:54322, or grpcs://, http:// or "
                          "https://HOST:PORT")
    return Client(host=hostname, port=int(port), protocol=protocol, tls=tls, asyncio=asyncio)


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

    from speech2image.schema import SpeechImageDoc

    return DocList[SpeechImageDoc]


def _raise_failure(failures: list) -> None:
    if failures:
        raise ClientError(f"the server refused the request: {_server_error(failures[0])}")


def save(docs, inputs: list[str], out_dir: Path, elapsed: float) -> list[Result]:
    """Write each document's PNGs and one contact sheet of all of them; describe each input."""
    from speech2image.schema import from_blob

    out_dir.mkdir(parents=True, exist_ok=True)
    results, sheet = [], []
    for index, (doc, name) in enumerate(zip(docs, inputs)):
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Turn spoken audio into images with a speech2image server.")
    parser.add_argument("audio", nargs="*", type=Path, help="audio files (wav, flac, mp3, ogg/opus, m4a)")
    parser.add_argument("--text", help="a text prompt instead of audio (skips the speech step)")
    parser.add_argument("--host", default="localhost:54322",
                        help="HOST:PORT (gRPC), http://HOST:PORT, or grpcs:// / https:// for TLS")
    parser.add_argument("--api-key", default=os.environ.get("SPEECH2IMAGE_API_KEY"),
                        help="the key the server asks for (default: $SPEECH2IMAGE_API_KEY)")
    parser.add_argument("--ca", metavar="FILE", help="trust this certificate authority for TLS (a private one)")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="where the PNGs go (default ./outputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the answer; the server stops the work by then too (default 600)")
    for executor, title in (("whisper", "speech → text"), ("diffusion", "text → images")):
        add_options(parser.add_argument_group(title), OPTIONS[executor])
    args = parser.parse_args(argv)
    if bool(args.audio) == (args.text is not None):
        parser.error("give audio files or --text, not both and not neither")
    return args


def add_options(group, option_class) -> None:
    """A flag for every field of a request options dataclass; a flag not given leaves the server's default."""
    choices = {"task": TASKS, "scheduler": tuple(SCHEDULERS)}
    for option in dataclasses.fields(option_class):
        flag = "--" + option.name.replace("_", "-")
        kind = typing.get_args(option.type) or (option.type,)
        meaning = option.metadata["help"] + ("" if option.default is None else f" (default {option.default})")
        if bool in kind:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meaning)
        else:
            group.add_argument(flag, type=kind[0], choices=choices.get(option.name), help=meaning)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "CRITICAL")  # failures are reported in one line below
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's own log lines (a failed TLS handshake) too
    try:
        parameters = request_parameters(vars(args))
        docs = make_documents(args.audio, args.text)
        if args.ca:
            trust(args.ca)
        started = time.perf_counter()
        answered = post(docs, args.host, parameters, timeout=args.timeout, api_key=args.api_key)
        inputs = [str(p) for p in args.audio] if args.text is None else ["text"]
        results = save(answered, inputs, args.out, time.perf_counter() - started)
    except Speech2ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for result in results:
        if args.json:
            print(json.dumps(vars(result)))
            continue
        spoken = f"{result.text!r}" + (f" [{result.language}, {result.task}]" if result.language else "")
        print(f"{result.input}: {spoken}")
        for warning in result.warnings:
            print(f"  warning: {warning}")
        if result.images:
            print(f"  {len(result.images)} image(s): {', '.join(result.images)}")
        else:
            print(f"  no images: {result.no_images_reason}")
    if not args.json and any(r.images for r in results):
        print(f"contact sheet: {args.out / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
