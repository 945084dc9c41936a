"""flow.yml, its Kubernetes and Compose exports, and the Dockerfile: checked offline."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import app
from tests.support.speech import ROOT

FAKE_TOKEN = "hf_THIS_IS_A_FAKE_TOKEN_123"
BIN = Path(sys.executable).parent  # the virtual environment's console scripts


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    done = subprocess.run([sys.executable, "tools/export_flow.py", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_TOKEN": FAKE_TOKEN})
    assert done.returncode == 0, done.stderr
    assert FAKE_TOKEN not in done.stdout + done.stderr
    return out


def manifests(out):
    return {path.parent.name: [d for d in yaml.safe_load_all(path.read_text()) if d]
            for path in (out / "kubernetes").glob("*/*.yml")}


def test_kubernetes_manifests_validate_against_the_api_schemas(exported):
    for documents in manifests(exported).values():
        for document in documents:
            if document["kind"] != "ServiceMonitor":  # the Prometheus operator's, checked below
                kubernetes_validate.validate(document, "1.37.0", strict=True)


def test_every_part_exposes_its_metrics_port_and_asks_to_be_scraped(exported):
    for name, documents in manifests(exported).items():
        kinds = {d["kind"]: d for d in documents}
        template = kinds["Deployment"]["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true", name
        port = int(template["metadata"]["annotations"]["prometheus.io/port"])
        assert {"containerPort": port, "name": "monitoring"} in template["spec"]["containers"][0]["ports"]
        service_ports = {p["name"]: p["targetPort"] for d in documents if d["kind"] == "Service"
                         for p in d["spec"]["ports"]}
        assert service_ports["monitoring"] == port
        monitor = kinds["ServiceMonitor"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["endpoints"] == [{"port": "monitoring"}]
        assert monitor["spec"]["selector"]["matchLabels"] == kinds["Service"]["spec"]["selector"]


def test_gpus_replicas_probes_and_the_token_as_a_secret(exported):
    by_name = manifests(exported)
    assert set(by_name) == {"gateway", "whisper", "diffusion"}
    deployments = {name: next(d for d in docs if d["kind"] == "Deployment") for name, docs in by_name.items()}
    assert deployments["diffusion"]["spec"]["replicas"] == 2
    for name in ("whisper", "diffusion"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
        assert container["image"] == f"speech2image-{name}:0.1.0"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert "jina" in container[probe]["exec"]["command"]
        assert "--extra-search-paths" not in container["args"]
    env = deployments["diffusion"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "speech2image-hf-token", "key": "HF_TOKEN",
                                                                 "optional": True}}} in env
    for path in exported.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN not in path.read_text()


def test_compose_file_matches_the_compose_spec(exported):
    compose_file = exported / "docker-compose.yml"
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    services = yaml.safe_load(compose_file.read_text())["services"]
    assert {"gateway", "whisper", "diffusion-rep-0", "diffusion-rep-1"} <= set(services)
    assert all("volumes" not in s for s in services.values())
    assert "HF_TOKEN=${HF_TOKEN:-}" in services["diffusion-rep-0"]["environment"]


def test_dockerfile_passes_hadolint():
    done = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_app_runs_what_flow_yml_defines_and_no_default_is_restated():
    from speech2image.options import option_classes

    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    assert [e["name"] for e in flow["executors"]] == ["whisper", "diffusion"]
    for spec, executor in zip(app.executor_specs(app.parse_args(["--offline", "--device", "cpu"])), flow["executors"], strict=True):
        # what each executor takes: the fields of its options dataclasses, which hold the defaults
        names = [f.name for option_class in option_classes(app.EXECUTOR_ARGUMENTS[spec["name"]]).values()
                 for f in dataclasses.fields(option_class)]
        assert len(names) == len(set(names)), names  # each argument in one dataclass only
        assert spec["uses_with"] == {**executor.get("uses_with", {}), **spec["uses_with"]}
        assert set(spec["uses_with"]) <= set(names)
        config = yaml.safe_load((ROOT / "executors" / spec["name"] / "config.yml").read_text())
        assert "with" not in config  # config.yml names the arguments in a comment, never their defaults
    # without flags, app.py passes nothing: the dataclasses' defaults apply
    assert [spec["uses_with"] for spec in app.executor_specs(app.parse_args([]))] == [{}, {}]


def test_app_passes_the_speed_options_and_spreads_replicas_over_gpus():
    specs = {s["name"]: s for s in app.executor_specs(app.parse_args(
        ["--offline", "--diffusion-dtype", "float32", "--diffusion-vae", "full", "--diffusion-compile",
         "--diffusion-replicas", "2"]))}
    diffusion = specs["diffusion"]
    assert {k: diffusion["uses_with"][k] for k in ("dtype", "vae", "compile")} == \
        {"dtype": "float32", "vae": "full", "compile": True}
    # Jina's round-robin: replica k takes GPU k mod the GPUs nvidia-smi lists
    assert diffusion["replicas"] == 2 and diffusion["env"] == {"CUDA_VISIBLE_DEVICES": "RR"}
    assert "env" not in specs["whisper"]
    cpu_only = app.executor_specs(app.parse_args(["--offline", "--device", "cpu", "--diffusion-replicas", "2"]))
    assert all("env" not in spec for spec in cpu_only)
    assert "dtype" not in app.executor_specs(app.parse_args(["--offline"]))[1]["uses_with"]


def test_pods_are_restricted_sized_and_given_time_to_finish(exported):
    from speech2image.limits import RequestLimits

    for _name, documents in manifests(exported).items():
        kinds = {d["kind"]: d for d in documents}
        pod = kinds["Deployment"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["terminationGracePeriodSeconds"] >= RequestLimits().request_timeout_seconds
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/home/speech2image/.cache", "/tmp"} <= mounts  # writable where the models and scratch go
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = container[probe].get("exec", {}).get("command", [])
                assert all(" " not in argument for argument in command), probe
            assert container["readinessProbe"] is not container["livenessProbe"]
        budget = kinds["PodDisruptionBudget"]
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]


def test_compose_publishes_only_the_gateway_and_only_on_loopback(exported):
    services = yaml.safe_load((exported / "docker-compose.yml").read_text())["services"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published)
    assert len({port.split(":")[1] for port in published}) == len(published)  # no host port taken twice
    assert all("ports" not in service for name, service in services.items() if name != "gateway")


def test_the_gateway_runs_its_own_image_with_keys_and_tls_from_secrets(tmp_path):
    out = tmp_path / "deploy"
    done = subprocess.run([sys.executable, "tools/export_flow.py", "--out", str(out), "--tls"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    gateway = {d["kind"]: d for d in manifests(out)["gateway"]}
    pod = gateway["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "speech2image-gateway:0.1.0"
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"speech2image-api-keys", "speech2image-tls"}
    args = container["args"]
    # the gateway drains for as long as a request may run, and the pod waits for that and its close
    assert json.loads(args[args.index("--uses-with") + 1]) == {"api_keys": "/etc/speech2image/keys/keys.txt",
                                                               "grace_seconds": 300}
    assert pod["terminationGracePeriodSeconds"] == 300 + 30
    assert args[args.index("--ssl-certfile") + 1] == "/etc/speech2image/tls/tls.crt"
    for probe, path in (("livenessProbe", "/"), ("readinessProbe", "/dry_run"), ("startupProbe", "/")):
        assert container[probe]["httpGet"] == {"path": path, "port": 8081, "scheme": "HTTPS"}  # works with TLS on


def test_network_policies_let_only_the_gateway_reach_executors_and_only_prometheus_the_metrics(exported):
    for name, documents in manifests(exported).items():
        policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
        service_ports, metrics = policy["spec"]["ingress"]
        if name == "gateway":
            assert "from" not in service_ports  # the front door
        else:
            assert service_ports["from"] == [{"podSelector": {"matchLabels": {"app": "gateway"}}}]
        assert metrics["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
        assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
