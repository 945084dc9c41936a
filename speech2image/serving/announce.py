"""A start-up line for operators once an executor's server is up."""

import os
import sys
import threading
import time


def announce_when_serving(what: str, settle_seconds: float = 1.0, give_up_seconds: float = 120.0) -> None:
    """Print one line on stderr once this process listens on a port (its gRPC server is up).

    Besides telling operators, the line matters to Jina 3.34's ContainerPod: it re-checks a
    container's readiness only when the container prints a line (jina-ai/serve#4707), so
    without one a Flow of docker:// executors can wait forever.
    """
    import psutil

    def wait() -> None:
        process = psutil.Process()
        deadline = time.monotonic() + give_up_seconds
        while time.monotonic() < deadline:
            if any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp")):
                time.sleep(settle_seconds)
                print(f"{what} serving (pid {os.getpid()})", file=sys.stderr, flush=True)
                return
            time.sleep(0.25)

    threading.Thread(target=wait, name="announce-when-serving", daemon=True).start()
