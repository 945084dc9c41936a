"""The executors in their own containers, for real: run by tools/container-smoke.

    tools/container-smoke                          # builds the images, then runs these
    python -m pytest -m container tests/test_containers.py

Skipped when no Docker engine answers or the images are not built. Every container
uses host networking (loopback only) and carries the label speech2image.smoke=yes.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.ports import free_port
from tests.support.speech import ROOT, SPEECH, wer

pytestmark = [pytest.mark.container, pytest.mark.flow]

VERSION = re.search(r"docker://speech2image-whisper:(\S+)", (ROOT / "flow.yml").read_text()).group(1)
IMAGES = {name: f"speech2image-{name}:{VERSION}" for name in ("whisper", "diffusion", "gateway")}
EXECUTORS = ("whisper", "diffusion")
OFFLINE = {"whisper": {"model": "embedded"}, "diffusion": {"model": "tiny", "local_files_only": True}}
LABEL = "speech2image.smoke=yes"
JINA = str(Path(sys.executable).parent / "jina")


def docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def _engine_and_images() -> str:
    if not shutil.which("docker"):
        return "no docker command"
    try:
        if docker("info", timeout=20, check=False).returncode != 0:
            return "no Docker engine answers"
    except subprocess.TimeoutExpired:
        return "no Docker engine answers"
    missing = [i for i in IMAGES.values() if docker("image", "inspect", i, check=False).returncode != 0]
    return f"images not built ({', '.join(missing)}): run tools/container-smoke" if missing else ""


if reason := _engine_and_images():
    pytest.skip(reason, allow_module_level=True)


def wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise AssertionError(f"{what} not ready after {seconds:.0f} s")


def pings(kind: str, address: str) -> bool:
    done = subprocess.run([JINA, "ping", kind, address, "--timeout", "2000", "--attempts", "1"],
                          capture_output=True, text=True, timeout=60)
    return done.returncode == 0


def run_client(tmp_path: Path, port: int) -> dict:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "client.py"), str(SPEECH / "jfk.flac"), "--num-images", "2",
                           "--host", f"localhost:{port}", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def check_answer(answer: dict, jfk_text: str):
    assert wer(jfk_text, answer["text"]) == 0
    assert len(answer["images"]) == 2 and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in answer["images"])
    assert answer["models"] == {"whisper": "embedded (tiny.en)", "diffusion": "tiny"}


@pytest.fixture(autouse=True)
def remove_started_containers():
    yield
    started = docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if started:
        docker("rm", "-f", *started, check=False)


def test_each_image_holds_only_its_executors_dependencies():
    probe = "import importlib.util as u; print(*(u.find_spec(m) is not None for m in ('faster_whisper', 'diffusers')))"
    expected = {"whisper": "True False", "diffusion": "False True", "gateway": "False False"}
    for name, image in IMAGES.items():
        done = docker("run", "--rm", "--network", "host", "--label", LABEL, "--entrypoint", "python", image, "-c", probe)
        assert done.stdout.split() == expected[name].split(), name
        size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
        print(f"{image}: {size / 1e9:.2f} GB")
        assert docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "10001"


@pytest.mark.parametrize("name", EXECUTORS)
def test_the_entrypoint_starts_each_executor_alone_and_it_answers_the_health_check(name):
    port = free_port()
    docker("run", "-d", "--network", "host", "--label", LABEL, "-e", "HF_HUB_OFFLINE=1", IMAGES[name],
           "--port", str(port), "--uses-with", json.dumps(OFFLINE[name]))
    wait_until(lambda: pings("executor", f"localhost:{port}"), 240, f"the {name} container")


def offline_flow(tmp_path: Path, port: int, label: bool = True) -> Path:
    """flow.yml's cloud path (docker:// executors, 2 diffusion replicas) with offline models, no GPU."""
    spec = yaml.safe_load((ROOT / "flow.yml").read_text())
    spec["gateway"]["port"] = [port, port + 1]
    for executor in spec["executors"]:
        executor.pop("gpus", None)
        executor["env"] = {"HF_HUB_OFFLINE": "1"}
        executor["uses_with"] = {**executor.get("uses_with", {}), **OFFLINE[executor["name"]]}
        if label:  # containers Jina starts itself
            executor["docker_kwargs"] = {"labels": {"speech2image.smoke": "yes"}}
    path = tmp_path / "flow.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_flow_of_docker_executors_serves_the_client(tmp_path, jfk_text):
    from jina import Flow

    port = free_port()
    with Flow.load_config(str(offline_flow(tmp_path, port))):
        check_answer(run_client(tmp_path, port), jfk_text)


def bridge_networks() -> str:
    """Why this engine cannot run the exported Compose file as it is (its services talk on a bridge
    network), or "" when it can."""
    probe = docker("network", "create", "--driver", "bridge", "--label", LABEL, "speech2image-probe", check=False)
    if probe.returncode != 0:
        return f"this Docker engine cannot create bridge networks ({probe.stderr.strip()})"
    docker("network", "rm", "speech2image-probe", check=False)
    return ""


def compose_command() -> list[str]:
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def test_the_exported_compose_file_runs_as_exported_and_goes_down(tmp_path, jfk_text):
    if reason := bridge_networks():
        pytest.skip(f"{reason}: the exported file needs one, and is run as exported or not at all")
    port = free_port()
    flow_file = offline_flow(tmp_path, port, label=False)
    env = dict(os.environ)
    subprocess.run([sys.executable, str(ROOT / "tools" / "export_flow.py"), "--flow", str(flow_file),
                    "--out", str(tmp_path / "deploy")], check=True, env=env, capture_output=True, timeout=120)
    compose = [*compose_command(), "-f", str(tmp_path / "deploy" / "docker-compose.yml"), "-p", "speech2image-smoke"]
    subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=300)
    try:
        wait_until(lambda: pings("flow", f"grpc://localhost:{port}"), 300, "the compose gateway")  # published on loopback
        check_answer(run_client(tmp_path, port), jfk_text)
        heard = subprocess.run(["curl", "-s", "-F", f"file=@{SPEECH / 'jfk.flac'}", "-F", "response_format=text",
                                f"http://localhost:{port + 1}/v1/audio/transcriptions"],
                               capture_output=True, text=True, timeout=120)  # the OpenAI route of the gateway image
        assert wer(jfk_text, heard.stdout) == 0, heard.stdout
    finally:
        down = subprocess.run([*compose, "down", "--timeout", "30"], capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert docker("ps", "-q", "--filter", "label=com.docker.compose.project=speech2image-smoke").stdout.strip() == ""
