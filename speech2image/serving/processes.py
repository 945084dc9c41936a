"""How a Flow started here starts its gateway and executor processes: forked from a forkserver
that imported Jina, faster-whisper and diffusers once, instead of each process importing them
again (spawn). An app.py start then takes a third less CPU (about 20 → 13 s on 2 cores).

Never plain fork: a child forked from a process whose PyTorch or CTranslate2 thread pools have run
can deadlock. The forkserver only imports (`speech2image.serving.preload`). Its children get the
environment it started with, at the first process a Flow starts in this process: set variables
before that (a Flow's or a deployment's `env` is applied in each child, after the fork). A
process's end reaches its parent through the forkserver: the forkserver's own end reads as the end
of every process it forked (exit code 255), though they run on.
"""

import multiprocessing
import os

LIBRARIES = ("jina", "faster_whisper", "diffusers.pipelines.auto_pipeline")


def start_flow_processes_from_a_forkserver() -> None:
    """Call before `import jina`, which reads JINA_MP_START_METHOD; a start method already set in
    the environment is kept."""
    os.environ.setdefault("JINA_MP_START_METHOD", "forkserver")
    multiprocessing.set_forkserver_preload(["speech2image.serving.preload"])
