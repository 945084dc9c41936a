"""A request's deadline: set once where it enters (the gateway: the client's timeout, a `timeout`
parameter, or the server's default), carried to every executor as the `deadline` parameter
(seconds since the epoch), and made a time.monotonic() instant in each process."""

import time
from typing import Optional

PARAMETER = "deadline"  # filled by the gateway only: a client's own is replaced


def monotonic_deadline(parameters: dict, longest: float) -> float:
    """The request's deadline in time.monotonic(): the carried one, or `longest` seconds from now,
    whichever comes first (an executor never works longer than its own limit)."""
    own = time.monotonic() + longest
    carried = parameters.get(PARAMETER)
    if not isinstance(carried, (int, float)) or isinstance(carried, bool):
        return own
    return min(own, time.monotonic() + (float(carried) - time.time()))


def wall_deadline(seconds: float, client_seconds: Optional[float] = None) -> float:
    """The epoch instant a request entering now must be answered by: `seconds` (the server's
    longest), or the client's own time if shorter."""
    if client_seconds is not None and client_seconds > 0:
        seconds = min(seconds, client_seconds)
    return time.time() + seconds
