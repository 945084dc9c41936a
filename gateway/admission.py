"""What the gateway does for every request on its way to the executors (README: Admission).

- **One deadline**, set where the request enters — the client's own timeout, a `timeout`
  parameter, or the server's `request_timeout_seconds`, whichever is shortest — and carried to
  every executor as the `deadline` parameter (a client's own is replaced). It is never later
  than 80 % of Jina's `timeout_send`, so the executors stop the work before Jina would give up
  on the call and retry it on another replica while the first copy still runs.
- **Busy replicas.** A replica whose queue is full answers Busy at once, before any work; Jina
  does not retry that, so the gateway sends the call on to the deployment's next replica, as
  many times as the deployment has replicas, before it answers Busy itself.
- **Cancellation.** The executor calls of a request whose client went away (a cancelled call, a
  closed connection, a client deadline) are cancelled: each replica's scheduler then drops the
  request from its queue, or stops its work at the next step.
- **Draining.** When the gateway is told to stop, it refuses new requests and reports not
  ready, lets the requests in flight finish for up to `grace_seconds`, then stops.

Jina has no hook for the second and third: they wrap the call of its connection pool that
sends one request to one deployment (`GrpcConnectionPool.send_requests_once`). Cancelling that
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

from speech2image.serving.deadline import PARAMETER as DEADLINE, wall_deadline

TIMEOUT = "timeout"  # a request parameter: the client's time, in seconds


class Admission:
    """The gateway's deadlines, Busy retries, cancellations and drain, over Jina's connection pool."""

    def __init__(self, pool, rpcs: "ExecutorCalls", *, request_timeout_seconds: float, timeout_send_seconds: Optional[float],
                 grace_seconds: float, logger=None):
        self.longest = request_timeout_seconds
        if timeout_send_seconds:
            self.longest = min(self.longest, 0.8 * timeout_send_seconds)
        self.grace_seconds = grace_seconds
        self.draining = False
        self.in_flight = 0
        self._calls: dict[str, set] = collections.defaultdict(set)  # request id → Jina's tasks sending it
        self.rpcs = rpcs
        self._logger = logger
        self._send_once = pool.send_requests_once
        self._pool = pool
        pool.send_requests_once = self._send_with_busy_retries

    def deadline(self, parameters: dict, client_seconds: Optional[float] = None) -> dict:
        """`parameters` with the request's deadline: the shortest of the server's, the client's own
        time and its `timeout` parameter. A client's own time is cut by a margin (a tenth, at most
        a second) so that it hears why the work stopped rather than its own timeout."""
        if client_seconds:
            client_seconds -= min(1.0, client_seconds / 10)
        asked = parameters.get(TIMEOUT)
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > 0:
            client_seconds = min(asked, client_seconds) if client_seconds else asked
        return {**parameters, DEADLINE: wall_deadline(self.longest, client_seconds)}

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

    def _send_with_busy_retries(self, requests, deployment, *args, **kwargs):
        first = self._send_once(requests, deployment, *args, **kwargs)
        if first is None:  # no replica to send to: Jina answers it
            return None
        replicas = self._replicas(deployment, *args, **kwargs)
        request_id = requests[0].request_id

        async def until_a_replica_has_room():
            answer = await first
            for _ in range(replicas - 1):
                if not _busy(answer):
                    break
                answer = await self._send_once(requests, deployment, *args, **kwargs)
            return answer

        call = asyncio.ensure_future(until_a_replica_has_room())
        self._calls[request_id].add(call)
        call.add_done_callback(lambda done: self._forget(request_id, done))
        return call

    def _forget(self, request_id: str, call) -> None:
        calls = self._calls.get(request_id)
        if calls is not None:
            calls.discard(call)
            if not calls:
                del self._calls[request_id]

    def _replicas(self, deployment: str, metadata=None, head: bool = False, shard_id=None, **kwargs) -> int:
        replicas = self._pool._connections.get_replicas(deployment, head, shard_id)
        return len(replicas.get_all_connections()) if replicas else 1


class ExecutorCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """The gateway's RPCs to executors in flight, by request id (a client interceptor)."""

    def __init__(self):
        self._by_request: dict[str, set] = collections.defaultdict(set)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        rpc = await continuation(client_call_details, request)
        request_id = getattr(request, "request_id", None)
        if request_id:
            self._by_request[request_id].add(rpc)
            rpc.add_done_callback(lambda done: self._forget(request_id, done))
        return rpc

    def pop(self, request_id: str, default=()):
        return self._by_request.pop(request_id, default)

    def _forget(self, request_id: str, rpc) -> None:
        rpcs = self._by_request.get(request_id)
        if rpcs is not None:
            rpcs.discard(rpc)
            if not rpcs:
                del self._by_request[request_id]


def busy(response) -> bool:
    """Whether a response is a Busy refusal."""
    status = getattr(getattr(response, "header", None), "status", None)
    return status is not None and status.code == status.ERROR and status.exception.name == "Busy"


def _busy(answer) -> bool:
    """Whether an executor call's answer (a response and its metadata, or a network error) is Busy."""
    return isinstance(answer, tuple) and bool(answer) and busy(answer[0])
