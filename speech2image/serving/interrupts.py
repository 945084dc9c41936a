"""Ctrl-C in a terminal reaches every process of its group: an executor replica leaves it to
app.py, which drains the gateway and then stops the replicas (Jina's own handler would end the
replica at once, aborting the calls in flight)."""

import asyncio
import signal


def leave_interrupts_to_the_flow() -> None:
    """Ignore SIGINT in this replica, where Jina's runtime handles it (its event loop has a
    handler); anywhere else (a test constructing an executor) nothing changes."""
    try:
        handled = asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
    except RuntimeError:  # no running loop: not a replica's runtime
        return
    if handled:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
