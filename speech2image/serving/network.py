"""Where the parts of the Flow listen: loopback, unless the operator exposes the gateway.

Jina binds every server to 0.0.0.0 unless given a host, and starts each part's metrics server
with `prometheus_client.start_http_server(port)`, whose address is 0.0.0.0 by default and
cannot be passed through Jina. :func:`metrics_bind_from_environment` gives that function the
address in $SPEECH2IMAGE_METRICS_HOST; app.py sets it, and every process of its Flow calls this
at start (multiprocessing's forkserver imports the main module, app.py, in each of them first).
"""

import functools
import ipaddress
import os

from ..errors import ConfigurationError

LOOPBACK = "127.0.0.1"
METRICS_HOST = "SPEECH2IMAGE_METRICS_HOST"
# Jina's channels ping every 10 s, between calls too (grpc.keepalive_time_ms 9999, permit without
# calls), and Jina sets its servers' allowance for that under names gRPC does not read
# (grpc.http1.*): gRPC's default — one ping per 5 minutes without data, two strikes — then closes
# an idle channel with GOAWAY too_many_pings, and a call sent on it fails over to another replica.
# Every gRPC server of the Flow (executors and gateway) is given the allowance under its real name.
GRPC_SERVER_OPTIONS = {"grpc.http2.min_ping_interval_without_data_ms": 5000}
# The gateway's channels to the executors. gRPC waits longer and longer (1 s × 1.6 per try, up to
# 2 minutes) before it connects again to an address that refused it, and a replica refuses until
# it has loaded its model; a call in that wait fails at once (UNAVAILABLE), even after the replica
# came up. Jina answers UNAVAILABLE by making a new channel, which by default shares the old one's
# connection and its wait (gRPC's global subchannel pool): with a pool per channel it connects anew.
EXECUTOR_CHANNEL_OPTIONS = {"grpc.use_local_subchannel_pool": 1, "grpc.initial_reconnect_backoff_ms": 100,
                            "grpc.max_reconnect_backoff_ms": 1000}


def is_loopback(address: str) -> bool:
    """Whether listening on `address` keeps a server to this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_exposure(listen: str, credentials_flag: str, has_credentials: bool, allow_unauthenticated: bool,
                   what: str) -> None:
    """Refuse (ConfigurationError, one line) to serve `what` beyond loopback to whoever comes, unless
    credentials (asked by `credentials_flag`) are given or the operator allows it on purpose."""
    if not is_loopback(listen) and not has_credentials and not allow_unauthenticated:
        raise ConfigurationError(f"--listen {listen} would let anyone who reaches this machine use {what}: add "
                                 f"{credentials_flag}, or pass --allow-unauthenticated on purpose")


def metrics_bind_from_environment() -> None:
    """Make prometheus_client's start_http_server bind $SPEECH2IMAGE_METRICS_HOST (when set)."""
    host = os.environ.get(METRICS_HOST)
    if not host:
        return
    import prometheus_client

    if not isinstance(prometheus_client.start_http_server, functools.partial):
        prometheus_client.start_http_server = functools.partial(prometheus_client.start_http_server, addr=host)


class HostPolicy:
    """Which `Host` a server answers to, and which requests come from another site's page.

    A page on any web site can make the browser of someone on this machine send requests to a
    server on loopback; with DNS rebinding, under the site's own name. So a server answers only
    to its names (`localhost`, and those the operator allows) and to IP addresses (a page at an
    address is that address's own), and refuses a request that changes something (not GET, HEAD
    or OPTIONS), or a WebSocket, whose `Origin` is another site's.
    """

    READING = ("GET", "HEAD", "OPTIONS")

    def __init__(self, names=()):
        self.names = {"localhost", *(name.strip().lower().rstrip(".") for name in names)} - {""}

    def serves(self, host: str) -> bool:
        """Whether `host` (a Host header: a name or an address, and a port) is one of this server's."""
        from urllib.parse import urlsplit

        try:
            name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
        except ValueError:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names

    def foreign(self, origin: str, host: str, method: str, websocket: bool = False) -> bool:
        """Whether a request is one that changes something, sent by another site's page."""
        changes = websocket or method not in self.READING
        return bool(origin) and changes and origin.partition("://")[2].lower() != host.lower()
