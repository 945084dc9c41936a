"""The project's metrics and trace spans: every label and bucket in one place (their names:
`names`).

Each executor registers these on the Prometheus registry Jina serves at its
`port_monitoring` (Flow `monitoring: true`), beside Jina's own `jina_*` metrics, and
opens its stage spans under the request span of Jina's tracer (Flow `tracing: true`).
Both are off when Jina gives no registry or tracer. Labels: `executor` (the Flow's
executor name: whisper, diffusion) and `runtime_name` (Jina's name of the replica).
Metrics and spans never carry a prompt, a transcript, a file name or a token.

Jina's `jina_process_request_seconds` counts the wait for the executor's scheduler as work;
here the wait is `speech2image_queue_seconds` and the work is
`speech2image_inference_seconds` by stage.
"""

import contextlib

from .gpu import GpuCollector
from .names import (
    AUDIO_SECONDS,
    CANCELLED,
    DROPPED,
    ERRORS,
    IMAGES,
    IN_PROGRESS,
    INFERENCE_SECONDS,
    QUEUE_LENGTH,
    QUEUE_SECONDS,
    REFUSED,
    REQUEST_SECONDS,
    REQUESTS,
)

# from a millisecond of audio decoding to minutes of diffusion on a CPU
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0,
           300.0, 600.0)


class ExecutorMetrics:
    """One executor replica's metrics and spans.

    `registry` is Jina's (`runtime_args.metrics_registry`), or None: then the metrics
    are kept but served nowhere. `tracer` is Jina's executor tracer, or None.
    """

    def __init__(self, executor: str, runtime_name: str, registry=None, tracer=None):
        from prometheus_client import Counter, Gauge, Histogram

        labels = {"executor": executor, "runtime_name": runtime_name}
        names = tuple(labels)
        self.executor, self.tracer = executor, tracer
        self.requests = Counter(REQUESTS, "Requests the executor received", names,
                                registry=registry).labels(**labels)
        self.request_seconds = Histogram(
            REQUEST_SECONDS, "Seconds a request spent in the executor, queue included", names,
            registry=registry, buckets=BUCKETS).labels(**labels)
        self.queue_seconds = Histogram(
            QUEUE_SECONDS, "Seconds a request waited in the executor before its model work began",
            names, registry=registry, buckets=BUCKETS).labels(**labels)
        self.inference_seconds = Histogram(
            INFERENCE_SECONDS, "Seconds of model work, by stage", (*names, "stage"), registry=registry,
            buckets=BUCKETS)
        self.errors = Counter(ERRORS, "Requests refused or failed, by error class", (*names, "kind"),
                              registry=registry)
        self.in_progress = Gauge(IN_PROGRESS, "Requests being worked on now", names,
                                 registry=registry).labels(**labels)
        self.audio_seconds = Counter(AUDIO_SECONDS, "Seconds of audio transcribed", names, registry=registry)
        self.queue_length = Gauge(QUEUE_LENGTH, "Requests waiting for this replica", names,
                                  registry=registry).labels(**labels)
        self.outcomes = {kind: Counter(name, help_text, names, registry=registry).labels(**labels)
                         for kind, name, help_text in (
                             ("refused", REFUSED, "Requests refused at once: the replica's queue was full"),
                             ("dropped", DROPPED, "Requests dropped unworked: their deadline passed in the queue"),
                             ("cancelled", CANCELLED, "Requests whose client went away, queued or running"))}
        self.images = Counter(IMAGES, "Images made", (*names, "model"), registry=registry)
        self.labels = labels
        if registry is not None:
            GpuCollector.register(registry, labels)

    @contextlib.contextmanager
    def request(self, name: str, tracing_context=None, **attributes):
        """Count and time a request, count its error by class, and open its span (a child of
        Jina's request span)."""
        self.requests.inc()
        span = (self.tracer.start_as_current_span(f"{self.executor}.{name}", context=tracing_context,
                                                  attributes=attributes)
                if self.tracer else contextlib.nullcontext())
        with span, self.request_seconds.time():
            try:
                yield
            except Exception as e:
                self.errors.labels(**self.labels, kind=type(e).__name__).inc()
                raise

    @contextlib.contextmanager
    def working(self):
        """Count a request as in progress while its model work runs."""
        with self.in_progress.track_inprogress():
            yield

    def scheduler_event(self, kind: str, value: float) -> None:
        """What the replica's scheduler tells: the queue's length, a wait, a refusal, a drop, a cancel."""
        if kind == "queued":
            self.queue_length.set(value)
        elif kind == "waited":
            self.queue_seconds.observe(value)
        else:
            self.outcomes[kind].inc(value)

    def audio_transcribed(self, seconds: float) -> None:
        self.audio_seconds.labels(**self.labels).inc(seconds)

    @classmethod
    def of(cls, executor, default_name: str) -> "ExecutorMetrics":
        """The metrics of a Jina executor: its Flow name and replica from its runtime arguments,
        Jina's registry (with monitoring) and tracer (with tracing)."""
        runtime = executor.runtime_args
        runtime_name = getattr(runtime, "name", None) or default_name
        return cls(runtime_name.split("/")[0], runtime_name, getattr(runtime, "metrics_registry", None),
                   executor.tracer)

    def images_made(self, model: str, count: int) -> None:
        self.images.labels(**self.labels, model=model).inc(count)

    def observe(self, stage: str, started_ns: int, ended_ns: int, **attributes) -> None:
        """One stage of model work, timed with `time.time_ns()`: a histogram sample and a span."""
        self.inference_seconds.labels(**self.labels, stage=stage).observe((ended_ns - started_ns) / 1e9)
        if self.tracer:
            span = self.tracer.start_span(stage, start_time=started_ns, attributes=attributes)
            span.end(end_time=ended_ns)

    def set_attributes(self, **attributes) -> None:
        """Attributes of the current request span (sizes, languages, counts: never content)."""
        if self.tracer:
            from opentelemetry import trace

            trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})
