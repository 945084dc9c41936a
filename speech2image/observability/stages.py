"""The one stage timer: how long each stage of a request's model work took.

Code we call is timed with :meth:`StageClock.stage`; stages that run inside a library call
(the text encoder, the UNet and the VAE decoder inside a diffusers pipeline) are timed with
:meth:`StageClock.watch`, through PyTorch forward hooks on their modules — the library's
own extension point. Each stage reaches `observe` (the executor's metrics and spans) as
`(stage, started_ns, ended_ns)` in `time.time_ns()`.
"""

import contextlib
import time
from typing import Callable, Iterable, Optional

Observe = Callable[[str, int, int], None]


class StageClock:
    """Times stages and reports each to `observe` (nowhere, without one)."""

    def __init__(self, observe: Optional[Observe] = None):
        self.observe = observe
        self._aside = False

    @contextlib.contextmanager
    def aside(self):
        """Module calls in the `with` block are not timed by :meth:`watch` (a stage of their own
        times them, e.g. a preview decoded between two denoising steps)."""
        self._aside = True
        try:
            yield
        finally:
            self._aside = False

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time the code in the `with` block as stage `name`."""
        started = time.time_ns()
        try:
            yield
        finally:
            self._report(name, started, time.time_ns())

    @contextlib.contextmanager
    def watch(self, stages: dict[str, Iterable]):
        """While the `with` block runs, time every forward call of each stage's torch modules;
        then report each stage that ran, from its first call's start to its last call's end."""
        spans: dict[str, list[int]] = {}
        handles = []
        for name, modules in stages.items():
            def started(*_, name=name):
                if not self._aside:
                    spans.setdefault(name, [time.time_ns(), 0])

            def ended(*_, name=name):
                if not self._aside:
                    spans[name][1] = time.time_ns()

            for module in modules:
                handles += [module.register_forward_pre_hook(started), module.register_forward_hook(ended)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for name, (begun, finished) in sorted(spans.items(), key=lambda item: item[1][0]):
                if finished:
                    self._report(name, begun, finished)

    def _report(self, name: str, started: int, ended: int) -> None:
        if self.observe:
            self.observe(name, started, ended)
