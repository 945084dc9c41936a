"""speech2image: turn a spoken sentence into images — the library behind the Jina Flow.

The tree shows the architecture: the contracts every part shares at the top (`schema`,
`errors`, `limits`, `options`, `hardware`, `cache`), then one package per domain: `asr`
(speech → text), `imaging` (text → images), `serving` (how a replica runs its model work),
`observability` (metrics, stage timing). Nothing here imports Jina: only the gateway, the
executors and the entry points do. Importing the package imports none of the heavy
libraries; `asr.options` and `imaging.options` never do (the client and the page use them).
Importing it turns off the telemetry of the libraries it drives (`quiet`).
"""

from .quiet import no_telemetry

__version__ = "0.1.0"
no_telemetry()
