"""What one caller holding a key must not be able to do to the service or to the other callers.

One `app.py --offline` with three keys (the third for the rate test alone), a rate per key no other
test reaches, TLS on both ports and one diffusion replica that queues two requests (three places:
a key may hold one while another key's request waits); attacks made with real clients (gRPC stubs
of Jina's own protocol, raw TLS sockets, openssl, requests), every wait on a condition the
replicas' counters show.
"""

import asyncio
import re
import socket
import ssl
import subprocess
import time
from typing import Optional

import grpc
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.admission import Admission, ExecutorCalls, KeyRates
from speech2image.errors import Busy
from speech2image.observability import names as metrics
from tests.support.app import App
from tests.support.metrics import total, wait_until
from tests.support.speech import ROOT
from tests.support.tls import private_ca

pytestmark = pytest.mark.flow

KEY_A = "sk-key-holder-a-0123456789"
KEY_B = "sk-key-holder-b-0123456789"
KEY_C = "sk-key-holder-c-0123456789"  # the rate test's alone
HEADER_TIMEOUT = 2.0  # seconds: short here, so that the test need not wait the default's
RATE = 30  # requests_per_minute_per_key: more than the other tests send with one key
# the most work a request may ask for (max_megapixel_steps): minutes here, cancelled by the tests
LONG = {"diffusion__num_images": 4, "diffusion__steps": 128, "diffusion__width": 512, "diffusion__height": 512}
SHORT = {"diffusion__num_images": 1, "diffusion__steps": 1, "diffusion__width": 64, "diffusion__height": 64}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return private_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def app(tls, tmp_path_factory):
    directory = tmp_path_factory.mktemp("key-holder")
    keys = directory / "keys.txt"
    keys.write_text(f"{KEY_A}\n{KEY_B}\n{KEY_C}\n")
    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    flow["gateway"]["uses_with"] = {"header_timeout_seconds": HEADER_TIMEOUT, "requests_per_minute_per_key": RATE}
    (directory / "flow.yml").write_text(yaml.safe_dump(flow))
    with App("--api-keys", str(keys), "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key"),
             "--max-queued-requests", "2", "--flow", str(directory / "flow.yml"), "--device", "cpu") as server:
        yield server


def channel(app, tls) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
    return grpc.secure_channel(f"localhost:{app.port}", credentials)


def https(app, path: str) -> str:
    return f"https://localhost:{app.port + 1}{path}"


def count(app, name: str, executor: str = "diffusion") -> float:
    return total(app.metrics_urls, name, executor)


def data_request(docs: int, parameters: dict, request_id: str):
    """A Jina data request of `docs` documents as the Flow's schema has them (a prompt each)."""
    from docarray import DocList
    from jina.types.request.data import DataRequest

    from speech2image.schema import SpeechImageDoc

    request = DataRequest()
    request.header.exec_endpoint = "/generate"
    request.header.request_id = request_id
    request.data.docs = DocList[SpeechImageDoc]([SpeechImageDoc(prompt="a red apple") for _ in range(docs)])
    request.parameters = parameters
    return request


def call(app, tls, request, key: str = KEY_A, timeout: float = 120):
    """One Jina data call (`process_single_data`), answered or raising grpc.RpcError."""
    from jina.proto import jina_pb2_grpc

    with channel(app, tls) as chan:
        stub = jina_pb2_grpc.JinaSingleDataRequestRPCStub(chan)
        return stub.process_single_data(request, metadata=(("authorization", f"Bearer {key}"),), timeout=timeout)


def test_health_watch_answers_serving_without_a_python_message(app, tls):
    with channel(app, tls) as chan:
        watched = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        first = next(iter(watched))
        watched.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_a_grpc_message_of_too_many_documents_is_refused_at_the_gateway(app, tls):
    """Counted before it is forwarded: the Whisper replica never decodes it."""
    received = count(app, f"{metrics.REQUESTS}_total", "whisper")
    with pytest.raises(grpc.RpcError) as refused:
        call(app, tls, data_request(2000, {}, "many-documents"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("too many documents: 2000 > max_documents=16")
    assert count(app, f"{metrics.REQUESTS}_total", "whisper") == received


def test_another_keys_call_with_my_request_id_cancels_nothing_of_mine(app, tls):
    """Cancellation is keyed by an id the gateway makes: B reusing A's id and going away cancels
    B's call only."""
    wait_until(lambda: count(app, metrics.IN_PROGRESS) == 0 and count(app, metrics.QUEUE_LENGTH) == 0, 60,
               "the replica idle")
    cancelled = count(app, f"{metrics.CANCELLED}_total")

    async def scenario():
        from jina.proto import jina_pb2_grpc

        credentials = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{app.port}", credentials) as chan:
            stub = jina_pb2_grpc.JinaSingleDataRequestRPCStub(chan)

            def send(key, request_id, parameters):
                return stub.process_single_data(data_request(1, parameters, request_id),
                                                metadata=(("authorization", f"Bearer {key}"),), timeout=300)

            blocker = send(KEY_A, "blocker", LONG)
            await asyncio.to_thread(wait_until, lambda: count(app, metrics.IN_PROGRESS) == 1, 120, "the blocker running")
            mine = send(KEY_A, "shared-id", SHORT)
            await asyncio.to_thread(wait_until, lambda: count(app, metrics.QUEUE_LENGTH) == 1, 60, "mine queued")
            theirs = send(KEY_B, "shared-id", SHORT)
            await asyncio.to_thread(wait_until, lambda: count(app, metrics.QUEUE_LENGTH) == 2, 60, "theirs queued")
            theirs.cancel()
            await asyncio.to_thread(wait_until, lambda: count(app, metrics.QUEUE_LENGTH) == 1, 60, "theirs dropped")
            blocker.cancel()
            answer = await mine
            return answer

    answer = asyncio.run(scenario())
    assert answer.header.status.code == 0, answer.header.status.description
    assert answer.header.request_id == "shared-id"  # the client's id comes back to it
    wait_until(lambda: count(app, f"{metrics.CANCELLED}_total") - cancelled == 2, 30, "theirs and the blocker cancelled")


def test_a_connection_that_sends_no_complete_request_is_closed(app, tls):
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    idle = context.wrap_socket(socket.create_connection(("localhost", app.port + 1)), server_hostname="localhost")
    slow = context.wrap_socket(socket.create_connection(("localhost", app.port + 1)), server_hostname="localhost")
    slow.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\n")  # and never the rest
    for sock in (idle, slow):
        sock.settimeout(60 * HEADER_TIMEOUT)  # a bound on a hang only: the server closes it long before
        try:
            assert sock.recv(1024) == b""
        except (ConnectionResetError, ssl.SSLError):
            pass  # closed, too
        sock.close()


def test_the_http_port_offers_only_forward_secret_aead_ciphers(app, tls):
    def handshake(*options) -> bool:
        done = subprocess.run(["openssl", "s_client", "-connect", f"localhost:{app.port + 1}", "-CAfile",
                               str(tls / "ca.pem"), *options], input="", capture_output=True, text=True, timeout=60)
        return "Cipher is (NONE)" not in done.stdout and done.returncode == 0

    assert handshake("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert handshake("-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305")
    assert not handshake("-tls1_2", "-cipher", "AES128-SHA")  # no forward secrecy, CBC, SHA-1
    assert not handshake("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA")  # CBC, SHA-1


def test_answers_do_not_name_the_server_software(app, tls):
    answer = requests.get(https(app, "/v1/models"), headers={"Authorization": f"Bearer {KEY_A}"},
                          verify=str(tls / "ca.pem"), timeout=30)
    assert answer.status_code == 200
    assert "server" not in {name.lower() for name in answer.headers}


def test_nested_executor_parameters_cannot_move_the_deadline():
    """Jina merges `{"diffusion": {...}}` into the diffusion executor's parameters: a deadline inside
    is dropped like `diffusion__deadline`."""
    pool = type("Pool", (), {"send_requests_once": None})()  # Admission wraps its sending; unused here
    admission = Admission(pool, ExecutorCalls(), request_timeout_seconds=300, timeout_send_seconds=-1,
                          grace_seconds=30)
    parameters = admission.admit({"diffusion": {"deadline": time.time() + 3600, "steps": 4},
                                  "whisper": {"deadline": 9e18}, "timeout": 2})
    assert parameters["diffusion"] == {"steps": 4} and parameters["whisper"] == {}
    assert parameters["deadline"] <= time.time() + 2


def test_a_client_cannot_name_another_caller():
    """The executors share their places by the `caller` parameter: the gateway sets it to the key's
    id and drops a client's own, in every form Jina hands an executor."""
    pool = type("Pool", (), {"send_requests_once": None})()  # Admission wraps its sending; unused here
    admission = Admission(pool, ExecutorCalls(), request_timeout_seconds=300, timeout_send_seconds=-1,
                          grace_seconds=30)
    asked = {"caller": "someone-else", "diffusion__caller": "someone-else", "whisper": {"caller": "x", "beam_size": 2}}
    parameters = admission.admit(asked, caller="0123abcd")
    assert parameters["caller"] == "0123abcd" and "diffusion__caller" not in parameters
    assert parameters["whisper"] == {"beam_size": 2}
    assert "caller" not in admission.admit(asked)  # without keys: no caller, and not the client's


def test_a_keys_rate_is_a_minutes_worth_at_once_then_refilled_as_time_passes():
    now = [1000.0]
    rates = KeyRates(6, clock=lambda: now[0])  # one request every 10 s
    for _ in range(6):
        rates.take("a")
    with pytest.raises(Busy) as refused:
        rates.take("a")
    assert str(refused.value) == ("rate limit: more than requests_per_minute_per_key=6 requests a minute from this "
                                  "key; retry in about 10 s")
    assert refused.value.retry_after == pytest.approx(10)
    rates.take("b")  # each key has its own
    now[0] += 4
    with pytest.raises(Busy) as refused:
        rates.take("a")
    assert refused.value.retry_after == pytest.approx(6)  # 0.4 of a request back: 6 s to a whole one
    now[0] += 6
    rates.take("a")
    with pytest.raises(Busy):
        rates.take("a")


def post(app, tls, path: str, key: str = KEY_A, headers: Optional[dict] = None, **kwargs) -> requests.Response:
    return requests.post(https(app, path), headers={"Authorization": f"Bearer {key}", **(headers or {})},
                         verify=str(tls / "ca.pem"), timeout=120, **kwargs)


def test_many_documents_on_the_json_route_are_counted_before_any_is_built(app, tls):
    received = count(app, f"{metrics.REQUESTS}_total", "whisper")
    log_lines = len(app.stderr().splitlines())
    refused = post(app, tls, "/generate", json={"data": [{"prompt": "a red apple"}] * 20_000})
    assert refused.status_code == 400
    assert "too many documents: 20000 > max_documents=16" in refused.json()["header"]["status"]["description"]
    assert count(app, f"{metrics.REQUESTS}_total", "whisper") == received  # nothing was forwarded
    assert len(app.stderr().splitlines()) - log_lines <= 2  # a refusal is a line of log, not pages
    models = requests.get(https(app, "/v1/models"), headers={"Authorization": f"Bearer {KEY_A}"},
                          verify=str(tls / "ca.pem"), timeout=30)
    assert models.status_code == 200


def test_a_host_name_the_server_is_not_under_is_refused(app, tls):
    """DNS rebinding: another site's name made to point at this machine gets nothing."""
    body = {"prompt": "a red apple", "size": "64x64", "steps": 1, "response_format": "url"}
    rebound = post(app, tls, "/v1/images/generations", headers={"Host": "rebind.evil.example"}, json=body)
    assert rebound.status_code == 421 and "--allowed-hosts" in rebound.json()["error"]["message"]


def test_another_sites_page_may_not_post_but_the_servers_own_may(app, tls):
    body = {"prompt": "a red apple", "size": "64x64", "steps": 1}
    foreign = post(app, tls, "/v1/images/generations", headers={"Origin": "https://evil.example"}, json=body)
    assert foreign.status_code == 403
    own = post(app, tls, "/v1/images/generations", headers={"Origin": f"https://localhost:{app.port + 1}"}, json=body)
    assert own.status_code == 200, own.text


def test_kept_images_are_linked_relative_to_the_server_never_by_the_requests_host(app, tls):
    body = {"prompt": "a red apple", "size": "64x64", "steps": 1, "response_format": "url"}
    answer = post(app, tls, "/v1/images/generations", headers={"Host": f"127.0.0.1:{app.port + 1}"}, json=body)
    url = answer.json()["data"][0]["url"]
    assert url.startswith("/v1/images/"), url
    png = requests.get(https(app, url), verify=str(tls / "ca.pem"), timeout=30)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_no_page_that_loads_scripts_from_a_cdn_is_served(app, tls):
    for path in ("/docs", "/redoc"):
        answer = requests.get(https(app, path), headers={"Authorization": f"Bearer {KEY_A}"},
                              verify=str(tls / "ca.pem"), timeout=30)
        assert answer.status_code == 404, path
    document = requests.get(https(app, "/openapi.json"), headers={"Authorization": f"Bearer {KEY_A}"},
                            verify=str(tls / "ca.pem"), timeout=30)
    assert document.status_code == 200 and "/v1/images/generations" in document.json()["paths"]


def test_wide_parameters_are_refused_before_they_are_converted(app, tls):
    wide = post(app, tls, "/generate", json={"data": [{"prompt": "x"}], "parameters": {"z": [0] * 200_000}})
    assert wide.status_code == 400 and "more than 1000 values" in wide.json()["header"]["status"]["description"]
    request = data_request(1, {"z": list(range(20_000))}, "wide-parameters")
    with pytest.raises(grpc.RpcError) as refused:
        call(app, tls, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("parameters too large")


def test_a_message_that_does_not_parse_is_one_line_without_python(app, tls):
    request = data_request(0, {}, "garbage")
    request.proto_with_data.data.docs_bytes = b"\xff\xff\xff"
    with pytest.raises(grpc.RpcError) as refused:
        call(app, tls, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "class" not in refused.value.details() and "Error" not in refused.value.details()


def test_a_host_header_that_does_not_parse_is_refused_without_a_stack(app, tls):
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    with context.wrap_socket(socket.create_connection(("localhost", app.port + 1)), server_hostname="localhost") as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n")
        s.settimeout(30)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 421"), answer[:200]
    assert "Exception in ASGI application" not in app.stderr()


def test_a_body_that_trickles_in_is_refused(app, tls):
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    with context.wrap_socket(socket.create_connection(("localhost", app.port + 1)), server_hostname="localhost") as s:
        s.sendall(f"POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY_A}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode())
        s.settimeout(1)
        answer = b""
        for _ in range(int(60 * HEADER_TIMEOUT)):  # a byte a second at most: far slower than allowed
            try:
                s.sendall(b" ")
                answer += s.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            if answer.count(b"\r\n\r\n"):
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_the_single_document_streaming_call_needs_a_key_and_refuses_an_empty_document_in_one_line(app, tls):
    from jina.proto import jina_pb2_grpc
    from jina.types.request.data import SingleDocumentRequest

    from speech2image.schema import SpeechImageDoc

    empty = SingleDocumentRequest()
    empty.document_cls = SpeechImageDoc
    empty.data.doc = SpeechImageDoc()
    with channel(app, tls) as chan:
        stub = jina_pb2_grpc.JinaSingleDocumentRequestRPCStub(chan)
        with pytest.raises(grpc.RpcError) as unauthenticated:
            list(stub.stream_doc(empty, timeout=30))
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.stream_doc(empty, metadata=(("authorization", f"Bearer {KEY_A}"),), timeout=30))
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("InvalidRequest: empty document: it has neither audio nor a text prompt")


def test_a_key_holding_every_place_gives_one_up_to_another_keys_request(app, tls):
    """A fills the replica's three places with long requests; B's request is admitted all the same:
    A's newest gives its place up (RESOURCE_EXHAUSTED, with when to retry), and B's is served
    next, before A's older queued one (turns go round between keys)."""
    wait_until(lambda: count(app, metrics.IN_PROGRESS) == 0 and count(app, metrics.QUEUE_LENGTH) == 0, 60,
               "the replica idle")
    body = {"prompt": "a red apple", "size": "64x64", "steps": 1}

    async def scenario():
        from jina.proto import jina_pb2_grpc

        credentials = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{app.port}", credentials) as chan:
            stub = jina_pb2_grpc.JinaSingleDataRequestRPCStub(chan)

            def send(name):
                return asyncio.ensure_future(stub.process_single_data(
                    data_request(1, LONG, name), metadata=(("authorization", f"Bearer {KEY_A}"),), timeout=300))

            a_running = send("a-running")
            sent = [a_running]
            try:
                await asyncio.to_thread(wait_until, lambda: count(app, metrics.IN_PROGRESS) == 1, 120, "A running")
                a_queued = send("a-queued")
                sent.append(a_queued)
                await asyncio.to_thread(wait_until, lambda: count(app, metrics.QUEUE_LENGTH) == 1, 60, "A queued")
                a_newest = send("a-newest")
                sent.append(a_newest)
                await asyncio.to_thread(wait_until, lambda: count(app, metrics.QUEUE_LENGTH) == 2, 60, "A's newest")
                b = asyncio.ensure_future(asyncio.to_thread(post, app, tls, "/v1/images/generations", KEY_B,
                                                            json=body))
                await asyncio.wait({a_newest, b}, return_when=asyncio.FIRST_COMPLETED)
                assert not b.done(), f"B was answered while A held every place: {b.result().status_code}"
                refusal = a_newest.exception()
                a_running.cancel()  # the replica's next turn
                answer = await b
                assert not a_queued.done()  # B's request went before A's older one
                return refusal, answer
            finally:
                for call in sent:
                    call.cancel()

    refusal, answer = asyncio.run(scenario())
    assert answer.status_code == 200, answer.text
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.fullmatch(r"busy: your requests held 3 of this replica's 3 places while another caller's waited "
                        r"\(max_caller_share=0\.5\): the newest gave its place up; retry in about \d+ s",
                        refusal.details()), refusal.details()
    assert int(refusal.trailing_metadata()["retry-after"]) >= 1
    wait_until(lambda: count(app, metrics.IN_PROGRESS) == 0 and count(app, metrics.QUEUE_LENGTH) == 0, 60,
               "A's requests cancelled")


def test_a_key_past_its_rate_is_refused_with_when_to_retry(app, tls):
    """A bucket of RATE requests, refilled at RATE a minute: past it, HTTP 429 with Retry-After and
    gRPC RESOURCE_EXHAUSTED with retry-after, one line naming the limit."""
    line = (rf"rate limit: more than requests_per_minute_per_key={RATE} requests a minute from this key; "
            r"retry in about \d+ s")
    statuses = []
    with requests.Session() as session:
        for _ in range(4 * RATE):  # the bucket refills at one every 2 s: far slower than these are answered
            answer = session.get(https(app, "/v1/models"), headers={"Authorization": f"Bearer {KEY_C}"},
                                 verify=str(tls / "ca.pem"), timeout=30)
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                break
    assert statuses[-1] == 429 and len(statuses) > RATE, statuses
    assert re.fullmatch(line, answer.json()["error"]["message"]) and int(answer.headers["Retry-After"]) >= 1
    assert requests.get(https(app, "/v1/models"), headers={"Authorization": f"Bearer {KEY_A}"},
                        verify=str(tls / "ca.pem"), timeout=30).status_code == 200  # another key's own rate
    for _ in range(RATE):  # each one that passes is refused for its documents, and spends a request
        with pytest.raises(grpc.RpcError) as refused:
            call(app, tls, data_request(17, {}, "over-rate"), key=KEY_C)
        if refused.value.code() != grpc.StatusCode.INVALID_ARGUMENT:
            break
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and re.fullmatch(line, refused.value.details())
    assert int(dict(refused.value.trailing_metadata())["retry-after"]) >= 1
