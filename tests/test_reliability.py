"""Faults and load against `python app.py --offline` with 2 diffusion replicas, and secrets.

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

import pytest

from bench.load import cases, diffusion_replicas, run_load, start_server, stop_server
from tests.conftest import ROOT
from tests.test_flow import free_port

TOKEN = "hf_SENTINELsecretTOKEN0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    process = start_server(port, 2, tmp_path_factory.mktemp("server") / "stderr.log",
                           {"HF_TOKEN": TOKEN, "JINA_LOG_LEVEL": "DEBUG"})
    yield port, process
    if process.poll() is None:
        stop_server(process)


def test_mixed_load_with_a_replica_killed_loses_nothing_and_mixes_nothing_up(server):
    port, process = server
    deadline = time.monotonic() + 30  # each replica announces itself a moment after it listens
    while len(diffusion_replicas(process)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(diffusion_replicas(process)) == 2
    requests = cases(90)
    report = asyncio.run(run_load(f"localhost:{port}", requests, clients=8, request_timeout=60,
                                  kill_after=30, server=process))
    print("\n".join(report.lines()))
    outcomes = report.outcomes
    assert report.killed and len(diffusion_replicas(process)) == 1
    assert sum(outcomes.values()) == len(requests)  # every request ended
    assert not any("WRONG" in k or "lost" in k for k in outcomes), report.lines()
    assert outcomes["bad: refused with its message"] == sum(c.kind == "bad" for c in requests)
    good = sum(c.kind != "bad" for c in requests)
    answered = outcomes["clip: answered right"] + outcomes["text: answered right"]
    assert answered >= good - 8, report.lines()  # at most the requests in flight on the killed replica
    for _, _, line in report.failures:  # those fail with a line the client can act on (retry)
        assert "\n" not in line and "server" in line


def test_the_hf_token_never_reaches_logs_answers_or_exports(server, tmp_path):
    port, process = server
    answered = asyncio.run(run_load(f"localhost:{port}", cases(6), clients=2))
    assert not any("WRONG" in k or "failed" in k for k in answered.outcomes), answered.lines()
    log = stop_server(process)
    assert "speech2image ready" in log and "DEBUG" in log and "serving (pid" in log  # the whole log, both streams
    assert TOKEN not in log
    out = tmp_path / "deploy"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_flow.py"), "--out", str(out)], check=True,
                   capture_output=True, env={**os.environ, "HF_TOKEN": TOKEN}, timeout=120)
    for exported in out.rglob("*"):
        if exported.is_file():
            assert TOKEN not in exported.read_text(), exported
