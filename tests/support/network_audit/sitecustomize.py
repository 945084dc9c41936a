"""Loaded by every Python process started with this directory on PYTHONPATH: records each
socket connection attempt and each name lookup (an audit hook) in $SPEECH2IMAGE_NETWORK_LOG,
one line per event: pid, event, address or host (and a line "start" per process)."""

import os
import sys

_LOG = os.environ.get("SPEECH2IMAGE_NETWORK_LOG")


def _record(event, args):
    if event == "socket.connect":
        target = args[1]
    elif event == "socket.getaddrinfo":
        target = args[0]
    else:
        return
    try:
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()}\t{event}\t{target!r}\n")
    except OSError:
        pass


if _LOG:
    _record("socket.connect", (None, "start"))  # every process shows up in the log, whatever it does
    sys.addaudithook(_record)
