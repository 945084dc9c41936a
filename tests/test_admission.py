"""Admission under load, against `python app.py --offline` with two diffusion replicas that
each run one request and queue one more (`--max-queued-requests 1`); the retry and Ctrl-C tests
against one whose Jina `timeout_send` is 8 s (the gateway caps every request's deadline at 80 %
of it, 6.4 s).

Real clients (curl, client.py, requests, Jina's client), the replicas' own counters read from
their Prometheus endpoints; every wait is on a condition those counters show. A long request
lasts a set time at the pace measured on the same app just before (tests/support/pace.py), so
no verdict depends on the CPU's speed; the limits on waits only stop a test that hangs.
"""

import asyncio
import json
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jina import Client

from gateway.admission import Admission, ExecutorCalls
from speech2image.client import make_documents, post_async, request_parameters
from speech2image.errors import ClientError
from speech2image.observability import names
from speech2image.serving.deadline import CLOSE_SECONDS, drain_seconds, longest_request, stop_seconds
from tests.support.app import App, run_client
from tests.support.metrics import by_replica, total, wait_until
from tests.support.pace import measure
from tests.support.speech import ROOT

IN_PROGRESS, QUEUE_LENGTH = names.IN_PROGRESS, names.QUEUE_LENGTH
IMAGES, CANCELLED = f"{names.IMAGES}_total", f"{names.CANCELLED}_total"
REFUSED, DROPPED = f"{names.REFUSED}_total", f"{names.DROPPED}_total"
RUNS = f"{names.QUEUE_SECONDS}_count"  # one per request that got its turn: a model run
# A long request: 8 images of 15 s each here, far longer than any test's own steps; the test that
# sends one ends it (its client goes away) or lets its deadline stop it
LONG_IMAGES, LONG_IMAGE_SECONDS = 8, 15
GRACE_SECONDS = 120  # app.py --grace-seconds: far longer than the request in flight at SIGTERM
IN_FLIGHT_SECONDS = 10  # that request: far longer than the checks made while it runs


def flow_file(directory, timeout_send_ms=None):
    """flow.yml with room for long requests (a work budget they fit in), and `timeout_send`."""
    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    if timeout_send_ms:
        flow["with"]["timeout_send"] = timeout_send_ms
    diffusion = next(executor for executor in flow["executors"] if executor["name"] == "diffusion")
    diffusion["uses_with"] = {**diffusion.get("uses_with", {}), "max_megapixel_steps": 1e6}
    path = directory / "flow.yml"
    path.write_text(yaml.safe_dump(flow))
    return path


def serving(app) -> bool:
    return len(by_replica(app.metrics_urls, IN_PROGRESS, "diffusion")) == 2


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # on the CPU even where there is a GPU: its pace is measured on the CPU
    with App("--diffusion-replicas", "2", "--max-queued-requests", "1", "--device", "cpu",
             "--flow", str(flow_file(tmp_path_factory.mktemp("admission"))),
             "--grace-seconds", str(GRACE_SECONDS)) as server:
        wait_until(lambda: serving(server), 60, "both diffusion replicas serving metrics")
        yield server


@pytest.fixture(scope="module")
def pace(app):
    return measure(f"localhost:{app.port}")


@pytest.fixture(scope="module")
def short_send(tmp_path_factory):
    """app.py whose Flow has `timeout_send` 8 s (every deadline 6.4 s), and its pace."""
    with App("--diffusion-replicas", "2", "--device", "cpu",
             "--flow", str(flow_file(tmp_path_factory.mktemp("short-send"), timeout_send_ms=8000))) as server:
        wait_until(lambda: serving(server), 60, "both diffusion replicas serving metrics")
        yield server, measure(f"localhost:{server.port}")


def long(pace, **fields) -> dict:
    """A long request's body for the OpenAI-compatible route."""
    return pace.body(LONG_IMAGE_SECONDS, LONG_IMAGES, prompt="a long request", **fields)


def url(app, route="/v1/images/generations") -> str:
    return f"http://127.0.0.1:{app.port + 1}{route}"


def count(app, name: str) -> float:
    return total(app.metrics_urls, name, "diffusion")


def idle(app) -> bool:
    return count(app, IN_PROGRESS) == 0 and count(app, QUEUE_LENGTH) == 0


def state(app) -> str:
    return (f"running {by_replica(app.metrics_urls, IN_PROGRESS, 'diffusion')}, "
            f"queued {by_replica(app.metrics_urls, QUEUE_LENGTH, 'diffusion')}")


def curl(app, body: dict) -> subprocess.Popen:
    """A request by curl, in the background; killing it closes its connection."""
    return subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H", "content-type: application/json",
                             "-d", json.dumps(body), url(app)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.flow
def test_a_full_flow_refuses_at_once_and_a_closed_connection_stops_its_work(app, pace):
    wait_until(lambda: idle(app), 30, "the replicas idle")
    cancelled = count(app, CANCELLED)
    long_requests = [curl(app, long(pace, seed=k)) for k in range(4)]  # 2 replicas x (1 running + 1 queued)
    try:
        wait_until(lambda: count(app, IN_PROGRESS) == 2 and count(app, QUEUE_LENGTH) == 2, 30,
                   lambda: f"2 running, 2 queued ({state(app)})")
        started = time.monotonic()
        answer = requests.post(url(app), json={"prompt": "one more", "n": 1, "size": "64x64"}, timeout=30)
        http_seconds = time.monotonic() - started
        refused = run_client("--host", f"localhost:{app.port}", "--text", "one more", "--num-images", "1")
        drawn = count(app, IMAGES)
    finally:
        for curled in long_requests:
            curled.kill()
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    message = answer.json()["error"]["message"]
    assert message.startswith("busy: 1 request(s) wait for this replica (max_queued_requests=1); retry in about ")
    # refused at once: a wait for room would last until a long request ended (bench/load.py measures it)
    assert http_seconds < LONG_IMAGE_SECONDS
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "busy: " in refused.stderr and "Traceback" not in refused.stderr
    log = app.stderr() + "".join(app.output)  # the replica's: one line per refusal, not Jina's stack
    assert "refused: Busy: busy: " in log and "raise Busy(" not in log
    # the clients went away: the two queued requests leave the queue, the two running ones stop
    wait_until(lambda: idle(app), 30, "the replicas idle after the clients left")
    assert count(app, CANCELLED) - cancelled == 4
    assert count(app, IMAGES) - drawn <= 2  # at most the image each running replica was drawing


@pytest.mark.flow
def test_a_full_replica_passes_the_request_to_one_with_room(app, pace):
    wait_until(lambda: idle(app), 30, "the replicas idle")
    refused = count(app, REFUSED)
    short = {"prompt": "a short request", "n": 1, "size": "64x64", "steps": 2}
    first = curl(app, long(pace))
    try:
        wait_until(lambda: count(app, IN_PROGRESS) == 1, 30, "one replica running")
        assert requests.post(url(app), json=short, timeout=30).status_code == 200  # the other replica: round robin
        second = curl(app, long(pace, seed=7))  # round robin: queued behind the first; that replica is full
        try:
            wait_until(lambda: count(app, QUEUE_LENGTH) == 1, 30, "one request queued")
            full = [name for name, length in by_replica(app.metrics_urls, QUEUE_LENGTH, "diffusion").items() if length]
            # Jina sends requests round robin: of two in a row, one goes to the full replica first
            answers = [requests.post(url(app), json={**short, "seed": k}, timeout=30) for k in range(2)]
        finally:
            second.kill()
    finally:
        first.kill()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    by_name = by_replica(app.metrics_urls, REFUSED, "diffusion")
    assert by_name[full[0]] >= 1 and count(app, REFUSED) - refused >= 1  # refused there, answered by the other


@pytest.mark.flow
def test_a_deadline_that_passes_in_the_queue_drops_the_request_unworked(app, pace):
    wait_until(lambda: idle(app), 30, "the replicas idle")
    dropped, runs = count(app, DROPPED), count(app, RUNS)
    long_requests = [curl(app, long(pace, seed=k)) for k in range(2)]
    try:
        wait_until(lambda: count(app, IN_PROGRESS) == 2, 30, "both replicas running")
        answer = requests.post(url(app, "/generate"), timeout=30, json={
            "data": [{"prompt": "a request with one second"}], "parameters": {"timeout": 1, "num_images": 1}})
    finally:
        for curled in long_requests:
            curled.kill()
    assert answer.status_code == 504, answer.text
    # Jina's answer shape on its own route; the error in one line: in the queue, before any work
    assert answer.json()["header"]["status"]["description"].startswith("DeadlineExceeded: deadline passed after 1.")
    assert count(app, DROPPED) - dropped == 1
    wait_until(lambda: idle(app), 30, "the replicas idle")
    assert count(app, RUNS) - runs == 2  # the two long requests only


@pytest.mark.flow
def test_a_client_timeout_stops_the_work_it_no_longer_waits_for(app, pace):
    """The gateway takes the client's gRPC deadline as the request's (a little earlier, so that the
    client usually hears why): the replica stops between two steps, and its one image is never drawn."""
    wait_until(lambda: idle(app), 30, "the replicas idle")
    images = count(app, IMAGES)
    options = pace.options(LONG_IMAGE_SECONDS)  # one image, far beyond the 4 s timeout
    gone = run_client("--host", f"localhost:{app.port}", "--text", "a request nobody waits for", "--num-images", "1",
                      "--width", options["width"], "--height", options["height"], "--steps", options["steps"],
                      "--timeout", "4")
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    # the replica's answer ("deadline passed at step k") when its step ended inside the client's margin
    # (0.4 s), else the client's own "no answer within --timeout": which comes first is the CPU's speed
    assert "deadline passed at step" in gone.stderr or "within --timeout 4 s" in gone.stderr, gone.stderr
    wait_until(lambda: idle(app), 10, "the replica idle")  # within a step or two of the deadline
    assert count(app, IMAGES) == images


@pytest.mark.flow
def test_a_grpc_client_that_goes_away_has_its_work_cancelled(app, pace):
    wait_until(lambda: idle(app), 30, "the replicas idle")
    cancelled = count(app, CANCELLED)

    async def call_then_leave():
        docs = make_documents([], "a request its client cancels")
        call = asyncio.ensure_future(post_async(docs, f"localhost:{app.port}", request_parameters(
            pace.options(LONG_IMAGE_SECONDS, LONG_IMAGES))))
        await asyncio.to_thread(wait_until, lambda: count(app, IN_PROGRESS) == 1, 30, "the request running")
        call.cancel()  # as the page's Stop does
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(call_then_leave())
    wait_until(lambda: count(app, CANCELLED) - cancelled == 1, 10, "the work cancelled")
    wait_until(lambda: idle(app), 10, "the replica idle")


@pytest.mark.flow
def test_sigterm_lets_the_request_in_flight_finish_refuses_new_ones_and_exits_0(app, pace):
    wait_until(lambda: idle(app), 30, "the replicas idle")
    body = pace.body(IN_FLIGHT_SECONDS, prompt="a request in flight")
    in_flight = subprocess.Popen(["curl", "-s", "-w", "\n%{http_code}", "-H", "content-type: application/json",
                                  "-d", json.dumps(body), url(app)], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: count(app, IN_PROGRESS) == 1, 30, "the request running")
    app.process.send_signal(signal.SIGTERM)
    app.wait_for_line(lambda line: line.startswith("speech2image stopping"), 30)
    wait_until(lambda: requests.get(url(app, "/dry_run"), timeout=5).status_code == 503, 10, "readiness off")
    refused = requests.post(url(app), json={"prompt": "too late", "n": 1, "size": "64x64"}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["message"].startswith("draining")
    with grpc.insecure_channel(f"localhost:{app.port}") as channel:  # readiness over gRPC: both say stopping
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not Client(host="localhost", port=app.port).is_flow_ready(timeout=5)  # Jina's dry run
    assert count(app, IN_PROGRESS) == 1  # all of that while the request was in flight
    out, _ = in_flight.communicate(timeout=GRACE_SECONDS)
    assert out.rstrip().endswith("200") and '"b64_json"' in out
    assert app.process.wait(timeout=60) == 0
    # no channel of the Flow was closed for pinging "too often" (Jina's keepalive against gRPC's default)
    assert "too_many_pings" not in app.stderr()


@pytest.mark.flow
def test_a_retried_call_is_never_run_twice(short_send):
    """Jina retries a call that outlives `timeout_send` on the other replica while the first copy
    runs; with the deadline at 80 % of it, the first copy stops first and answers."""
    app, pace = short_send
    wait_until(lambda: idle(app), 30, "the replicas idle")
    runs = count(app, RUNS)
    options = pace.options(4, LONG_IMAGES)  # 8 images of 4 s: five times the 6.4 s deadline

    async def long_over_grpc():
        docs = make_documents([], "a request longer than timeout_send")
        return await post_async(docs, f"localhost:{app.port}", request_parameters(options))

    with pytest.raises(ClientError, match=rf"deadline passed at step \d+ of {options['steps']} of image \d of 8"):
        asyncio.run(long_over_grpc())
    wait_until(lambda: idle(app), 30, "the replicas idle")
    assert count(app, RUNS) - runs == 1


@pytest.mark.flow
def test_ctrl_c_in_a_terminal_drains_too(short_send):
    """A terminal's Ctrl-C reaches every process of its group, the executors too: they leave the
    stopping to app.py, so the request in flight still finishes, and app.py exits 0."""
    app, pace = short_send
    wait_until(lambda: idle(app), 30, "the replicas idle")
    # one second: many looks at the counters long, and far inside the 6.4 s deadline and the 30 s of grace
    body = pace.body(1, prompt="a request in flight")
    in_flight = subprocess.Popen(["curl", "-s", "-w", "\n%{http_code}", "-H", "content-type: application/json",
                                  "-d", json.dumps(body), url(app)], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: count(app, IN_PROGRESS) == 1, 30, "the request running")
    os.killpg(app.process.pid, signal.SIGINT)  # app.py leads its own session: the terminal's group
    out, _ = in_flight.communicate(timeout=60)
    assert out.rstrip().endswith("200") and '"b64_json"' in out, out[-300:]
    assert app.process.wait(timeout=60) == 0, app.tail()


def test_the_deadline_is_the_gateways_a_clients_own_for_any_executor_is_replaced():
    """Jina hands `diffusion__deadline` to the diffusion executor as its `deadline`: a client must
    not set its own, for the whole Flow or one executor."""
    pool = type("Pool", (), {"send_requests_once": None})()  # Admission wraps its sending; unused here
    admission = Admission(pool, ExecutorCalls(), request_timeout_seconds=300, timeout_send_seconds=-1,
                          grace_seconds=30)
    before = time.time()
    parameters = admission.admit({"deadline": 9e18, "diffusion__deadline": 9e18, "whisper__deadline": 9e18,
                                  "diffusion__steps": 4, "timeout": 20}, client_seconds=None)
    assert set(parameters) == {"deadline", "diffusion__steps", "timeout"}
    assert before + 19 < parameters["deadline"] <= time.time() + 20  # the `timeout` asked; -1: no timeout_send cap


def test_the_deadline_comes_before_jinas_timeout_send_and_the_stop_waits_for_the_drain():
    """A call Jina gives up on is sent again while the first copy runs: the deadline comes first."""
    pool = type("Pool", (), {"send_requests_once": None})()
    admission = Admission(pool, ExecutorCalls(), request_timeout_seconds=300, timeout_send_seconds=10,
                          grace_seconds=30)
    parameters = admission.admit({})
    assert parameters["deadline"] <= time.time() + 8  # 80 % of timeout_send
    assert longest_request(300, None) == longest_request(300, -1) == 300 and longest_request(5, 10) == 5
    assert stop_seconds(drain_seconds(longest_request(299.5, 600))) == 300 + CLOSE_SECONDS


def test_a_call_whose_only_replica_left_is_unreachable_ends_with_an_error():
    """Sent on after a Busy, a call whose one replica not yet tried is unreachable (a replica still
    loading its model refuses connections) gets Jina's network error: Jina's sending must not ask
    the round robin forever for a replica it has not tried (it would hold the gateway's event loop)."""
    from jina.serve.networking import GrpcConnectionPool
    from jina.types.request.data import DataRequest

    from gateway.jina_internals import SkippingReplicas, replicas_of, send_to
    from tests.support.ports import free_port

    async def send_on():
        pool = GrpcConnectionPool(runtime_name="test")
        busy, unreachable = (f"127.0.0.1:{free_port()}" for _ in range(2))
        for address in (busy, unreachable):
            pool.add_connection(deployment="diffusion", address=address, head=True)
        untried = SkippingReplicas(replicas_of(pool, "diffusion", True, None))
        untried.skipped.add(busy)
        request = DataRequest()
        request.data.docs = make_documents([], "a request sent on")
        try:
            return await send_to(pool, [request], untried, endpoint="/", metadata=None, timeout=10, retries=-1)
        finally:
            await pool.close()

    answers = []
    sending = threading.Thread(target=lambda: answers.append(asyncio.run(send_on())), daemon=True)
    sending.start()
    sending.join(60)
    assert not sending.is_alive(), "the call was still sending after 60 s"
    assert answers and isinstance(answers[0], Exception), answers
