"""A request's deadline: set once where it enters (the gateway: the client's timeout, a `timeout`
parameter, or the server's default), carried to every executor as the `deadline` parameter
(seconds since the epoch), and made a time.monotonic() instant in each process.

The times that follow from it live here too, for the gateway, app.py and the deployment export:
the longest a request may take (:func:`longest_request`), how long a stopping gateway drains
(:func:`drain_seconds`) and how long whatever stops it waits (:func:`stop_seconds`).
"""

import math
import time
from typing import Optional

PARAMETER = "deadline"  # filled by the gateway only: a client's own is replaced
# Jina gives up on an executor call after `timeout_send` and sends it to another replica while
# the first copy still runs: a request's deadline comes sooner, so the executor stops first
SEND_SHARE = 0.8
# after its drain, the time a stopping gateway has to close before it is killed
CLOSE_SECONDS = 30


def longest_request(request_timeout_seconds: float, timeout_send_seconds: float | None = None) -> float:
    """The longest a request may take: the server's `request_timeout_seconds`, and never more than
    SEND_SHARE of Jina's `timeout_send` (in seconds; None, 0 or -1: Jina waits forever)."""
    if timeout_send_seconds and timeout_send_seconds > 0:
        return min(request_timeout_seconds, SEND_SHARE * timeout_send_seconds)
    return request_timeout_seconds


def drain_seconds(longest_seconds: float) -> int:
    """How long a stopping gateway lets the requests in flight finish so that it cuts none short:
    as long as a request may take."""
    return math.ceil(longest_seconds)


def stop_seconds(grace_seconds: float) -> int:
    """How long whatever stops a gateway (Jina's `Pod.close`: the Flow's `timeout_ctrl`, in seconds;
    Kubernetes: the pod's `terminationGracePeriodSeconds`) waits for it: its drain, then its close."""
    return math.ceil(grace_seconds + CLOSE_SECONDS)


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
