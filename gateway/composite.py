"""Speech2ImageGateway: the Flow's front door, a Jina gateway of two servers on one streamer.

gRPC (port 1): Jina's own gRPC gateway — Jina's Client, client.py and the page speak it — with
an interceptor for keys and clean errors (`gateway.grpc_guard`), and a bounded message size. HTTP
(port 2): the OpenAI-compatible routes and Jina's JSON document route (`gateway.http_app`).
Jina builds its composite gRPC+HTTP gateway only when `uses` is empty (jina-ai/serve#5308), so
this one composes Jina's pieces itself. TLS (`ssl_certfile`, `ssl_keyfile`) covers both.

Arguments (`uses_with`): `api_keys` (a keys file; none: no key asked), `max_request_bytes`
(the largest request body or gRPC message accepted).
"""

from typing import Optional

from jina.serve.runtimes.gateway.gateway import BaseGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import FastAPIBaseGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer

from gateway.grpc_guard import GatewayInterceptor
from gateway.http_app import create_app
from speech2image.api.images import ImageStore
from speech2image.api.keys import ApiKeys
from speech2image.limits import AudioLimits, RequestLimits, max_request_bytes as derived_max_request_bytes


class Speech2ImageGateway(CompositeBaseServer, BaseGateway):
    """gRPC on the first port, HTTP on the second, sharing Jina's request handler and streamer."""

    def __init__(self, api_keys: Optional[str] = None, max_request_bytes: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        keys = ApiKeys.load(api_keys) if api_keys else None
        limit = max_request_bytes or derived_max_request_bytes(AudioLimits(), RequestLimits())
        servers = {"grpc": GrpcServer, "http": HttpServer}
        self.servers = [servers[str(server["runtime_args"]["protocol"]).lower()](keys=keys, max_request_bytes=limit,
                                                                                   **server)
                        for server in self._server_kwargs]


class GrpcServer(GRPCGateway):
    """Jina's gRPC gateway, behind the interceptor, refusing messages over `max_request_bytes`."""

    def __init__(self, keys: Optional[ApiKeys], max_request_bytes: int, grpc_server_options: Optional[dict] = None,
                 **kwargs):
        options = {**(grpc_server_options or {}), "grpc.max_receive_message_length": max_request_bytes}
        super().__init__(grpc_server_options=options, **kwargs)
        self.grpc_tracing_server_interceptors = [*(self.grpc_tracing_server_interceptors or []),
                                                 GatewayInterceptor(keys)]


class HttpServer(FastAPIBaseGateway):
    """The HTTP app of `gateway.http_app`, served by Jina's uvicorn server."""

    def __init__(self, keys: Optional[ApiKeys], max_request_bytes: int, **kwargs):
        super().__init__(**kwargs)
        self.keys, self.max_request_bytes = keys, max_request_bytes
        self.images = ImageStore()

    @property
    def app(self):
        handler = self._request_handler

        async def dry_run():
            return await handler.dry_run(None, None)

        return create_app(self.streamer, dry_run, keys=self.keys, max_request_bytes=self.max_request_bytes,
                          store=self.images)
