"""The front door, called by clients nobody here wrote: the official OpenAI SDK and curl, over TLS
with a private certificate authority made here, with API keys; and client.py over gRPC and HTTP.
app.py runs as users run it (Whisper base: multilingual), and listens on loopback only."""

import base64
import io
import json
import os
import subprocess

import psutil
import pytest

from tests.support.app import App, run_client
from tests.support.speech import SPEECH, wer
from tests.support.tls import private_ca

KEY = "sk-front-door-test-key-0123456789"
OTHER_KEY = "a-second-key"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A private CA and a certificate it signed for localhost and 127.0.0.1."""
    return private_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls, tmp_path_factory):
    import hashlib

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# who may call\n{KEY}\nsha256:{hashlib.sha256(OTHER_KEY.encode()).hexdigest()}\n")
    with App("--whisper-model", "embedded-base", "--api-keys", str(keys), "--tls-cert", str(tls / "server.pem"),
             "--tls-key", str(tls / "server.key"), "--max-request-bytes", "3000000",
             env={"JINA_LOG_LEVEL": "DEBUG"}) as app:
        yield app


@pytest.fixture(scope="module")
def openai_client(server, tls):
    from openai import DefaultHttpxClient, OpenAI

    def make(key=KEY):
        return OpenAI(base_url=f"https://localhost:{server.port + 1}/v1", api_key=key, max_retries=0,
                      http_client=DefaultHttpxClient(verify=str(tls / "ca.pem")))

    return make


@pytest.mark.flow
def test_the_ready_line_gives_the_tls_addresses_and_the_openai_base_url(server):
    assert f"grpcs://localhost:{server.port}, https://localhost:{server.port + 1}" in server.ready_line
    assert f"OpenAI base URL https://localhost:{server.port + 1}/v1; API keys required" in server.ready_line


@pytest.mark.flow
def test_every_listening_socket_of_the_process_group_is_on_loopback(server):
    group = os.getpgid(server.process.pid)
    listening = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                listening += [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except (psutil.Error, ProcessLookupError):
            continue
    # the gateway's two ports, two executors, the gateway's and each executor's metrics
    assert len(listening) >= 6, listening
    assert all(address.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for address in listening), listening


@pytest.mark.flow
def test_the_openai_sdk_transcribes_jfk(openai_client, jfk_bytes, jfk_text):
    text = openai_client().audio.transcriptions.create(model="whisper-1", file=("jfk.flac", jfk_bytes)).text
    assert wer(jfk_text, text) == 0


@pytest.mark.flow
def test_the_openai_sdk_translates_german_with_embedded_base(openai_client):
    translated = openai_client().audio.translations.create(
        model="embedded-base", file=("de.flac", (SPEECH / "de-bicycle.flac").read_bytes()))
    words = set(translated.text.lower().replace(".", " ").replace(",", " ").split())
    assert translated.text.isascii() and len(words & {"morning", "bike", "city", "bread", "cheese"}) >= 2


@pytest.mark.flow
def test_verbose_json_has_language_duration_segments_and_words(openai_client, jfk_bytes):
    verbose = openai_client().audio.transcriptions.create(
        model="whisper-1", file=("jfk.flac", jfk_bytes), response_format="verbose_json",
        timestamp_granularities=["word"])
    assert (verbose.language, verbose.duration) == ("english", 11.0)
    assert verbose.segments[0].start == 0 and 10 <= verbose.segments[-1].end <= 11.1  # the last word ends at 10.36
    assert [w.word.strip(",.").lower() for w in verbose.words][:4] == ["and", "so", "my", "fellow"]


@pytest.mark.flow
def test_the_openai_sdk_draws_two_pngs_and_the_same_seed_draws_the_same_bytes(openai_client):
    def draw():
        answer = openai_client().images.generate(prompt="a red apple", n=2, response_format="b64_json", size="32x32",
                                                 extra_body={"seed": 7, "steps": 1})
        return [base64.b64decode(image.b64_json) for image in answer.data], answer

    first, answer = draw()
    assert len(first) == 2 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in first)
    assert [image.model_extra["seed"] for image in answer.data] == [7, 8]
    assert answer.data[0].revised_prompt == "a red apple"
    again, _ = draw()
    assert again == first


@pytest.mark.flow
def test_images_by_url_are_served_for_a_while(openai_client, tls):
    import httpx

    answer = openai_client().images.generate(prompt="a red apple", response_format="url", size="32x32",
                                             extra_body={"steps": 1})
    url = str(openai_client().base_url).removesuffix("/v1/") + answer.data[0].url  # relative to the server
    fetched = httpx.get(url, verify=str(tls / "ca.pem"))  # the unguessable name is the key
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    missing = httpx.get(url + "x", verify=str(tls / "ca.pem"))
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("no such image")


@pytest.mark.flow
def test_models_lists_the_served_ones_and_an_unknown_model_is_404(openai_client, jfk_bytes):
    import openai

    assert {m.id for m in openai_client().models.list().data} == {"embedded-base", "whisper-1", "tiny"}
    with pytest.raises(openai.NotFoundError, match="the Whisper model 'whisper-9' is not served here; use "
                                                   "embedded-base, whisper-1"):
        openai_client().audio.transcriptions.create(model="whisper-9", file=("jfk.flac", jfk_bytes))


@pytest.mark.flow
def test_openai_errors_a_wrong_key_and_a_file_that_is_not_audio(openai_client):
    import openai

    with pytest.raises(openai.AuthenticationError) as refused:
        openai_client("sk-wrong").models.list()
    assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(OTHER_KEY).audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"not audio" * 50))
    assert refused.value.body["message"].startswith("not audio: the bytes are not a wav")
    assert "Traceback" not in json.dumps(refused.value.body)


@pytest.mark.flow
def test_curl_transcription_and_speech_to_image(server, tls, tmp_path):
    base = f"https://localhost:{server.port + 1}/v1"
    curl = ["curl", "-s", "--cacert", str(tls / "ca.pem"), "-H", f"Authorization: Bearer {KEY}"]
    heard = subprocess.run([*curl, "-F", f"file=@{SPEECH / 'jfk.flac'}", "-F", "response_format=text",
                            f"{base}/audio/transcriptions"], capture_output=True, text=True, timeout=120)
    assert heard.stdout.startswith("And so") and heard.stdout.endswith("country.\n")
    drawn = subprocess.run([*curl, "-F", f"file=@{SPEECH / 'prompt4.wav'}", "-F", "n=2", "-F", "size=32x32",
                            "-F", "seed=3", "-F", "steps=1", f"{base}/speech-to-image"],
                           capture_output=True, text=True, timeout=120)
    answer = json.loads(drawn.stdout)
    assert "table" in answer["text"].lower() and (answer["language"], answer["task"]) == ("en", "transcribe")
    assert [image["seed"] for image in answer["data"]] == [3, 4]
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"]))).size == (32, 32)


@pytest.mark.flow
def test_client_py_over_grpcs_and_https_with_a_private_ca_and_keys(server, tls, tmp_path):
    common = ["--text", "a red apple", "--steps", 1, "--width", 32, "--out", tmp_path, "--ca", tls / "ca.pem"]
    for host in (f"grpcs://localhost:{server.port}", f"https://localhost:{server.port + 1}"):
        done = run_client(*common, "--host", host, "--api-key", KEY)
        assert done.returncode == 0, done.stderr
        refused = run_client(*common, "--host", host)  # no key
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("error: the server refused the API key")
    untrusted = run_client("--text", "a red apple", "--host", f"grpcs://localhost:{server.port}", "--api-key", KEY)
    assert untrusted.returncode == 1 and untrusted.stderr.count("\n") == 1, untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


@pytest.mark.flow
def test_health_and_readiness_stay_open(server, tls):
    import grpc
    import httpx
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    for path in ("/", "/dry_run"):
        assert httpx.get(f"https://localhost:{server.port + 1}{path}", verify=str(tls / "ca.pem")).status_code == 200
    assert httpx.get(f"https://localhost:{server.port + 1}/docs", verify=str(tls / "ca.pem")).status_code == 401


@pytest.mark.flow
def test_an_oversized_request_is_refused_at_the_gateway(server, tls, tmp_path):
    import httpx

    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + os.urandom(4_000_000))  # over --max-request-bytes 3000000, under max_audio_bytes
    done = run_client(big, "--host", f"grpcs://localhost:{server.port}", "--ca", tls / "ca.pem", "--api-key", KEY)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "larger than max" in done.stderr  # gRPC's own refusal at the gateway, not the executor's max_audio_bytes
    answer = httpx.post(f"https://localhost:{server.port + 1}/v1/audio/transcriptions", verify=str(tls / "ca.pem"),
                        headers={"Authorization": f"Bearer {KEY}"}, files={"file": ("big.wav", big.read_bytes())})
    assert answer.status_code == 413
    assert answer.json()["error"]["message"].startswith("request too large: ")


@pytest.mark.flow
def test_each_http_route_takes_the_body_it_needs_and_a_streamed_one_over_it_is_413(server, tls):
    import httpx

    with httpx.Client(verify=str(tls / "ca.pem"), headers={"Authorization": f"Bearer {KEY}"}) as http:
        fields = http.post(f"https://localhost:{server.port + 1}/v1/images/generations",
                           json={"prompt": "x" * 1_100_000})  # no audio: a mebibyte of fields is the most
        assert fields.status_code == 413 and fields.json()["error"]["message"].startswith("request too large")

        def chunks():  # a valid form, streamed: no Content-Length, the size shows only as it comes in
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 100_000
            yield b"\r\n--b--\r\n"

        streamed = http.post(f"https://localhost:{server.port + 1}/v1/audio/transcriptions", content=chunks(),
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413, streamed.text


@pytest.mark.flow
def test_a_call_without_a_key_is_refused_before_its_message_is_read(server, tls):
    """gRPC reads a unary call's whole message before its handler: a refused call must not be."""
    import grpc

    credentials = grpc.ssl_channel_credentials((tls / "ca.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        call = channel.unary_unary("/jina.JinaSingleDataRequestRPC/process_single_data")  # bytes as they are
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\x00" * 4_000_000, timeout=30)  # over --max-request-bytes: read, it would be RESOURCE_EXHAUSTED
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as compressed:  # a small gzip message may unpack to max_request_bytes
            call(b"\x00" * 1000, timeout=30, compression=grpc.Compression.Gzip,
                 metadata=(("authorization", f"Bearer {KEY}"),))
        assert compressed.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.flow
def test_the_keys_never_reach_the_log_or_the_metrics(server):
    import urllib.request

    exported = [urllib.request.urlopen(url, timeout=10).read().decode() for url in server.metrics_urls]
    everything = server.stderr() + "".join(server.output) + "".join(exported)
    assert "DEBUG" in everything  # the whole log, at its most verbose
    assert KEY not in everything and OTHER_KEY not in everything


@pytest.mark.flow
def test_the_page_uses_the_key_on_its_server_and_never_shows_it(server, tls):
    import httpx
    from gradio_client import Client

    from tests.support.app import Page

    with Page(f"grpcs://localhost:{server.port}", "--api-key", KEY, "--ca", str(tls / "ca.pem")) as ui:
        status, transcript, images, *_ = Client(ui.url, verbose=False).predict(
            None, "a red apple", "auto", "auto", 1, "", "1", "", "32", "32", "", fn_index=0)
        assert status == "Done: 1 image(s)" and len(images) == 1
        page = httpx.get(ui.url).text + httpx.get(f"{ui.url}/config").text
        assert KEY not in page


@pytest.mark.flow
def test_exposing_the_page_without_users_is_refused_with_one_line():
    import sys

    from tests.support.speech import ROOT

    done = subprocess.run([sys.executable, "ui.py", "--listen", "0.0.0.0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "ui.py: --listen 0.0.0.0 would let anyone who reaches this machine use the page: add --users FILE "
        "(user:password lines), or pass --allow-unauthenticated on purpose"]


def test_a_keys_file_keeps_a_hash_inside_a_key_and_refuses_short_keys(tmp_path):
    from speech2image.api.keys import ApiKeys
    from speech2image.errors import ConfigurationError

    keys = tmp_path / "keys.txt"
    keys.write_text("# who may call\nZx9#kP2mQ7vR4tL8wY3n  # the team's\n")
    loaded = ApiKeys.load(str(keys))
    assert loaded.check("Bearer Zx9#kP2mQ7vR4tL8wY3n") and loaded.check("Bearer Zx9") is None
    keys.write_text("short-key\n")
    with pytest.raises(ConfigurationError, match="^line 1 of the API keys file: a key needs 16 characters or more"):
        ApiKeys.load(str(keys))



@pytest.mark.flow
def test_the_pages_users_file_keeps_a_hash_inside_a_password_and_refuses_a_user_without_one(tmp_path):
    """A `#` cut a password short (its prefix logged in) and a line without a password let that
    user in with an empty one."""
    import hashlib
    import sys

    from speech2image.api.keys import Users
    from speech2image.errors import ConfigurationError
    from tests.support.speech import ROOT

    users = tmp_path / "users.txt"
    users.write_text(f"# who may open the page\nalice:pass#word-of-alice  # the team's\n"
                     f"bob:sha256:{hashlib.sha256(b'b0b').hexdigest()}\n")
    login = Users.load(str(users))
    assert login.check("alice", "pass#word-of-alice") and login.check("bob", "b0b")
    assert not login.check("alice", "pass") and not login.check("bob", "") and not login.check("eve", "")
    users.write_text("alice:password-of-alice\nbob\n")
    with pytest.raises(ConfigurationError, match="^line 2 of the users file: write user:password"):
        Users.load(str(users))
    done = subprocess.run([sys.executable, "ui.py", "--listen", "0.0.0.0", "--users", str(users)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr

def test_a_failed_dry_run_names_the_part_not_its_address():
    from jina.proto import jina_pb2

    from gateway.grpc_guard import scrub

    status = jina_pb2.StatusProto(code=jina_pb2.StatusProto.ERROR, description=(
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:53780: Connection refused "
        "deployment whisper at address(es) {'127.0.0.1:53780'}"))
    status.exception.stacks.append('File "/work/main/executors/whisper/executor.py", line 48')
    scrubbed = scrub(status)
    assert scrubbed.description == "the whisper executor does not answer (it may be restarting); try again"
    assert list(scrubbed.exception.stacks) == []


@pytest.mark.flow
def test_websocket_is_not_served_even_with_a_key(server, tls):
    """Jina's gateways can speak WebSocket; this one does not: the upgrade is refused (1008)."""
    import ssl

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    for path in ("/", "/generate"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"wss://localhost:{server.port + 1}{path}", ssl=context, open_timeout=60,  # a hang's bound
                    additional_headers={"Authorization": f"Bearer {KEY}"})
        assert refused.value.response.status_code == 403  # uvicorn's answer to a close before accept
