"""What the gateway does for every request on its way to the executors (README: Admission).

- **One deadline**, set where the request enters — the client's own timeout, a `timeout`
  parameter, or the server's `request_timeout_seconds`, whichever is shortest — and carried to
  every executor as the `deadline` parameter (a client's own is replaced). It is never later
  than a share of Jina's `timeout_send` (`speech2image.serving.deadline.longest_request`), so the
  executors stop the work before Jina would give up on the call and retry it on another replica
  while the first copy still runs.
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
from speech2image.serving.deadline import PARAMETER as DEADLINE, longest_request, wall_deadline

TIMEOUT = "timeout"  # a request parameter: the client's time, in seconds


class Admission:
    """The gateway's deadlines, Busy retries, cancellations and drain, over Jina's connection pool."""

    def __init__(self, pool, rpcs: "ExecutorCalls", *, request_timeout_seconds: float, timeout_send_seconds: Optional[float],
                 grace_seconds: float, logger=None):
        self.longest = longest_request(request_timeout_seconds, timeout_send_seconds)
        self.grace_seconds = grace_seconds
        self.draining = False
        self.in_flight = 0
        self._calls: dict[str, set] = collections.defaultdict(set)  # request id → Jina's tasks sending it
        self.rpcs = rpcs
        self._logger = logger
        self._pool = pool
        self._send_once = intercept_sending(pool, self._send_with_busy_retries)

    def deadline(self, parameters: dict, client_seconds: Optional[float] = None) -> dict:
        """`parameters` with the request's deadline: the shortest of the server's, the client's own
        time and its `timeout` parameter. A client's own time is cut by a margin (a tenth, at most
        a second) so that it hears why the work stopped rather than its own timeout."""
        if client_seconds:
            client_seconds -= min(1.0, client_seconds / 10)
        asked = parameters.get(TIMEOUT)
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
            client_seconds = min(asked, client_seconds) if client_seconds else asked
        return {**without_deadlines(parameters), DEADLINE: wall_deadline(self.longest, client_seconds)}

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
        replicas = replicas_of(self._pool, deployment, head, shard_id)
        if not replicas:  # none to send to: Jina answers it
            return self._send_once(requests, deployment, metadata, head, shard_id, endpoint, timeout, retries)
        untried = SkippingReplicas(replicas)  # those that refused this request as busy are skipped
        request_id = requests[0].request_id

        def send():
            return send_to(self._pool, requests, untried, endpoint=endpoint, metadata=metadata, timeout=timeout,
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


def without_deadlines(parameters: dict) -> dict:
    """`parameters` without a client's own deadline, in each form Jina hands an executor: for the
    whole Flow (`deadline`), for one executor (`diffusion__deadline`) and inside one executor's
    own parameters (`{"diffusion": {"deadline": …}}`, which Jina merges into that executor's)."""
    return {key: ({k: v for k, v in value.items() if k != DEADLINE} if isinstance(value, dict) else value)
            for key, value in parameters.items() if key != DEADLINE and not key.endswith(f"__{DEADLINE}")}


class ExecutorCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """The gateway's RPCs to executors in flight, by request id (a client interceptor)."""

    def __init__(self):
        self._by_request: dict[str, set] = collections.defaultdict(set)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        rpc = await continuation(client_call_details, request)
        request_id = getattr(request, "request_id", None)
        if request_id:
            self._by_request[request_id].add(rpc)
            rpc.add_done_callback(lambda done: _forget(self._by_request, request_id, done))
        return rpc

    def pop(self, request_id: str, default=()):
        return self._by_request.pop(request_id, default)


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
