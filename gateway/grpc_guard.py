"""The gRPC side of the gateway: Jina's own gRPC gateway with one interceptor in front.

The interceptor asks for an API key (`authorization: Bearer KEY` metadata) on every call but
the health check and Jina's dry run; never serves Jina's info call (library versions, the
kernel, every executor's address); and sends clients no Python stack and no internal address:
an executor's error keeps its name and one-line message, a connection error inside the Flow
becomes one line naming the part that does not answer.
"""

import re
from typing import Optional

import grpc

from speech2image.api.keys import ApiKeys

OPEN = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/jina.JinaGatewayDryRunRPC/dry_run")
NOT_SERVED = ("/jina.JinaInfoRPC/_status",)
DEPLOYMENT = re.compile(r"deployment (\w+)")


def one_line_details(details: Optional[str]) -> str:
    """A connection error's details without addresses: which part of the Flow does not answer."""
    found = DEPLOYMENT.search(details or "")
    part = f"the {found.group(1)} executor" if found else "a part of the Flow"
    return f"{part} does not answer (it may be restarting); try again"


def scrub(message):
    """A response without stacks or executor addresses (an error keeps its name and message)."""
    header = getattr(message, "header", None)
    status = header.status if header is not None else message if hasattr(message, "exception") else None
    if status is not None and status.code == status.ERROR:
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
    """Keys, the calls not served, and answers without what only the server should see."""

    def __init__(self, keys: Optional[ApiKeys]):
        self.keys = keys

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        if details.method in NOT_SERVED:
            return _refusing(handler, grpc.StatusCode.UNIMPLEMENTED, "not served by this gateway")
        if self.keys and details.method not in OPEN:
            metadata = {key: value for key, value in details.invocation_metadata or ()}
            if self.keys.check(metadata.get("authorization")) is None:
                return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED,
                                 "missing or unknown API key: send metadata authorization: Bearer KEY")
        return _scrubbing(handler)


def _refusing(handler, code: grpc.StatusCode, message: str):
    async def refuse(request, context):
        await context.abort(code, message)

    async def refuse_stream(request, context):
        await context.abort(code, message)
        yield  # pragma: no cover - a generator, for streaming calls

    kind = _kind(handler)
    return handler._replace(**{kind: refuse_stream if kind.endswith("stream") else refuse})


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
