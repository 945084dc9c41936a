"""app.py and client.py as separate processes, the way users run them."""

import json
import subprocess
import sys

import pytest

from tests.support.app import App
from tests.support.app import run_client as client
from tests.support.ports import free_port
from tests.support.speech import ROOT, SPEECH, wer

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def server(float32_app):
    assert f"grpc://localhost:{float32_app.port}, http://localhost:{float32_app.port + 1}" in float32_app.ready_line
    return float32_app.port


@pytest.fixture(scope="module")
def multilingual():
    """app.py with Whisper base (multilingual) and no metrics, shared: the German test first, then
    the tests that stop it."""
    with App("--whisper-model", "embedded-base", "--no-monitoring") as app:
        yield app


@pytest.fixture(scope="module")
def stopped(multilingual):
    """The multilingual app.py stopped with SIGTERM, as an operator stops it: its exit code."""
    return multilingual.terminate()


def test_client_json_files_and_contact_sheet(server, tmp_path, clips):
    port = server
    done = client(SPEECH / "jfk.flac", SPEECH / "prompt1.wav", "--host", f"localhost:{port}", "--num-images", 2,
                  "--seed", 3, "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warnings: jina's pkg_resources notice is silenced
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in results] == [str(SPEECH / "jfk.flac"), str(SPEECH / "prompt1.wav")]
    assert wer(clips["jfk.flac"], results[0]["text"]) == 0 and results[0]["language"] == "en"
    for result in results:
        assert result["seeds"] == [3, 4] and len(result["images"]) == 2
        assert all(open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for path in result["images"])
        assert result["models"] == {"whisper": "embedded (tiny.en)", "diffusion": "tiny"}
        assert result["timings"]["transcribe_s"] > 0 and result["timings"]["request_s"] > 0
    assert (tmp_path / "contact_sheet.png").exists()


def test_client_text_over_http_and_human_output(server, tmp_path):
    port = server
    done = client("--text", "a red apple", "--host", f"http://localhost:{port + 1}", "--out", tmp_path,
                  "--steps", 2, "--width", 32)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("text: 'a red apple'")
    assert f"contact sheet: {tmp_path / 'contact_sheet.png'}" in done.stdout


def test_client_failures_are_one_line_and_non_zero(server, tmp_path):
    port = server
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not the samples you are looking for\n" * 20)
    playlist = tmp_path / "playlist.wav"  # FFmpeg's concat demuxer would read a file of the server's
    playlist.write_text("ffconcat version 1.0\nfile tests/data/de-car.flac\n")
    cases = {
        "error: the server refused the request: AudioError: not audio": [not_audio, "--host", f"localhost:{port}"],
        "error: the server refused the request: AudioError: not audio: the bytes are not a wav":
            [playlist, "--host", f"localhost:{port}"],
        "error: cannot reach the speech2image server at localhost:1": [SPEECH / "jfk.flac", "--host", "localhost:1"],
        "error: invalid num_images=20: allowed 1..8": [SPEECH / "jfk.flac", "--num-images", 20],
        "error: cannot read": [tmp_path / "missing.wav"],
        "error: invalid language='xx'": [SPEECH / "jfk.flac", "--language", "xx"],  # checked before any upload
    }
    for expected, args in cases.items():
        done = client(*args, "--out", tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (args, done.stderr)
    assert client(SPEECH / "prompt4.wav", "--host", f"localhost:{port}", "--out", tmp_path).returncode == 0


def test_german_speech_becomes_english_text_and_images_with_embedded_base(multilingual, tmp_path):
    done = client(SPEECH / "de-bicycle.flac", SPEECH / "jfk.flac", "--host", f"localhost:{multilingual.port}",
                  "--width", 32, "--steps", 1, "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    german, english = [json.loads(line) for line in done.stdout.splitlines()]
    # de-bicycle is detected as German at 0.977-0.985 on every CPU path measured (test_multilingual)
    assert (german["language"], german["task"], german["warnings"]) == ("de", "translate", [])
    assert german["text"].isascii() and len(german["images"]) == 1
    assert german["models"]["whisper"] == "embedded-base (base)"
    assert (english["language"], english["task"]) == ("en", "transcribe") and english["language_probability"] > 0.9


def test_sigterm_stops_the_server_cleanly(multilingual, stopped):
    assert stopped == 0
    assert "speech2image stopped" in "".join(multilingual.output)


def test_unavailable_model_stops_start_up_with_one_line():
    done = subprocess.run([sys.executable, "app.py", "--whisper-model", "embedded", "--diffusion-model",
                           "no-such-org/no-such-model", "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("speech2image: diffusion model 'no-such-org/no-such-model' could not be loaded")
    assert lines[0].endswith("or start with --offline")


def test_start_up_is_quiet_but_for_the_ready_lines(multilingual, stopped):
    noise = ("start_method", "start method", "pkg_resources", "torchvision")
    assert not [line for line in multilingual.stderr().splitlines() if any(n in line for n in noise)]


def test_an_allow_list_given_as_a_string_stops_start_up_with_one_line(tmp_path):
    import yaml

    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    flow["executors"][0]["uses_with"] = {"allowed_audio_dirs": "/srv/audio"}  # a string, not a list
    (tmp_path / "flow.yml").write_text(yaml.safe_dump(flow))
    done = subprocess.run([sys.executable, "app.py", "--offline", "--flow", str(tmp_path / "flow.yml"),
                           "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["speech2image: executor argument allowed_audio_dirs='/srv/audio' must be a list of strings, "
                     "e.g. [/srv/audio] in YAML; fix it in config.yml `with:` or flow.yml `uses_with`"], done.stderr


def test_answers_carry_no_stack_and_jina_info_is_not_served(server):
    """A bad file's error keeps its name and line; the executor's Python stack stays in the server log."""
    import grpc
    import requests
    from docarray import DocList
    from google.protobuf.empty_pb2 import Empty
    from jina import Client
    from jina.proto import jina_pb2_grpc

    from speech2image.schema import SpeechImageDoc, to_blob

    failures = []
    Client(host="localhost", port=server).post(
        "/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(b"junk" * 100))]),
        return_type=DocList[SpeechImageDoc], on_error=failures.append)
    exception = failures[0].header.status.exception
    assert exception.name == "AudioError" and exception.args[0].startswith("not audio")
    assert list(exception.stacks) == [] and exception.executor == ""
    for route in failures[0].routes:  # each executor's status travels in its route too
        assert list(route.status.exception.stacks) == [] and route.status.exception.executor == ""
    with grpc.insecure_channel(f"localhost:{server}") as channel, pytest.raises(grpc.RpcError) as refused:
        jina_pb2_grpc.JinaInfoRPCStub(channel)._status(Empty(), timeout=10)  # versions, kernel, addresses
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert requests.get(f"http://localhost:{server + 1}/status", timeout=10).status_code == 404
    answer = requests.post(f"http://localhost:{server + 1}/generate", timeout=30,
                           json={"data": [{"audio": list(b"junk" * 100)}]})
    assert answer.status_code == 400 and "Traceback" not in answer.text and "stacks" not in answer.text
    assert answer.json()["header"]["status"]["description"].startswith("AudioError: not audio")
    answer = requests.post(f"http://localhost:{server + 1}/generate", timeout=30, json={"data": [{"audio": "xx"}]})
    assert answer.status_code == 400  # a field of the wrong shape is the client's error, in one line
    assert answer.json()["header"]["status"]["description"].startswith("InvalidRequest: invalid document 0 field audio")


def test_listening_beyond_loopback_without_keys_is_refused_with_one_line():
    done = subprocess.run([sys.executable, "app.py", "--offline", "--listen", "0.0.0.0", "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["speech2image: --listen 0.0.0.0 would let anyone who reaches this machine use "
                                        "it: add --api-keys FILE (one key per line), or pass --allow-unauthenticated "
                                        "on purpose"], done.stderr
