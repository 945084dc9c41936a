"""Imported by the forkserver the Flow's processes fork from (`speech2image.serving.processes`):
the libraries they would each import again. One that fails to import here is left to the part that
needs it, which then stops with its own one-line error: the forkserver must not fail, or no part
of the Flow could start."""

import contextlib
import importlib

from speech2image.serving.processes import LIBRARIES

for library in LIBRARIES:
    with contextlib.suppress(Exception):
        importlib.import_module(library)
