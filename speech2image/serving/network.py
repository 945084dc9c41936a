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

LOOPBACK = "127.0.0.1"
METRICS_HOST = "SPEECH2IMAGE_METRICS_HOST"


def is_loopback(address: str) -> bool:
    """Whether listening on `address` keeps a server to this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_bind_from_environment() -> None:
    """Make prometheus_client's start_http_server bind $SPEECH2IMAGE_METRICS_HOST (when set)."""
    host = os.environ.get(METRICS_HOST)
    if not host:
        return
    import prometheus_client

    if not isinstance(prometheus_client.start_http_server, functools.partial):
        prometheus_client.start_http_server = functools.partial(prometheus_client.start_http_server, addr=host)
