"""Write Kubernetes manifests and a docker-compose file from flow.yml, with no network.

    python tools/export_flow.py [--out deploy] [--namespace speech2image] [--flow flow.yml] [--tls]

Jina's own export (`Flow.to_kubernetes_yaml`, `Flow.to_docker_compose_yaml`) does the
work; flow.yml names the gateway's own image, so Jina's (closed) hub is never called.
Secrets are never written, only referenced: Kubernetes reads the HF token from the Secret
`speech2image-hf-token` (key HF_TOKEN), the gateway's API keys from `speech2image-api-keys`
(key keys.txt) and, with --tls, its certificate from the TLS Secret `speech2image-tls`;
docker compose reads the token from the shell's $HF_TOKEN. A NetworkPolicy per part lets
only the gateway reach the executors and only Prometheus reach the metrics ports.
"""

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # speech2image: the limits the grace period follows

from speech2image.limits import RequestLimits  # noqa: E402
from speech2image.serving.deadline import drain_seconds, longest_request, stop_seconds  # noqa: E402
from speech2image.serving.network import GRPC_SERVER_OPTIONS  # noqa: E402

SECRET = "speech2image-hf-token"
KEYS_SECRET, KEYS_DIR = "speech2image-api-keys", "/etc/speech2image/keys"
TLS_SECRET, TLS_DIR = "speech2image-tls", "/etc/speech2image/tls"
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}  # the pods allowed to scrape metrics ports


def load_flow(spec: dict, flow_file: Path):
    """flow.yml (`spec`, read from `flow_file`) as a Jina Flow, without the env entries that would
    inline secrets."""
    from jina import Flow

    spec = copy.deepcopy(spec)
    secrets = {}
    for executor in spec["executors"]:
        executor["grpc_server_options"] = GRPC_SERVER_OPTIONS  # the gateway sets its own
        env = executor.pop("env", {}) or {}
        secrets[executor["name"]] = sorted(env)  # only names travel; values come from the cluster
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=flow_file.parent) as stripped:
        stripped.write(yaml.safe_dump(spec, sort_keys=False))
        stripped.flush()
        return Flow.load_config(stripped.name), secrets


def export(out: Path, namespace: str, flow_file: Path, tls: bool = False) -> tuple[Path, Path]:
    spec = yaml.safe_load(flow_file.read_text())
    flow, secrets = load_flow(spec, flow_file)
    k8s_dir, compose_file = out / "kubernetes", out / "docker-compose.yml"
    flow.to_kubernetes_yaml(str(k8s_dir), k8s_namespace=namespace)
    flow.to_docker_compose_yaml(str(compose_file), network_name="speech2image")
    drain = gateway_drain_seconds(spec)
    for manifest in k8s_dir.glob("*/*.yml"):
        _finish_k8s(manifest, secrets.get(manifest.parent.name, []), tls, drain)
    _finish_compose(compose_file, secrets)
    return k8s_dir, compose_file


def _without_search_paths(args: list[str]) -> list[str]:
    """Drop `--extra-search-paths <this machine's directory>`: the images hold their code."""
    return [a for k, a in enumerate(args) if a != "--extra-search-paths" and (k == 0 or args[k - 1] != "--extra-search-paths")]


# CPU and memory per container of each part (requests = limits for memory: the pods are not
# BestEffort, and a replica that outgrows its share is restarted rather than starving a node)
RESOURCES = {
    "gateway": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "whisper": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    "diffusion": {"requests": {"cpu": "2", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
}
UID = 10001  # the images' user (Dockerfile)
# writable places on a read-only root file system: downloaded models and Jina's locks; scratch
WRITABLE = {"cache": "/home/speech2image/.cache", "tmp": "/tmp"}


def gateway_drain_seconds(spec: dict) -> int:
    """How long the exported gateway lets the requests in flight finish on SIGTERM: flow.yml's
    gateway `grace_seconds`, or as long as a request may take there (its request_timeout_seconds
    within flow.yml's timeout_send), so that a rollout of the gateway cuts none short."""
    gateway = (spec.get("gateway") or {}).get("uses_with") or {}
    if "grace_seconds" in gateway:
        return drain_seconds(gateway["grace_seconds"])
    timeout_send_ms = (spec.get("with") or {}).get("timeout_send")
    longest = longest_request(gateway.get("request_timeout_seconds", RequestLimits().request_timeout_seconds),
                              timeout_send_ms / 1e3 if timeout_send_ms else None)
    return drain_seconds(longest)


def _finish_k8s(manifest: Path, secret_variables: list[str], tls: bool, drain: int) -> None:
    """Secrets by reference; probes that pass their arguments apart (Jina writes "--timeout 9500"
    as one, which jina ping ignores), readiness its own; no host paths; a restricted pod (non-root,
    read-only root file system with writable volumes for the cache and /tmp, no capabilities, no
    privilege escalation, the runtime's seccomp profile); CPU and memory requests and limits; a
    grace period of the gateway's `drain` and its close; a PodDisruptionBudget; and the metrics
    port named on the container and announced to Prometheus (scrape annotations, beside the
    ServiceMonitor Jina writes for the Prometheus operator); a NetworkPolicy; for the gateway, its
    drain, its keys and TLS from Secrets and HTTP probes (kubelet's HTTPS probes need no client
    certificate)."""
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    part = manifest.parent.name
    for document in list(documents):
        if document.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        template = document["spec"]["template"]
        pod = template["spec"]
        pod["terminationGracePeriodSeconds"] = stop_seconds(drain)
        pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                  "seccompProfile": {"type": "RuntimeDefault"}}
        pod.setdefault("volumes", []).extend({"name": name, "emptyDir": {}} for name in WRITABLE)
        for container in pod["containers"]:
            container["args"] = _without_search_paths(container.get("args", []))
            container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
            container.setdefault("volumeMounts", []).extend(
                {"name": name, "mountPath": path} for name, path in WRITABLE.items())
            gpus = container.get("resources", {}).get("limits", {})
            container["resources"] = {"requests": dict(RESOURCES[part]["requests"]),
                                      "limits": {**RESOURCES[part]["limits"], **gpus}}
            if "--port-monitoring" in container["args"]:
                port = int(container["args"][container["args"].index("--port-monitoring") + 1])
                container.setdefault("ports", []).append({"containerPort": port, "name": "monitoring"})
                template["metadata"].setdefault("annotations", {}).update(
                    {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"})
            for probe in ("livenessProbe", "startupProbe"):
                if probe in container:
                    command = container[probe]["exec"]["command"]
                    container[probe]["exec"]["command"] = [word for argument in command for word in argument.split()]
            if "livenessProbe" in container:
                container["readinessProbe"] = {**copy.deepcopy(container["livenessProbe"]), "initialDelaySeconds": 5}
            container.setdefault("env", []).extend(
                {"name": v, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": v, "optional": True}}}
                for v in secret_variables)
            if part == "gateway":
                _gateway(pod, container, tls, drain)
        documents.append(_network_policy(document, part))
        documents.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": document["metadata"]["name"], "namespace": document["metadata"]["namespace"]},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": document["spec"]["selector"]["matchLabels"]}},
        })
    manifest.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def _gateway(pod: dict, container: dict, tls: bool, drain: int) -> None:
    """The gateway's keys (always) and TLS certificate (with --tls) from Secrets, its drain on
    SIGTERM, and probes on its HTTP port: GET / (alive) and GET /dry_run (every part answers), open
    without a key."""
    pod["volumes"].append({"name": "api-keys", "secret": {"secretName": KEYS_SECRET}})
    container["volumeMounts"].append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
    args = container["args"]
    ours = {"api_keys": f"{KEYS_DIR}/keys.txt", "grace_seconds": drain}
    if "--uses-with" in args:  # flow.yml's own gateway `uses_with`: kept
        at = args.index("--uses-with") + 1
        args[at] = json.dumps({**ours, **json.loads(args[at]), "api_keys": ours["api_keys"]})
    else:
        args += ["--uses-with", json.dumps(ours)]
    if tls:
        pod["volumes"].append({"name": "tls", "secret": {"secretName": TLS_SECRET}})
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        container["args"] += ["--ssl-certfile", f"{TLS_DIR}/tls.crt", "--ssl-keyfile", f"{TLS_DIR}/tls.key"]
    http_port = _ports(container)[1]
    scheme = "HTTPS" if tls else "HTTP"

    def probe(path: str, **timing) -> dict:
        return {"httpGet": {"path": path, "port": http_port, "scheme": scheme}, "timeoutSeconds": 10, **timing}

    container["startupProbe"] = probe("/", periodSeconds=5, failureThreshold=120)
    container["livenessProbe"] = probe("/", periodSeconds=10)
    container["readinessProbe"] = probe("/dry_run", periodSeconds=5)


def _ports(container: dict) -> list[int]:
    """The ports of Jina's --port argument (the gateway has two: gRPC, HTTP)."""
    args = container["args"]
    start = args.index("--port") + 1
    ports = []
    for value in args[start:]:
        if not value.isdigit():
            break
        ports.append(int(value))
    return ports


def _network_policy(deployment: dict, part: str) -> dict:
    """Who may connect to a part's pods: anyone to the gateway's ports (the front door), only the
    gateway to an executor's, only Prometheus to the metrics port."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = [{"port": port, "protocol": "TCP"} for port in _ports(container)]
    ingress = [{"ports": ports} if part == "gateway" else
               {"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}], "ports": ports}]
    monitoring = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "monitoring"]
    if monitoring:
        ingress.append({"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": PROMETHEUS}}],
                        "ports": [{"port": monitoring[0], "protocol": "TCP"}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": deployment["metadata"]["name"], "namespace": deployment["metadata"]["namespace"]},
            "spec": {"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
                     "policyTypes": ["Ingress"], "ingress": ingress}}


def _finish_compose(compose_file: Path, secrets: dict[str, list[str]]) -> None:
    """Secrets from the shell; no host paths; only the gateway publishes ports, on the host's
    loopback (Jina publishes every part's metrics port on all interfaces, the same one for every
    replica, so the file did not start on a bridge network)."""
    compose = yaml.safe_load(compose_file.read_text())
    for service_name, service in compose["services"].items():
        service.pop("volumes", None)  # Jina would mount the host's ~/.cache/jina on /app
        service["command"] = _without_search_paths(service.get("command", []))
        executor = service_name.split("-rep-")[0]
        environment = service.setdefault("environment", [])
        environment.extend(f"{v}=${{{v}:-}}" for v in secrets.get(executor, []))  # never inlined
        if service_name == "gateway":
            service["ports"] = [f"127.0.0.1:{port}:{port}" for port in service.get("expose", [])]
        else:
            service.pop("ports", None)  # reachable on the compose network only
    compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "deploy")
    parser.add_argument("--namespace", default="speech2image")
    parser.add_argument("--flow", type=Path, default=ROOT / "flow.yml")
    parser.add_argument("--tls", action="store_true",
                        help=f"the gateway serves TLS with the certificate of the Secret {TLS_SECRET}")
    args = parser.parse_args(argv)
    k8s_dir, compose_file = export(args.out, args.namespace, args.flow, args.tls)
    print(f"kubernetes manifests: {k8s_dir}\ndocker compose file: {compose_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
