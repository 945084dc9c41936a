"""Faults and load against `python app.py --offline` with 2 diffusion replicas, and secrets;
then one without metrics whose trace collector is not there, whose forkserver ends and whose
whisper replica dies.

A smaller run of bench/load.py (which does 1000 requests): mixed good and bad requests
from 8 concurrent clients, one diffusion replica killed with SIGKILL mid-run, every
answer checked against its own request; then the server's whole log, written at DEBUG
with an HF token in its environment, must not hold the token.
"""

import asyncio
import os
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.app import App
from tests.support.app import run_client as client
from tests.support.load import cases, run_load
from tests.support.ports import free_port
from tests.support.speech import ROOT, SPEECH

pytestmark = pytest.mark.flow

TOKEN = "hf_SENTINELsecretTOKEN0123456789"


@pytest.fixture(scope="module")
def server():
    with App("--diffusion-replicas", "2", "--max-queued-requests", "8", env={"HF_TOKEN": TOKEN, "JINA_LOG_LEVEL": "DEBUG"}) as app:
        yield app


@pytest.mark.slow  # a load test: forty requests of both kinds while a replica dies (bench/load.py measures load)
def test_mixed_load_with_a_replica_killed_loses_nothing_and_mixes_nothing_up(server):
    assert len(server.announced_replicas("diffusion", 2)) == 2
    requests = cases(90)
    report = asyncio.run(run_load(f"localhost:{server.port}", requests, clients=8, request_timeout=60,
                                  kill_after=30, server=server))
    print("\n".join(report.lines()))
    outcomes = report.outcomes
    assert report.killed and len(server.replica_pids("diffusion")) == 1
    assert sum(outcomes.values()) == len(requests)  # every request ended
    assert not any("WRONG" in k or "lost" in k for k in outcomes), report.lines()
    assert outcomes["bad: refused with its message"] == sum(c.kind == "bad" for c in requests)
    good = sum(c.kind != "bad" for c in requests)
    answered = outcomes["clip: answered right"] + outcomes["text: answered right"]
    assert answered >= good - 8, report.lines()  # at most the requests in flight on the killed replica
    for _, _, line in report.failures:  # those fail with a line the client can act on (retry)
        assert "\n" not in line and "server" in line


def test_the_hf_token_never_reaches_logs_answers_or_exports(server, tmp_path):
    answered = asyncio.run(run_load(f"localhost:{server.port}", cases(6), clients=2))
    assert not any("WRONG" in k or "failed" in k for k in answered.outcomes), answered.lines()
    pids = [server.process.pid, *server.replica_pids("whisper"), *server.replica_pids("diffusion")]
    started = time.monotonic()
    assert server.terminate(seconds=60) == 0  # the whole log, through the end of shutdown
    # a replica was lost above (SIGKILL): Jina's default would wait 60 s for it, app.py waits 5 (its
    # timeout_ctrl); the bound is Jina's wait, not this machine's speed
    assert time.monotonic() - started < 60
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    log = "".join(server.output) + server.stderr()
    assert "speech2image ready" in log and "DEBUG" in log and "serving (pid" in log  # the whole log, both streams
    assert TOKEN not in log
    out = tmp_path / "deploy"
    subprocess.run([sys.executable, str(ROOT / "tools" / "export_flow.py"), "--out", str(out)], check=True,
                   capture_output=True, env={**os.environ, "HF_TOKEN": TOKEN}, timeout=120)
    for exported in out.rglob("*"):
        if exported.is_file():
            assert TOKEN not in exported.read_text(), exported


@pytest.fixture(scope="module")
def unmonitored():
    """app.py without metrics, sending traces to a collector that is not there; its forkserver is
    killed, then its whisper replica, by the last tests that use it."""
    with App("--no-monitoring", "--tracing", f"http://localhost:{free_port()}") as app:
        yield app


def test_no_monitoring_and_a_dead_trace_collector_never_fail_a_request(unmonitored, tmp_path):
    done = client(SPEECH / "prompt4.wav", "--host", f"localhost:{unmonitored.port}", "--width", 32, "--steps", 1,
                  "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert not unmonitored.metrics_urls and not any(line.startswith("metrics:") for line in unmonitored.output)


def test_the_forkservers_end_is_not_its_replicas(unmonitored, tmp_path):
    """The Flow's processes are forked from one forkserver, through which app.py learns of their end:
    when it ends, they serve on, and app.py must not stop as if they had all been lost."""
    [whisper] = unmonitored.announced_replicas("whisper", 1)
    forkserver = psutil.Process(whisper).parent()
    assert "forkserver" in " ".join(forkserver.cmdline())
    forkserver.kill()  # it stays a zombie: app.py never reaps it
    while forkserver.is_running() and forkserver.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.1)
    # app.py looks every second; a client process takes longer than that to start and be answered
    done = client(SPEECH / "prompt4.wav", "--host", f"localhost:{unmonitored.port}", "--width", 32, "--steps", 1,
                  "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert unmonitored.process.poll() is None and "died" not in unmonitored.stderr()


def test_a_lost_whisper_executor_stops_app_py_with_exit_3_for_its_supervisor(unmonitored):
    """No Flow that looks ready and fails every audio request: a supervisor (systemd, Docker's
    restart policy, Kubernetes) starts it again."""
    [whisper] = unmonitored.replica_pids("whisper")
    psutil.Process(whisper).kill()
    # the stop waits 5 s for the dead replica (timeout_ctrl) and at most the exporter's timeout (10 s)
    # for the spans the request above left queued: an exporter that retried a dead collector for a
    # minute in every process would outlast this
    assert unmonitored.process.wait(timeout=60) == 3
    assert "no whisper replica is left: stopping (exit 3)" in unmonitored.stderr()
