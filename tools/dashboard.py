"""The dashboard, defined once: its panels (PromQL), written as a Grafana dashboard and a
Prometheus console page.

    python -m tools.dashboard      # rewrites dashboards/grafana-dashboard.json
                                   # and dashboards/consoles/speech2image.html

The busy-fraction panel names the bottleneck: work seconds per second of each executor
replica (≈ 1 means saturated: add replicas of that executor).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from speech2image.observability import names

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_JSON = ROOT / "dashboards" / "grafana-dashboard.json"
CONSOLE_PAGE = ROOT / "dashboards" / "consoles" / "speech2image.html"
WINDOW = "1m"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # Grafana's unit name
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL)
    gpu_only: bool = False  # empty where there is no GPU


def _quantiles(metric: str, by: str) -> tuple[tuple[str, str], ...]:
    legend = " ".join("{{%s}}" % label for label in by.split(", "))
    return tuple((f"p{q} {legend}", f"histogram_quantile(0.{q}, sum by ({by}, le) (rate({metric}_bucket[{WINDOW}])))")
                 for q in (50, 95))


PANELS = (
    Panel("Requests per second by executor", "reqps", (
        ("{{executor}}", f"sum by (executor) (rate({names.REQUESTS}_total[{WINDOW}]))"),)),
    Panel("Errors per second by executor and kind", "reqps", (
        ("{{executor}} {{kind}}", f"sum by (executor, kind) (rate({names.ERRORS}_total[{WINDOW}]))"),)),
    Panel("Busy fraction per executor replica (≈1: the bottleneck)", "percentunit", (
        ("{{runtime_name}}",
         f"sum by (executor, runtime_name) (rate({names.INFERENCE_SECONDS}_sum[{WINDOW}]))"),)),
    Panel("Request latency in each executor, queue included (p50, p95)", "s",
          _quantiles(names.REQUEST_SECONDS, "executor")),
    Panel("Latency end to end at the gateway (mean)", "s", (
        ("gateway", f"sum(rate(jina_receiving_request_seconds_sum[{WINDOW}])) / "
                    f"sum(rate(jina_receiving_request_seconds_count[{WINDOW}]))"),)),
    Panel("Model work per stage (p50, p95)", "s", _quantiles(names.INFERENCE_SECONDS, "executor, stage")),
    Panel("Queue wait per executor (p50, p95)", "s", _quantiles(names.QUEUE_SECONDS, "executor")),
    Panel("Requests waiting per executor replica (bounded by max_queued_requests)", "short", (
        ("{{runtime_name}}", f"sum by (executor, runtime_name) ({names.QUEUE_LENGTH})"),)),
    Panel("Refused (busy), dropped (deadline) and cancelled (client gone) per second", "reqps", tuple(
        (f"{kind} {{{{executor}}}}", f"sum by (executor) (rate({name}_total[{WINDOW}]))")
        for kind, name in (("refused", names.REFUSED), ("dropped", names.DROPPED),
                           ("cancelled", names.CANCELLED)))),
    Panel("Requests in progress", "short", (
        ("{{runtime_name}}", f"sum by (executor, runtime_name) ({names.IN_PROGRESS})"),)),
    Panel("Images per second", "short", (
        ("{{model}}", f"sum by (model) (rate({names.IMAGES}_total[{WINDOW}]))"),)),
    Panel("Audio seconds transcribed per second", "short", (
        ("audio", f"sum(rate({names.AUDIO_SECONDS}_total[{WINDOW}]))"),)),
    Panel("GPU memory used", "bytes", (
        ("{{runtime_name}} gpu {{gpu}}", f"max by (runtime_name, gpu) ({names.GPU_MEMORY_USED})"),),
          gpu_only=True),
    Panel("GPU utilisation", "percentunit", (
        ("{{runtime_name}} gpu {{gpu}}", f"max by (runtime_name, gpu) ({names.GPU_UTILIZATION})"),),
          gpu_only=True),
)


def grafana_dashboard() -> dict:
    """A Grafana dashboard that imports as is: its Prometheus datasource is a variable."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = [
        {
            "id": k + 1, "type": "timeseries", "title": panel.title, "datasource": datasource,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (k % 2), "y": 8 * (k // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "datasource": datasource, "expr": expr, "legendFormat": legend}
                        for j, (legend, expr) in enumerate(panel.queries)],
        }
        for k, panel in enumerate(PANELS)
    ]
    return {
        "title": "speech2image", "uid": "speech2image", "tags": ["speech2image", "jina"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "panels": panels,
    }


CONSOLE_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>speech2image</title>
<link rel="stylesheet" href="{{ pathPrefix }}/classic/static/rickshaw/rickshaw.min.css">
<link rel="stylesheet" href="{{ pathPrefix }}/classic/static/css/prom_console.css">
<script src="{{ pathPrefix }}/classic/static/d3/d3.min.js"></script>
<script src="{{ pathPrefix }}/classic/static/rickshaw/rickshaw.min.js"></script>
<script src="{{ pathPrefix }}/classic/static/jquery/jquery.min.js"></script>
<script>var PATH_PREFIX = "{{ pathPrefix }}";</script>
<script src="{{ pathPrefix }}/classic/static/js/prom_console.js"></script>
</head>
<body style="margin: 1em">
"""


def console_page() -> str:
    """A Prometheus console page: Prometheus serves it and its own graph script draws it; its
    graphs span 15 minutes, or `?seconds=N`."""
    parts = [CONSOLE_HEAD, "<h1>speech2image</h1>",
             # the graphs' span: 15 minutes, or ?seconds=N in the page's address
             '<script>var SECONDS = Number(new URLSearchParams(location.search).get("seconds")) || 900;</script>',
             "<p>Busy fraction ≈ 1 names the bottleneck: add replicas of that executor.</p>"]
    for k, panel in enumerate(PANELS):
        exprs = ", ".join(json.dumps(expr) for _, expr in panel.queries)
        legends = ", ".join(json.dumps(legend.replace("{{", "[[").replace("}}", "]]")) for legend, _ in panel.queries)
        parts.append(f"""<h3>{panel.title}</h3>
<div id="panel{k}"></div>
<script>
new PromConsole.Graph({{node: document.querySelector("#panel{k}"), expr: [{exprs}],
  name: [{legends}], duration: SECONDS, height: 160, width: 900}});
</script>""")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write() -> None:
    GRAFANA_JSON.parent.mkdir(parents=True, exist_ok=True)
    GRAFANA_JSON.write_text(json.dumps(grafana_dashboard(), indent=1, ensure_ascii=False) + "\n")
    CONSOLE_PAGE.parent.mkdir(parents=True, exist_ok=True)
    CONSOLE_PAGE.write_text(console_page())


if __name__ == "__main__":
    write()
    print(f"wrote {GRAFANA_JSON.relative_to(ROOT)} and {CONSOLE_PAGE.relative_to(ROOT)}")
