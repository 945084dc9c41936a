"""The images an `response_format: url` answer points at: kept in memory, a bounded number for a
bounded time, under unguessable names."""

import secrets
import time
from collections import OrderedDict
from typing import Optional

NAME = "[A-Za-z0-9_-]{32}"  # what secrets.token_urlsafe(24) makes: 192 random bits


class ImageStore:
    """At most `capacity` PNGs, each forgotten `seconds` after it was stored (the oldest first when full)."""

    def __init__(self, capacity: int = 256, seconds: float = 3600.0):
        self.capacity, self.seconds = capacity, seconds
        self._images: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def put(self, png: bytes) -> str:
        """Store a PNG; the name it is served under."""
        self._forget_expired()
        while len(self._images) >= self.capacity:
            self._images.popitem(last=False)
        name = secrets.token_urlsafe(24)
        self._images[name] = (time.monotonic() + self.seconds, png)
        return name

    def get(self, name: str) -> Optional[bytes]:
        self._forget_expired()
        found = self._images.get(name)
        return found[1] if found else None

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._images and next(iter(self._images.values()))[0] <= now:
            self._images.popitem(last=False)
