"""What the gateway does for every request on its way to the executors (README: Admission).

- **A rate per key.** With `requests_per_minute_per_key`, each API key has a token bucket: a
  minute's worth of requests at once, then that many a minute; one more is refused (Busy:
  429, RESOURCE_EXHAUSTED) with the seconds until the key may send again.
- **One deadline**, set where the request enters — the client's own timeout, a `timeout`
  parameter, or the server's `request_timeout_seconds`, whichever is shortest — and carried to
  every executor as the `deadline` parameter (a client's own is replaced). It is never later
  than a share of Jina's `timeout_send` (`speech2image.serving.deadline.longest_request`), so the
  executors stop the work before Jina would give up on the call and retry it on another replica
  while the first copy still runs.
- **The caller**, the key's id, carried to every executor as the `caller` parameter (a client's
  own is dropped): each replica's scheduler shares its places between callers.
- **Busy replicas.** A replica whose queue is full answers Busy at once, before any work; Jina
  does not retry that, so the gateway sends the call on to a replica of the deployment that has
  not refused it yet, until one takes it or every one has refused (then it answers Busy).
- **Cancellation.** The executor calls of a request whose client went away (a cancelled call, a
  closed connection, a client deadline) are cancelled: each replica's scheduler then drops the
  request from its queue, or stops its work at the next step.
- **Draining.** When the gateway is told to stop, it refuses new requests and reports not
  ready, lets the requests in flight finish for up to `grace_seconds`, then stops.

Jina has no hook for the second and third: they wrap the call of its connection pool that
sends one request to one deployment (`GrpcConnectionPool.send_requests_once`), and hand Jina's
sending a view of the deployment's replicas that skips those that answered Busy (through
`gateway.jina_internals`, the one module that touches Jina's internals). Cancelling that
call's task does not cancel its RPC (Jina awaits the RPC's trailing metadata, which a cancelled
wait leaves running), so a client interceptor on the executor channels (`ExecutorCalls`) keeps
each RPC by request id, to cancel it too.
"""

import asyncio
import collections
import contextlib
import time
from typing import Optional

import grpc

from gateway.jina_internals import SkippingReplicas, intercept_sending, replica_count, replicas_of, send_to
from speech2image.errors import Busy
from speech2image.serving.deadline import PARAMETER as DEADLINE
from speech2image.serving.deadline import longest_request, wall_deadline
from speech2image.serving.scheduler import CALLER

TIMEOUT = "timeout"  # a request parameter: the client's time, in seconds
SERVER_FILLED = (DEADLINE, CALLER)  # request parameters only the gateway sets


class KeyRates:
    """A token bucket per API key: a key may send a minute's worth of requests at once, then
    `requests_per_minute` a minute."""

    def __init__(self, requests_per_minute: float, clock=time.monotonic):
        self.requests_per_minute = requests_per_minute
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id → (tokens, when counted)

    def take(self, key: str) -> None:
        """Count one request of `key`; Busy, with the seconds until it may send one, past its rate."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.requests_per_minute, now))
        tokens = min(self.requests_per_minute, tokens + (now - then) * self.requests_per_minute / 60)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) * 60 / self.requests_per_minute
            raise Busy(f"rate limit: more than requests_per_minute_per_key={self.requests_per_minute:g} requests a "
                       f"minute from this key; retry in about {max(1.0, wait):.0f} s", retry_after=wait)
        self._buckets[key] = (tokens - 1, now)


class Admission:
    """The gateway's rate per key, deadlines, callers, Busy retries, cancellations and drain, over
    Jina's connection pool."""

    def __init__(self, pool, rpcs: "ExecutorCalls", *, request_timeout_seconds: float, timeout_send_seconds: Optional[float],
                 grace_seconds: float, requests_per_minute_per_key: Optional[float] = None, logger=None):
        self.longest = longest_request(request_timeout_seconds, timeout_send_seconds)
        self.rates = KeyRates(requests_per_minute_per_key) if requests_per_minute_per_key else None
        self.grace_seconds = grace_seconds
        self.draining = False
        self.in_flight = 0
        self._calls: dict[str, set] = collections.defaultdict(set)  # request id → Jina's tasks sending it
        self.rpcs = rpcs
        self._logger = logger
        self.pool = pool
        self._send_once = intercept_sending(pool, self._send_with_busy_retries)

    def limit_rate(self, caller: Optional[str]) -> None:
        """Count a request of key `caller` (Busy past its rate); without keys nothing is counted."""
        if self.rates and caller is not None:
            self.rates.take(caller)

    def admit(self, parameters: dict, client_seconds: Optional[float] = None, caller: Optional[str] = None) -> dict:
        """`parameters` with what only the server sets: the request's deadline — the shortest of the
        server's, the client's own time and its `timeout` parameter — and its `caller` (the key's
        id; none without keys). A client's own time is cut by a margin (a tenth, at most a second)
        so that it hears why the work stopped rather than its own timeout."""
        if client_seconds:
            client_seconds -= min(1.0, client_seconds / 10)
        asked = parameters.get(TIMEOUT)
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
            client_seconds = min(asked, client_seconds) if client_seconds else asked
        return {**without_server_parameters(parameters), DEADLINE: wall_deadline(self.longest, client_seconds),
                **({CALLER: caller} if caller is not None else {})}

    def cancel(self, request_id: str) -> None:
        """Cancel the executor calls of a request whose client went away."""
        for call in list(self._calls.pop(request_id, ())):
            call.cancel()  # first Jina's task, so that it does not retry the cancelled RPC elsewhere
        for rpc in list(self.rpcs.pop(request_id, ())):
            rpc.cancel()

    @contextlib.contextmanager
    def request(self):
        """Count a request in flight (what draining waits for)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def drain(self) -> None:
        """Refuse new requests, and wait up to grace_seconds for those in flight."""
        self.draining = True
        deadline = time.monotonic() + self.grace_seconds
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._logger:
            left = f"{self.in_flight} request(s) cut short" if self.in_flight else "every request answered"
            self._logger.info(f"drained: {left}")

    def _send_with_busy_retries(self, requests, deployment, metadata=None, head: bool = False, shard_id=None,
                                endpoint=None, timeout=None, retries=-1):
        replicas = replicas_of(self.pool, deployment, head, shard_id)
        if not replicas:  # none to send to: Jina answers it
            return self._send_once(requests, deployment, metadata, head, shard_id, endpoint, timeout, retries)
        untried = SkippingReplicas(replicas)  # those that refused this request as busy are skipped
        request_id = requests[0].request_id

        def send():
            return send_to(self.pool, requests, untried, endpoint=endpoint, metadata=metadata, timeout=timeout,
                           retries=retries)

        async def until_a_replica_has_room(first):
            answer = await first
            for _ in range(replica_count(replicas) - 1):
                if not _busy(answer):
                    break
                untried.skipped.add(untried.last)
                answer = await send()
            return answer

        first = send()
        call = asyncio.ensure_future(until_a_replica_has_room(first))
        call.add_done_callback(lambda done: first.cancel() if done.cancelled() else None)  # even before it ran
        self._calls[request_id].add(call)
        call.add_done_callback(lambda done: _forget(self._calls, request_id, done))
        return call


def without_server_parameters(parameters: dict) -> dict:
    """`parameters` without a client's own deadline or caller, in each form Jina hands an executor:
    for the whole Flow (`deadline`), for one executor (`diffusion__deadline`) and inside one
    executor's own parameters (`{"diffusion": {"deadline": …}}`, which Jina merges into that
    executor's)."""
    def filled(key) -> bool:
        return key in SERVER_FILLED or any(str(key).endswith(f"__{name}") for name in SERVER_FILLED)

    return {key: ({k: v for k, v in value.items() if not filled(k)} if isinstance(value, dict) else value)
            for key, value in parameters.items() if not filled(key)}


class ExecutorCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """The gateway's RPCs to executors in flight, by request id (a client interceptor)."""

    def __init__(self):
        self._by_request: dict[str, set] = collections.defaultdict(set)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        rpc = await continuation(client_call_details, request)
        self.keep(getattr(request, "request_id", None), rpc)
        return rpc

    def keep(self, request_id: Optional[str], rpc) -> None:
        """Keep an RPC under its request's id until it ends."""
        if request_id:
            self._by_request[request_id].add(rpc)
            rpc.add_done_callback(lambda done: _forget(self._by_request, request_id, done))

    def pop(self, request_id: str, default=()):
        return self._by_request.pop(request_id, default)


class ExecutorStreams(grpc.aio.UnaryStreamClientInterceptor):
    """The gateway's streaming RPCs to executors, kept by ExecutorCalls too (gRPC takes one
    interceptor object per kind of call)."""

    def __init__(self, calls: ExecutorCalls):
        self.calls = calls

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        rpc = await continuation(client_call_details, request)
        self.calls.keep(getattr(getattr(request, "header", None), "request_id", None), rpc)
        return rpc


def _forget(by_request: dict, request_id: str, done) -> None:
    """A call or RPC that ended leaves its request's set, and a request with none left its map."""
    pending = by_request.get(request_id)
    if pending is not None:
        pending.discard(done)
        if not pending:
            del by_request[request_id]


def busy(response) -> bool:
    """Whether a response is a Busy refusal."""
    status = getattr(getattr(response, "header", None), "status", None)
    return status is not None and status.code == status.ERROR and status.exception.name == "Busy"


def _busy(answer) -> bool:
    """Whether an executor call's answer (a response and its metadata, or a network error) is Busy."""
    return isinstance(answer, tuple) and bool(answer) and busy(answer[0])
