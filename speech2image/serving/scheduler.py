"""The scheduler of an executor replica: its model work runs one request at a time.

Jina hands a replica's requests to its executor concurrently (`allow_concurrent`), so the
wait for a turn happens here, where it is measured, rather than inside Jina.
"""

import contextlib
import threading
import time
from typing import Callable, Optional


class Scheduler:
    """One request's model work at a time; `waited` is told how long each request waited."""

    def __init__(self, waited: Optional[Callable[[float], None]] = None):
        self._lock = threading.Lock()
        self._waited = waited

    @contextlib.contextmanager
    def turn(self):
        """Wait for this request's turn, then hold it for the `with` block."""
        started = time.perf_counter()
        with self._lock:
            if self._waited:
                self._waited(time.perf_counter() - started)
            yield
