"""Every use of Jina's private internals, in one place, for the Jina they were written against.

Jina offers no public hook for these: the gateway's connection pool (Admission wraps the call
that sends a request to one deployment, and hands it a view of the deployment's replicas), the
parts of Jina's gateway that a composite gateway of its own needs, a Flow's replica processes
and monitoring ports (app.py watches and lists them), and the addresses a Flow's start-up
summary shows. Importing this module with a Jina of another minor version stops with one line,
rather than failing later in the middle of a request.
"""

import jina

JINA_TESTED = "3.34"
if ".".join(jina.__version__.split(".")[:2]) != JINA_TESTED:
    raise ImportError(f"speech2image uses Jina {JINA_TESTED}'s internals (the gateway's connection pool, a Flow's "
                      f"pods), not those of jina {jina.__version__}; install jina=={JINA_TESTED}.0 as constraints.txt "
                      "pins it")


# --- the gateway: Jina's composite gateway parts, and its connection pool

def connection_pool(gateway):
    """The gateway's pool of connections to the executors (`GrpcConnectionPool`)."""
    return gateway.streamer._connection_pool


def server_kwargs(gateway) -> list[dict]:
    """The arguments of each server of a composite gateway, one per protocol."""
    return gateway._server_kwargs


def request_handler(server):
    """A gateway server's request handler (what answers dry runs)."""
    return server._request_handler


def intercept_sending(pool, send):
    """Make `send` the pool's sending of one request to one deployment (`send_requests_once`,
    called with its arguments); return Jina's own."""
    own = pool.send_requests_once
    pool.send_requests_once = send
    return own


def replicas_of(pool, deployment: str, head: bool, shard_id):
    """A deployment's replicas (Jina's `_ReplicaList`), or None when it has none to send to."""
    return pool._connections.get_replicas(deployment, head, shard_id)


def replica_count(replicas) -> int:
    return len(replicas.get_all_connections())


def send_to(pool, requests, replicas, *, endpoint, metadata, timeout, retries):
    """Jina's sending of `requests` to `replicas` (a `_ReplicaList`, or a view of one), with its
    retries on a lost connection or a timeout: a task of (response, metadata) or a network error."""
    return pool._send_requests(requests, replicas, endpoint=endpoint, metadata=metadata, timeout=timeout,
                               retries=retries)


def stream_to(pool, request, replicas, *, endpoint: str, timeout: float):
    """Jina's streaming of one document `request` to `replicas` (a `_ReplicaList`, or a view of
    one), without its retries (a retry after the first answer would repeat the stream): an async
    generator of (response, metadata), or of (error, None) when the call fails."""
    return pool._send_single_doc_request(request, replicas, endpoint=endpoint, timeout=timeout, retries=0)


class SkippingReplicas:
    """A deployment's replicas (Jina's `_ReplicaList`) as one request's sending sees them: its
    round robin skips the addresses in `skipped`; `last` is the address handed out last."""

    def __init__(self, replicas):
        self._replicas = replicas
        self.skipped: set = set()
        self.last: str | None = None

    async def get_next_connection(self, num_retries: int = 3):
        connection = None
        for _ in range(replica_count(self._replicas)):
            connection = await self._replicas.get_next_connection(num_retries=num_retries)
            if connection is None or connection.address not in self.skipped:
                break
        self.last = connection.address if connection is not None else None
        return connection

    def get_all_connections(self) -> list:
        """The connections not skipped: Jina's sending tries each of them before it gives up (with
        every one it would ask the round robin forever for one it has not tried)."""
        return [c for c in self._replicas.get_all_connections() if c is None or c.address not in self.skipped]

    def __getattr__(self, name):
        return getattr(self._replicas, name)


# --- a Flow (app.py)

def show_addresses(flow, address: str) -> None:
    """Have the Flow's start-up summary show `address`, where it would look up this machine's
    public address at three web services (and its private one by a UDP connect)."""
    flow._public_ip = flow._internal_ip = address


def replica_processes(deployment) -> list:
    """A running deployment's replica processes (its pods' multiprocessing workers)."""
    return [pod.worker for shard in deployment.shards.values() for pod in shard._pods]


def replica_monitoring_ports(deployment) -> list[int]:
    """The metrics port of each replica of a deployment."""
    return [pod.port_monitoring for pod in deployment.pod_args["pods"][0]]
