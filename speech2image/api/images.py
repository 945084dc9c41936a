"""The images an `response_format: url` answer points at: kept in memory under unguessable names,
for a bounded time, in bounded room for each caller.

Each caller (an API key's id; one caller where no key is asked) has its own room of
`images_per_caller` images and `bytes_per_caller` bytes: storing past it forgets that caller's
own oldest image, never another's. All rooms together are bounded by `max_bytes`: an image that
would pass it is refused (StoreFull), not made room for at another caller's expense.
"""

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from ..errors import Busy

MEGA = 2**20
NAME = "[A-Za-z0-9_-]{32}"  # what secrets.token_urlsafe(24) makes: 192 random bits


@dataclass(frozen=True)
class StoredImages:
    """Bounds of the image store."""

    seconds: float = 3600.0  # how long an image is kept
    images_per_caller: int = 64
    bytes_per_caller: int = 64 * MEGA
    max_bytes: int = 512 * MEGA  # every caller's images together


class StoreFull(Busy):
    """The image store has no room left for this image without forgetting another caller's."""


class ImageStore:
    """PNGs by name, each forgotten `seconds` after it was stored, in a room per caller."""

    def __init__(self, bounds: StoredImages = StoredImages()):
        self.bounds = bounds
        self._images: OrderedDict[str, tuple[float, Optional[str], bytes]] = OrderedDict()  # oldest first
        self._rooms: dict[Optional[str], OrderedDict[str, int]] = {}  # caller → its names and sizes, oldest first
        self.bytes = 0

    def put(self, png: bytes, caller: Optional[str] = None) -> str:
        """Store a PNG for `caller`; the name it is served under. StoreFull when every room
        together is full."""
        self._forget_expired()
        if len(png) > self.bounds.bytes_per_caller:
            raise StoreFull(f"an image of {len(png)} bytes is over the {self.bounds.bytes_per_caller} bytes kept per "
                            "caller; ask for response_format=b64_json", retry_after=1)
        room = self._rooms.setdefault(caller, OrderedDict())
        while room and (len(room) >= self.bounds.images_per_caller
                        or sum(room.values()) + len(png) > self.bounds.bytes_per_caller):
            self._forget(next(iter(room)))
        if self.bytes + len(png) > self.bounds.max_bytes:
            oldest = next(iter(self._images.values()))[0] if self._images else time.monotonic()
            raise StoreFull("the server keeps no more images now; ask for response_format=b64_json, or retry later",
                            retry_after=max(1, int(oldest - time.monotonic()) + 1))
        name = secrets.token_urlsafe(24)
        self._images[name] = (time.monotonic() + self.bounds.seconds, caller, png)
        room[name] = len(png)
        self.bytes += len(png)
        return name

    def get(self, name: str) -> Optional[bytes]:
        self._forget_expired()
        found = self._images.get(name)
        return found[2] if found else None

    def _forget(self, name: str) -> None:
        _, caller, png = self._images.pop(name)
        room = self._rooms[caller]
        del room[name]
        if not room:
            del self._rooms[caller]
        self.bytes -= len(png)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._images and next(iter(self._images.values()))[0] <= now:
            self._forget(next(iter(self._images)))
