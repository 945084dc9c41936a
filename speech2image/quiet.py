"""Quiet: no telemetry on the network from the libraries the project drives, and Jina's import
warnings off the terminal.

ONNX Runtime (which runs faster-whisper's Silero VAD) sends usage events to Microsoft (DNS for
mobile.events.data.microsoft.com, then HTTPS) unless ORT_DISABLE_TELEMETRY is set before it
starts; huggingface_hub reports downloads unless HF_HUB_DISABLE_TELEMETRY is set. Importing
`speech2image` sets these opt-outs (:func:`no_telemetry`), in its process and the ones it starts.
OpenVINO's model converter and NNCF report usage to Google Analytics (from a forked process) unless
a file in the user's home says not to; no variable turns it off: :func:`no_openvino_telemetry`
makes their telemetry package unimportable, and both fall back to their own stubs.

On import jina warns that it set the multiprocessing start method (where JINA_MP_START_METHOD
is set), that it could not (in every process a Flow spawns: the child has it set already), and
its hub module that pkg_resources is deprecated: at every run, and nothing a user can act on.
And Jina posts telemetry to its own server on every runtime start and stop and on every
Client, unless JINA_OPTOUT_TELEMETRY is set: traffic nobody asked for. The entry points call
:func:`quiet_jina` before they import jina.
"""

import os
import sys
import warnings

TELEMETRY_OPT_OUTS = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "JINA_OPTOUT_TELEMETRY": "1"}

JINA_IMPORT_WARNINGS = ("multiprocessing start method is set to", "failed to set multiprocessing start_method",
                        "pkg_resources is deprecated")


def quiet_jina(spawned_processes: bool = False) -> None:
    """Opt out of Jina's telemetry and ignore its import warnings in this process, and with
    `spawned_processes` in the processes it starts (they read the environment at start-up)."""
    no_telemetry()
    for message in JINA_IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    if spawned_processes:
        ours = ",".join(f"ignore:{message}:UserWarning" for message in JINA_IMPORT_WARNINGS)
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), ours)))


def no_telemetry() -> None:
    """Opt out of every telemetry the project's libraries would send (an operator's own setting of
    one of these variables is kept)."""
    for name, value in TELEMETRY_OPT_OUTS.items():
        os.environ.setdefault(name, value)


def no_openvino_telemetry() -> None:
    """Keep OpenVINO's and NNCF's telemetry from loading in this process (call before importing
    them): each then uses its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)
