"""Speech2ImageGateway: the Flow's front door, a Jina gateway of two servers on one streamer.

gRPC (port 1): Jina's own gRPC gateway — Jina's Client, client.py and the page speak it — with
an interceptor for keys and clean errors (`gateway.grpc_guard`), and a bounded message size. HTTP
(port 2): the OpenAI-compatible routes and Jina's JSON document route (`gateway.http_app`).
Jina builds its composite gRPC+HTTP gateway only when `uses` is empty (jina-ai/serve#5308), so
this one composes Jina's pieces itself. TLS (`ssl_certfile`, `ssl_keyfile`) covers both.

Arguments (`uses_with`): `api_keys` (a keys file; none: no key asked), `max_request_bytes`
(the largest gRPC message accepted), `max_audio_bytes` (with it, the largest HTTP body of each
route: `speech2image.limits.max_body_bytes`), `request_timeout_seconds` (the longest a
request may take, queue included: its deadline), `grace_seconds` (how long requests in flight
may finish when the gateway stops; docs/admission.md), `max_documents` (the most documents of a
request, counted before it is forwarded), `header_timeout_seconds`, `max_connections` and
`min_body_bytes_per_second` (the HTTP port's connections: `speech2image.limits.ConnectionLimits`),
`requests_per_minute_per_key` (each key's rate: `speech2image.limits.KeyLimits`; none: any), `allowed_hosts` (host names the
HTTP port answers to besides localhost and IP addresses) and `public_url` (the base of kept
images' URLs; none: relative URLs).
"""

from typing import Optional
from urllib.parse import urlsplit

from jina.serve.runtimes.gateway.gateway import BaseGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import FastAPIBaseGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer

from gateway.admission import Admission, ExecutorCalls, ExecutorStreams
from gateway.connections import uvicorn_settings
from gateway.grpc_guard import GatewayInterceptor
from gateway.http_app import create_app
from gateway.jina_internals import connection_pool, request_handler, server_kwargs
from speech2image.api.images import ImageStore
from speech2image.api.keys import ApiKeys
from speech2image.limits import AudioLimits, ConnectionLimits, KeyLimits, RequestLimits
from speech2image.limits import max_request_bytes as derived_max_request_bytes
from speech2image.serving.network import EXECUTOR_CHANNEL_OPTIONS, GRPC_SERVER_OPTIONS, HostPolicy


class Speech2ImageGateway(CompositeBaseServer, BaseGateway):
    """gRPC on the first port, HTTP on the second, sharing Jina's request handler and streamer."""

    def __init__(self, api_keys: Optional[str] = None, max_request_bytes: Optional[int] = None,
                 max_audio_bytes: int = AudioLimits().max_audio_bytes,
                 request_timeout_seconds: float = RequestLimits().request_timeout_seconds, grace_seconds: float = 30.0,
                 max_documents: int = RequestLimits().max_documents,
                 header_timeout_seconds: float = ConnectionLimits().header_timeout_seconds,
                 max_connections: int = ConnectionLimits().max_connections,
                 min_body_bytes_per_second: int = ConnectionLimits().min_body_bytes_per_second,
                 requests_per_minute_per_key: Optional[float] = KeyLimits().requests_per_minute_per_key,
                 allowed_hosts: tuple = (), public_url: Optional[str] = None, **kwargs):
        self.executor_calls = ExecutorCalls()  # before super().__init__, which builds the channels
        super().__init__(**with_channel_options(kwargs))
        keys = ApiKeys.load(api_keys) if api_keys else None
        limit = max_request_bytes or derived_max_request_bytes(AudioLimits(), RequestLimits())
        rate = KeyLimits(requests_per_minute_per_key).requests_per_minute_per_key  # checked: in range
        self.admission = Admission(connection_pool(self), self.executor_calls,
                                   request_timeout_seconds=request_timeout_seconds,
                                   timeout_send_seconds=getattr(self.runtime_args, "timeout_send", None),
                                   grace_seconds=grace_seconds, requests_per_minute_per_key=rate,
                                   logger=self.logger)
        connections = ConnectionLimits(header_timeout_seconds, max_connections, min_body_bytes_per_second)
        self.servers = []
        for server in server_kwargs(self):
            common = dict(keys=keys, max_request_bytes=limit, max_audio_bytes=max_audio_bytes, admission=self.admission)
            if str(server["runtime_args"]["protocol"]).lower() == "grpc":
                self.servers.append(GrpcServer(**common, max_documents=max_documents, **server))
            else:
                self.servers.append(HttpServer(**common, connections=connections, max_documents=max_documents,
                                               hosts=HostPolicy((*allowed_hosts, urlsplit(public_url or "").hostname
                                                                 or "")), public_url=public_url, **server))

    def aio_tracing_client_interceptors(self):
        """Jina's tracing interceptors (when tracing), and those that let Admission cancel RPCs."""
        return [*(super().aio_tracing_client_interceptors() or []), self.executor_calls,
                ExecutorStreams(self.executor_calls)]

    async def shutdown(self):
        """Drain first: not ready (gRPC health NOT_SERVING, dry runs refused), no new request, those
        in flight finish (up to grace_seconds); then stop."""
        for server in self.servers:
            if hasattr(server, "health_servicer"):
                await server.health_servicer.enter_graceful_shutdown()
        await self.admission.drain()
        await super().shutdown()


def with_channel_options(kwargs: dict) -> dict:
    """The gateway's arguments with EXECUTOR_CHANNEL_OPTIONS under the Flow's own
    `grpc_channel_options` (Jina merges them into its defaults for the channels to executors)."""
    runtime_args = kwargs.get("runtime_args")
    if runtime_args is None:
        return kwargs
    arguments = runtime_args if isinstance(runtime_args, dict) else vars(runtime_args)
    arguments["grpc_channel_options"] = {**EXECUTOR_CHANNEL_OPTIONS, **(arguments.get("grpc_channel_options") or {})}
    return kwargs


class GrpcServer(GRPCGateway):
    """Jina's gRPC gateway, behind the interceptor, refusing messages over `max_request_bytes` and
    compressed ones."""

    def __init__(self, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int, admission: Admission,
                 max_documents: int, grpc_server_options: Optional[dict] = None, **kwargs):
        options = {**(grpc_server_options or {}), **GRPC_SERVER_OPTIONS,
                   "grpc.max_receive_message_length": max_request_bytes,
                   # no compressed message: a small one could unpack into max_request_bytes of memory
                   "grpc.compression_enabled_algorithms_bitset": 1,  # identity only
                   # calls at once on one connection: the gRPC clients of one process share one, and
                   # 64 refused streams under load (bench/admission.py at 4x)
                   "grpc.max_concurrent_streams": 1024}
        super().__init__(grpc_server_options=options, **kwargs)
        self.grpc_tracing_server_interceptors = [*(self.grpc_tracing_server_interceptors or []),
                                                 GatewayInterceptor(keys, admission, max_documents)]


class HttpServer(FastAPIBaseGateway):
    """The HTTP app of `gateway.http_app`, served by Jina's uvicorn server with bounded connections
    (`gateway.connections`)."""

    def __init__(self, keys: Optional[ApiKeys], max_request_bytes: int, max_audio_bytes: int, admission: Admission,
                 connections: ConnectionLimits, max_documents: int, hosts: HostPolicy, public_url: Optional[str],
                 uvicorn_kwargs: Optional[dict] = None, **kwargs):
        super().__init__(uvicorn_kwargs={**(uvicorn_kwargs or {}), **uvicorn_settings(connections)}, **kwargs)
        self.max_documents, self.hosts, self.public_url = max_documents, hosts, public_url
        self.connections = connections
        self.keys, self.admission = keys, admission
        self.max_request_bytes, self.max_audio_bytes = max_request_bytes, max_audio_bytes
        self.images = ImageStore()

    @property
    def app(self):
        handler = request_handler(self)

        async def dry_run():
            return await handler.dry_run(None, None)

        return create_app(self.streamer, dry_run, keys=self.keys, max_request_bytes=self.max_request_bytes,
                          max_audio_bytes=self.max_audio_bytes, max_documents=self.max_documents,
                          hosts=self.hosts, public_url=self.public_url, connections=self.connections,
                          store=self.images, admission=self.admission)
