"""Free loopback ports, chosen where nothing else picks its own: below the kernel's ephemeral
range (the local ports of outgoing connections) and below Jina's random ports (49153-65535), so
that no connection and no executor of the app takes a port between its choice and its use."""

import random
import socket
from pathlib import Path

JINA_RANDOM_PORTS_FROM = 49153
LOWEST = 10000


def _chosen_from() -> range:
    try:
        ephemeral_from = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_from = 32768  # Linux's default
    return range(LOWEST, min(ephemeral_from, JINA_RANDOM_PORTS_FROM) - 1)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A port nothing listens on now."""
    while True:
        port = random.choice(_chosen_from())
        if _free(port):
            return port


def free_port_pair() -> int:
    """A port whose next one is free too (app.py serves gRPC on PORT and HTTP on PORT + 1)."""
    while True:
        port = random.choice(_chosen_from())
        if _free(port) and _free(port + 1):
            return port
