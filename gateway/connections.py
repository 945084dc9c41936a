"""The HTTP port's connections: TLS that offers only forward-secret AEAD ciphers, no `server`
header, and connections that cannot be held open without sending a request.

uvicorn (0.23) closes a connection only when it is idle after a response (`timeout_keep_alive`):
one that never sends a whole request head — idle from the start, or sending it a byte at a time
— is kept for ever. The protocol below closes it after `header_timeout_seconds`, and closes a new
connection at once while `max_connections` are open.
"""

import asyncio
from typing import Optional

from uvicorn.protocols.http.h11_impl import H11Protocol

from speech2image.limits import ConnectionLimits

# TLS 1.2: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (TLS 1.3's suites are all such)
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def uvicorn_settings(limits: ConnectionLimits) -> dict:
    """uvicorn's Config arguments for the gateway's HTTP server."""
    return {"http": _protocol(limits), "server_header": False, "ssl_ciphers": TLS_CIPHERS}


def _protocol(limits: ConnectionLimits) -> type:
    class BoundedConnection(H11Protocol):
        """An HTTP/1.1 connection that must send each request head within the header timeout."""

        _head_timer: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.close()
                return
            self._await_head()

        def _await_head(self):
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(limits.header_timeout_seconds, self._head_too_late)

        def _head_too_late(self):
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def _cancel_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def handle_events(self):
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a whole request head arrived
                self._cancel_head_timer()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()  # the next request's head, on a kept-alive connection

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

    return BoundedConnection
