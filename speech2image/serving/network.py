"""Where the parts of the Flow listen: loopback, unless the operator exposes the gateway.

Jina binds every server to 0.0.0.0 unless given a host, and starts each part's metrics server
with `prometheus_client.start_http_server(port)`, whose address is 0.0.0.0 by default and
cannot be passed through Jina. :func:`metrics_bind_from_environment` gives that function the
address in $SPEECH2IMAGE_METRICS_HOST; app.py sets it, and every process of its Flow calls this
at start (multiprocessing's spawn imports the main module, app.py, in each of them first).
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
