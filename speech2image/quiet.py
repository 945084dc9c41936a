"""The known noise of importing jina, silenced where the project imports it (app.py, client.py).

On import jina warns that it set the multiprocessing start method (where JINA_MP_START_METHOD
is set), that it could not (in every process a Flow spawns: the child has it set already), and
its hub module that pkg_resources is deprecated: at every run, and nothing a user can act on.
"""

import os
import warnings

JINA_IMPORT_WARNINGS = ("multiprocessing start method is set to", "failed to set multiprocessing start_method",
                        "pkg_resources is deprecated")


def silence_jina_import_warnings(spawned_processes: bool = False) -> None:
    """Ignore those warnings in this process, and with `spawned_processes` in the processes it
    starts (through PYTHONWARNINGS, which they read at start-up)."""
    for message in JINA_IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    if spawned_processes:
        ours = ",".join(f"ignore:{message}:UserWarning" for message in JINA_IMPORT_WARNINGS)
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), ours)))
