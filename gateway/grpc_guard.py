"""The gRPC side of the gateway: Jina's own gRPC gateway with one interceptor in front.

The interceptor asks for an API key (`authorization: Bearer KEY` metadata) on every call but
the health check and Jina's dry run; never serves Jina's info call (library versions, the
kernel, every executor's address); admits data calls (`gateway.admission`: the key's rate,
their deadline and caller, cancellation when the client goes away, RESOURCE_EXHAUSTED when the
key is over its rate or every replica is busy, none while draining); refuses a request of more
than `max_documents` documents before it is forwarded; and sends clients no Python stack and no
internal address: an executor's error keeps its name and one-line message, a connection error
inside the Flow becomes one line naming the part that does not answer.

A data call's requests travel inside the Flow under an id the gateway makes, and go back to the
client under its own: a client's id names nothing another client's calls can be cancelled by.
"""

import contextlib
import logging
import re
import uuid
from typing import Optional

import grpc

from gateway.admission import Admission, busy
from gateway.streaming import EXECUTORS, pipeline
from speech2image.api.keys import ApiKeys
from speech2image.api.openai import executor_error, retry_after
from speech2image.errors import (
    Busy,
    DeadlineExceeded,
    InvalidRequest,
    Speech2ImageError,
    Unavailable,
    one_line,
    unanswered,
)

DRY_RUN = "/jina.JinaGatewayDryRunRPC/dry_run"  # readiness
HEALTH = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")  # gRPC's own: nothing to scrub
OPEN = (*HEALTH, DRY_RUN)
DATA_CALLS = ("/jina.JinaRPC/Call", "/jina.JinaSingleDataRequestRPC/process_single_data")
# Jina's single-document streaming call: served by the gateway itself (gateway.streaming), through
# every executor; Jina's own would reach only the first, without parameters
STREAM_DOC = "/jina.JinaSingleDocumentRequestRPC/stream_doc"
NOT_SERVED = ("/jina.JinaInfoRPC/_status",)  # Jina's info call: library versions, every executor's address
MAX_PARAMETER_BYTES = 64 * 1024  # a request's parameters, as protobuf: converted, sent to every executor, echoed
DEPLOYMENT = re.compile(r"deployment (\w+)")


def one_line_details(details: Optional[str]) -> str:
    """A connection error's details without addresses: which part of the Flow does not answer."""
    found = DEPLOYMENT.search(details or "")
    return unanswered(f"the {found.group(1)} executor" if found else "a part of the Flow")


def scrub(message):
    """A response without stacks or executor addresses (an error keeps its name and message), in
    its header and in each executor's route; a failed dry run says which part does not answer."""
    header = getattr(message, "header", None)
    if header is None and hasattr(message, "exception"):  # the dry run's status
        if message.code == message.ERROR:
            message.description = one_line_details(message.description)
        statuses = [message]
    else:
        statuses = [header.status] if header is not None else []
        statuses += [route.status for route in getattr(message, "routes", ())]
    for status in statuses:
        if status.code == status.ERROR:
            status.exception.ClearField("stacks")
            status.exception.executor = ""
    return message


class _Context:
    """The call's context, as Jina's handlers use it, with connection errors told in one line."""

    def __init__(self, context):
        self._context = context

    def __getattr__(self, name):
        return getattr(self._context, name)

    def set_details(self, details):
        self._context.set_details(one_line_details(details))

    def set_trailing_metadata(self, metadata):
        pass  # what an executor's failed call carried stays inside


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    """Keys, the calls not served, admission (deadlines, Busy, cancellation, draining) and answers
    without what only the server should see."""

    def __init__(self, keys: Optional[ApiKeys], admission: Admission, max_documents: int):
        self.keys, self.admission, self.max_documents = keys, admission, max_documents

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method in HEALTH:
            return handler
        if details.method in NOT_SERVED:
            return _refusing(handler, grpc.StatusCode.UNIMPLEMENTED, "not served by this gateway")
        caller = None
        if self.keys and details.method not in OPEN:
            metadata = {key: value for key, value in details.invocation_metadata or ()}
            caller = self.keys.check(metadata.get("authorization"))
            if caller is None:
                return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED,
                                 "missing or unknown API key: send metadata authorization: Bearer KEY")
        if self.admission.draining and details.method == DRY_RUN:  # not ready: stopping
            return _refusing(handler, grpc.StatusCode.UNAVAILABLE, "draining: this server is stopping")
        if details.method in (*DATA_CALLS, STREAM_DOC):
            if self.admission.draining:
                return _refusing(handler, grpc.StatusCode.UNAVAILABLE,
                                 "draining: this server is stopping; retry in a moment (elsewhere, behind a load "
                                 "balancer)")
            if details.method == STREAM_DOC:
                return _streaming(handler, self.admission, caller)
            return _admitted(handler, self.admission, self.max_documents, caller)
        return _scrubbing(handler)


def _admitted(handler, admission: Admission, max_documents: int, caller: Optional[str]):
    """A data call of key `caller` whose every request is counted against the key's rate, has
    its documents counted, its deadline and caller set and is renamed; the call counted in
    flight, its executor calls cancelled if the client goes away, and a Busy answer (or a
    key over its rate) turned into RESOURCE_EXHAUSTED."""
    kind = _kind(handler)
    behaviour = getattr(handler, kind)
    clients: dict[str, str] = {}  # the gateway's request id → the client's

    async def admitted(request, context, seen: list):
        try:
            admission.limit_rate(caller)
        except Busy as refusal:
            raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refusal),
                           (("retry-after", str(retry_after(refusal))),)) from None
        refusal = _refusal(request, max_documents)
        if refusal:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        request.parameters = admission.admit(request.parameters, context.time_remaining(), caller)
        ours = uuid.uuid4().hex
        clients[ours] = request.proto_wo_data.header.request_id
        request.proto_wo_data.header.request_id = ours
        seen.append(ours)
        return request

    async def answered(message, context):
        header = getattr(message, "header", None)
        if header is not None and header.request_id in clients:
            header.request_id = clients.pop(header.request_id)
        if busy(message):
            refusal = executor_error(message.header.status.exception.name, message.header.status.exception.args)
            context.set_trailing_metadata((("retry-after", str(retry_after(refusal))),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refusal))
        return scrub(message)

    @contextlib.asynccontextmanager
    async def call(seen: list):
        with admission.request():
            try:
                yield
            except BaseException:  # the client went away, or the call ended on an error: so does the work
                for request_id in seen:
                    admission.cancel(request_id)
                raise
            finally:
                for request_id in seen:
                    clients.pop(request_id, None)

    if kind == "stream_stream":
        async def streamed(requests, context):
            seen, refused = [], []

            async def admitted_requests():  # a refused request ends the stream Jina reads; the call is refused after
                async for request in requests:
                    try:
                        yield await admitted(request, context, seen)
                    except _Refused as refusal:
                        refused.append(refusal)
                        return

            async with call(seen):
                async for message in behaviour(admitted_requests(), _Context(context)):
                    yield await answered(message, context)
            if refused:
                await refused[0].abort(context)

        return handler._replace(stream_stream=streamed)

    async def single(request, context):
        seen = []
        try:
            admitted_request = await admitted(request, context, seen)
        except _Refused as refusal:
            await refusal.abort(context)
        async with call(seen):
            return await answered(await behaviour(admitted_request, _Context(context)), context)

    return handler._replace(**{kind: single})


def _streaming(handler, admission: Admission, caller: Optional[str]):
    """Jina's stream_doc, served by the gateway: one document through the Flow's executors (or
    the one `target_executor` names), each event answered as it comes (docs/api.md: Streams). The
    request's options are its `parameters`, or the document's `stream_parameters` (JSON: Jina's
    Client sends none). Refused before the first event (a key over its rate, every replica busy,
    bad input): the call's status, as for Call; after it, an `error` event ends the stream."""
    from jina.types.request.data import SingleDocumentRequest

    from speech2image.schema import SpeechImageDoc, error_doc, refuse_filled

    async def streamed(request, context):
        try:
            admission.limit_rate(caller)
            parameter_bytes = request.proto_wo_data.parameters.ByteSize()
            request.document_cls = SpeechImageDoc
            doc = request.data.doc
            doc.check_input()
            parameters = _bounded_parameters(request, doc, parameter_bytes)
            refuse_filled([doc.model_copy(update={"stream_parameters": None})], "whisper", "diffusion", "stream")
            target = request.header.target_executor
            if target and target not in EXECUTORS:
                raise InvalidRequest(f"invalid target_executor={target!r}: name one of {', '.join(EXECUTORS)}")
        except Exception as error:  # what does not parse, or is refused, before any work
            await _refused(error).abort(context)
        client_id = request.header.request_id
        answered = False
        with admission.request():
            executors = (target,) if target else EXECUTORS if doc.has_audio() else EXECUTORS[1:]  # text: drawn only
            events = pipeline(admission, doc.model_copy(update={"stream_parameters": None}), parameters, executors,
                              caller=caller, client_seconds=context.time_remaining())
            async with contextlib.aclosing(events):
                try:
                    async for event in events:
                        answered = True
                        yield _event_message(event, client_id, SingleDocumentRequest)
                except Exception as error:
                    if not answered:
                        await _refused(error).abort(context)
                    yield _event_message(error_doc(error), client_id, SingleDocumentRequest)

    return grpc.unary_stream_rpc_method_handler(streamed, request_deserializer=handler.request_deserializer,
                                                response_serializer=handler.response_serializer)


def _bounded_parameters(request, doc, parameter_bytes: int) -> dict:
    """A stream's options: its parameters, or the document's `stream_parameters` (JSON), each at
    most MAX_PARAMETER_BYTES, parsed only then."""
    from speech2image.schema import stream_parameters

    if parameter_bytes > MAX_PARAMETER_BYTES or len(doc.stream_parameters or "") > MAX_PARAMETER_BYTES:
        raise InvalidRequest(f"parameters too large: more than {MAX_PARAMETER_BYTES} bytes; send the options you "
                             "mean, as name: value")
    return dict(request.parameters or {}) or stream_parameters(doc)


def _event_message(event, request_id: str, message_class):
    message = message_class()
    message.header.request_id = request_id
    message.document_cls = type(event)
    message.data.doc = event
    return message


def _refused(error: Exception) -> "_Refused":
    """An error before a stream's first event as the call's status: Busy is RESOURCE_EXHAUSTED
    (with retry-after), bad input INVALID_ARGUMENT, the rest as the error says; a bug is one line."""
    from google.protobuf.message import DecodeError

    if isinstance(error, Busy):
        return _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), (("retry-after", str(retry_after(error))),))
    if isinstance(error, InvalidRequest):  # named as Jina names an executor's error in a Call's answer
        return _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{type(error).__name__}: {one_line(error)}")
    if isinstance(error, (DecodeError, ValueError, RecursionError)):
        return _Refused(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a document this server can read; send "
                        "one SpeechImageDoc, with its options as parameters")
    codes = {DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable: grpc.StatusCode.UNAVAILABLE}
    code = next((code for kind, code in codes.items() if isinstance(error, kind)), grpc.StatusCode.INTERNAL)
    if not isinstance(error, Speech2ImageError):
        logging.getLogger(__name__).error("a stream failed", exc_info=error)
        return _Refused(code, "internal error: the server could not answer; the cause is in its log")
    return _Refused(code, one_line(error))


class _Refused(Exception):
    """A request refused at the gateway, before it is forwarded: its status, one line (why, and the
    fix) and trailing metadata (when to retry)."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: tuple = ()):
        super().__init__(details)
        self.code, self.details, self.metadata = code, details, metadata

    async def abort(self, context):
        await context.abort(self.code, self.details, trailing_metadata=self.metadata)


def _refusal(request, max_documents: int) -> Optional[str]:
    """Why a request is refused before it is forwarded, if it is: a message that does not parse,
    parameters over MAX_PARAMETER_BYTES, more documents than max_documents."""
    from google.protobuf.message import DecodeError

    try:
        parameters = request.proto_wo_data.parameters.ByteSize()
        count = _document_count(request)
    except DecodeError:
        return ("the request is not a Jina data request this server can read (its documents or parameters do not "
                "parse, or nest too deep); send documents of the Flow's schema and options as name: value")
    if parameters > MAX_PARAMETER_BYTES:
        return (f"parameters too large: {parameters} bytes > {MAX_PARAMETER_BYTES}; send the options you mean, as "
                "name: value")
    if count > max_documents:
        return f"too many documents: {count} > max_documents={max_documents}; split the request"
    return None


def _document_count(request) -> int:
    """How many documents a Jina data request carries, counted in its protobuf message: no
    document is built."""
    data = request.proto_with_data.data
    if data.WhichOneof("documents") == "docs_bytes":
        from docarray.proto import DocListProto

        listed = DocListProto()
        listed.ParseFromString(data.docs_bytes)
        return len(listed.docs)
    return len(data.docs.docs)


def _refusing(handler, code: grpc.StatusCode, message: str):
    """A handler that refuses the call without reading its message: gRPC reads (and decompresses)
    a unary call's whole message before its handler runs, so a refused call is served as a
    stream whose messages are never asked for — a caller without a key costs no memory."""
    async def refuse(requests, context):
        await context.abort(code, message)
        yield  # pragma: no cover - a generator: a streaming handler

    return grpc.stream_stream_rpc_method_handler(refuse, request_deserializer=handler.request_deserializer,
                                                 response_serializer=handler.response_serializer)


def _scrubbing(handler):
    kind = _kind(handler)
    behaviour = getattr(handler, kind)
    if kind.endswith("_stream"):
        async def streamed(request, context):
            async for message in behaviour(request, _Context(context)):
                yield scrub(message)

        return handler._replace(**{kind: streamed})

    async def single(request, context):
        return scrub(await behaviour(request, _Context(context)))

    return handler._replace(**{kind: single})


def _kind(handler) -> str:
    return {(False, False): "unary_unary", (False, True): "unary_stream", (True, False): "stream_unary",
            (True, True): "stream_stream"}[(handler.request_streaming, handler.response_streaming)]
