"""Observability for real: app.py's metrics endpoints, traces into a real OTLP gRPC receiver,
and the dashboard's every query on a real Prometheus (Debian's package).
"""

import json
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from speech2image.observability import metrics, names
from tests.support.app import App
from tests.support.app import run_client as client
from tests.support.metrics import samples, scrape
from tests.support.ports import free_port
from tests.support.speech import SPEECH
from tools import dashboard

PROMPT = "a lighthouse made of glass"  # must never show in metrics or spans


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP gRPC trace receiver (opentelemetry-proto's collector service), spans kept in memory."""

    def __init__(self):
        self.spans, self.lock = [], threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource in request.resource_spans:
                service = next((a.value.string_value for a in resource.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def receiver():
    server, servicer = grpc.server(futures.ThreadPoolExecutor(max_workers=4)), Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


@pytest.fixture(scope="module")
def server(receiver):
    with App("--diffusion-replicas", "2", "--tracing", f"http://localhost:{receiver[0]}") as app:
        yield app.port, app.metrics_urls


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """Requests through the Flow: two clips, a text prompt and a refused request."""
    port, _ = server
    out = tmp_path_factory.mktemp("out")
    not_audio = out / "notes.wav"
    not_audio.write_text("not audio\n" * 40)
    for args in ([SPEECH / "jfk.flac", SPEECH / "prompt4.wav", "--num-images", 2], ["--text", PROMPT], [not_audio]):
        client(*args, "--host", f"localhost:{port}", "--width", 32, "--steps", 1, "--out", out, "--json")  # one call
    return server


@pytest.mark.flow
def test_ready_line_is_followed_by_every_metrics_url(server):
    _, urls = server
    assert len(urls) == 4  # gateway, whisper, 2 diffusion replicas
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) for url in urls)
    assert len(set(urls)) == 4


@pytest.mark.flow
def test_histograms_counters_and_gauges_per_executor_and_replica(served):
    _, urls = served
    gateway, whisper, *replicas = (scrape(url) for url in urls)
    assert "jina_" in gateway
    assert "# TYPE speech2image_queue_seconds histogram" in whisper
    stages = samples(whisper, "speech2image_inference_seconds_count")
    assert {re.search(r'stage="(\w+)"', k).group(1) for k in stages} >= {"decode", "vad", "transcribe"}
    assert sum(samples(whisper, "speech2image_requests_total").values()) == 3
    assert sum(samples(whisper, "speech2image_audio_seconds_total").values()) == pytest.approx(11.0 + 2.5, abs=1)
    [(labels, refused)] = samples(whisper, "speech2image_errors_total").items()
    assert 'kind="AudioError"' in labels and refused == 1
    diffusion = "\n".join(replicas)
    assert sum(samples(diffusion, "speech2image_requests_total").values()) == 2
    assert sum(samples(diffusion, "speech2image_images_total").values()) == 5  # 2 + 2 + 1
    stages = samples(diffusion, "speech2image_inference_seconds_count")
    assert {re.search(r'stage="(\w+)"', k).group(1) for k in stages} == set(names.STAGES["diffusion"]) - {names.PREVIEW_DECODE}
    assert all('executor="diffusion"' in k for k in samples(diffusion, "speech2image_queue_seconds_count"))
    runtimes = set(re.findall(r'runtime_name="(diffusion/rep-\d)"', diffusion))
    assert runtimes == {"diffusion/rep-0", "diffusion/rep-1"}
    assert all(v == 0 for v in samples(diffusion, "speech2image_in_progress").values())
    for text in (gateway, whisper, diffusion):  # no content, no file names
        assert PROMPT not in text and "jfk" not in text and "country" not in text.lower()


@pytest.mark.flow
def test_one_trace_per_request_with_stage_spans_under_the_executor_spans(served, receiver):
    spans = receiver[1].spans
    deadline = time.monotonic() + 120  # Jina exports in batches, each part on its own: a bound on a hang only
    while time.monotonic() < deadline:
        seen = {span.name for _, span in spans}
        parts = {service.split("/")[0] for service, _ in spans}
        if {"whisper.transcribe", "diffusion.generate", "vae_decode", "png_encode"} <= seen and "gateway" in parts:
            break
        time.sleep(0.5)
    by_trace = defaultdict(list)
    for service, span in list(spans):
        by_trace[span.trace_id].append((service, span))
    [trace] = [t for t in by_trace.values() if any(s.name == "diffusion.generate" for _, s in t)
               and any(s.name == "whisper.transcribe" for _, s in t)
               and any(s.name == "transcribe" for _, s in t)][:1]
    services = {service for service, _ in trace}
    assert {"gateway", "whisper", "diffusion"} <= {s.split("/")[0] for s in services}, services
    ids = {span.span_id: span for _, span in trace}
    for _, span in trace:
        if span.name in names.STAGES["whisper"][1:]:
            assert ids[span.parent_span_id].name == "whisper.transcribe"
        if span.name in names.STAGES["diffusion"]:
            assert ids[span.parent_span_id].name == "diffusion.generate"
    attributes = {a.key: a.value for _, span in trace for a in span.attributes}
    assert attributes["audio_seconds"].double_value > 0 and attributes["language"].string_value == "en"
    assert attributes["width"].int_value == 32 and attributes["images"].int_value == 2
    everything = str([span for _, span in spans])
    assert PROMPT not in everything and "country" not in everything.lower()


@pytest.mark.skipif(not shutil.which("prometheus") and not shutil.which("apt-get"),
                    reason="needs Debian's prometheus package (apt-get install prometheus)")
@pytest.mark.flow
def test_every_dashboard_query_returns_data_on_a_real_prometheus(served, tmp_path):
    from tools.prometheus import Prometheus

    port, urls = served
    with Prometheus({"speech2image": urls}, free_port()) as prometheus:
        # a scrape, then two requests each followed by a scrape: every rate() has samples that differ
        prometheus.wait_for_scrape()
        for _ in range(2):
            client(SPEECH / "prompt4.wav", "--host", f"localhost:{port}", "--width", 32, "--steps", 1,
                   "--out", tmp_path)
            prometheus.wait_for_scrape()
        empty = []
        for panel in dashboard.PANELS:
            if panel.gpu_only:
                continue
            for _, expr in panel.queries:
                answer = json.loads(urllib.request.urlopen(
                    f"{prometheus.url}/api/v1/query?query={urllib.parse.quote(expr)}").read())
                assert answer["status"] == "success", expr
                if not answer["data"]["result"]:
                    empty.append(expr)
        assert not empty, empty
        page = urllib.request.urlopen(prometheus.dashboard).read().decode()
        assert all(panel.title in page for panel in dashboard.PANELS)


def test_the_shipped_dashboards_are_the_generated_ones():
    assert json.loads(dashboard.GRAFANA_JSON.read_text()) == dashboard.grafana_dashboard()
    assert dashboard.CONSOLE_PAGE.read_text() == dashboard.console_page()
    grafana = dashboard.grafana_dashboard()
    assert grafana["templating"]["list"][0]["type"] == "datasource"
    assert {t["datasource"]["uid"] for p in grafana["panels"] for t in p["targets"]} == {"${datasource}"}


@pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus package")
def test_prometheus_on_a_busy_port_fails_with_one_line():
    import socket

    from speech2image.errors import PrometheusError
    from tools.prometheus import Prometheus

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(PrometheusError) as raised:
            Prometheus({"speech2image": ["http://localhost:1/metrics"]}, busy.getsockname()[1])
    message = str(raised.value)
    assert message.startswith("prometheus did not start on port") and "address already in use" in message
    assert "\n" not in message


def test_gpu_gauges_only_where_nvml_finds_a_gpu():
    import torch
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics.ExecutorMetrics("diffusion", "diffusion/rep-0", registry)
    exposed = generate_latest(registry).decode()
    assert (names.GPU_MEMORY_USED in exposed) == torch.cuda.is_available()
    assert "speech2image_in_progress" in exposed
