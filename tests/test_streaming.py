"""Streams, with clients nobody here wrote: the official OpenAI SDK (`stream=True`), curl -N, and
the replicas' own counters for what a closed stream leaves running.

One `python app.py --offline` with one diffusion replica that queues one request
(`--max-queued-requests 1`), so that two long requests fill it. A long request lasts a set time
at the pace measured on this app just before (tests/support/pace.py): no verdict depends on
the CPU's speed; the limits on waits only stop a test that hangs.
"""

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess

import openai
import pytest
import requests

from speech2image.observability import names
from tests.support.app import App, run_client
from tests.support.metrics import total, wait_until
from tests.support.pace import measure
from tests.support.speech import ROOT

pytestmark = pytest.mark.flow

IN_PROGRESS, QUEUE_LENGTH = names.IN_PROGRESS, names.QUEUE_LENGTH
CANCELLED, IMAGES = f"{names.CANCELLED}_total", f"{names.IMAGES}_total"
LONG_SECONDS = 60  # a request far longer than any check a test makes while it runs


@pytest.fixture(scope="module")
def app():
    with App("--diffusion-replicas", "1", "--max-queued-requests", "1") as app:
        yield app


@pytest.fixture(scope="module")
def pace(app):
    return measure(f"127.0.0.1:{app.port}", replicas=1)


@pytest.fixture(scope="module")
def sdk(app):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{app.port + 1}/v1", api_key="unused", max_retries=0)


def events_of(response) -> list[dict]:
    """The data of each server-sent event of a streamed answer, with its event name checked."""
    events, name = [], None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: "):])
            assert data.get("type", "error") == name
            events.append(data)
    return events


@contextlib.contextmanager
def full_replica(app, pace):
    """The replica running one long request and queueing another (curl, killed after the block: its
    clients gone, the gateway cancels their work, and the replica is idle again)."""
    wait_until(lambda: idle(app), 60, "the replica idle")
    body = json.dumps(pace.body(LONG_SECONDS, prompt="a long request"))
    curls = []
    try:
        for metric in (IN_PROGRESS, QUEUE_LENGTH):  # one running, then one queued: full
            curls.append(subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{app.port + 1}"
                                           "/v1/images/generations", "-H", "content-type: application/json", "-d", body]))
            wait_until(lambda metric=metric: total(app.metrics_urls, metric, "diffusion") == 1, 60, f"{metric} 1")
        yield
    finally:
        for curl in curls:
            curl.kill()
            curl.wait()
    wait_until(lambda: idle(app), LONG_SECONDS / 2, "the replica idle after its clients went away")


def idle(app) -> bool:
    return total(app.metrics_urls, IN_PROGRESS, "diffusion") == 0 and total(app.metrics_urls, QUEUE_LENGTH,
                                                                            "diffusion") == 0


def test_the_sdk_streams_a_transcript_whose_deltas_join_to_its_text(sdk, jfk_bytes, jfk_text):
    said = sdk.audio.transcriptions.create(file=("jfk.flac", jfk_bytes), model="whisper-1")
    events = list(sdk.audio.transcriptions.create(file=("jfk.flac", jfk_bytes), model="whisper-1", stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1) and len(events) >= 2
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == said.text
    assert "ask not what your country" in events[-1].text.lower() and events[-1].model_extra["language"] == "en"


def test_the_sdk_streams_partial_images_then_each_png_as_the_same_seed_draws_it(sdk):
    options = {"steps": 4, "seed": 7}
    drawn = sdk.images.generate(prompt="a red car", n=2, size="64x64", extra_body=options)
    events = list(sdk.images.generate(prompt="a red car", n=2, size="64x64", stream=True, partial_images=2,
                                      extra_body=options))
    by_index = {0: [], 1: []}
    for event in events:
        by_index[event.model_extra["index"]].append(event)
    for index, seen in by_index.items():
        assert [e.type for e in seen] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
        assert [e.partial_image_index for e in seen[:2]] == [0, 1]
        assert {e.model_extra["seed"] for e in seen} == {7 + index}
        assert all(base64.b64decode(e.b64_json).startswith(b"\x89PNG") and e.size == "64x64" for e in seen)
        assert seen[-1].b64_json == drawn.data[index].b64_json  # the streamed image is the image
        assert seen[0].b64_json != seen[-1].b64_json  # a preview is not the final image
    assert max(events.index(e) for e in by_index[0]) < min(events.index(e) for e in by_index[1])


def test_curl_streams_speech_to_image_transcript_first_then_images(app, tmp_path, jfk_text):
    answer = subprocess.run(
        ["curl", "-sSN", "--fail-with-body", f"http://127.0.0.1:{app.port + 1}/v1/speech-to-image",
         "-F", f"file=@{ROOT / 'tests/data/jfk.flac'}", "-F", "stream=true", "-F", "n=2", "-F", "steps=2",
         "-F", "partial_images=1", "-F", "progress=true", "-F", "size=64x64"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    events = [json.loads(line[len("data: "):]) for line in answer.splitlines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    done = kinds.index("transcript.text.done")
    assert set(kinds[:done]) == {"transcript.text.delta"}
    assert set(kinds[done + 1:]) == {"image_generation.progress", "image_generation.partial_image",
                                     "image_generation.completed"}
    assert [e["index"] for e in events if e["type"] == "image_generation.completed"] == [0, 1]
    assert [(e["step"], e["steps"]) for e in events if e["type"] == "image_generation.progress"] == [(1, 2), (2, 2)] * 2
    assert "ask not what your country" in events[done]["text"].lower()
    assert all(e["revised_prompt"] == events[done]["text"] for e in events if e["type"] == "image_generation.completed")


def test_a_bad_option_is_a_400_before_the_stream_opens(sdk):
    with pytest.raises(openai.BadRequestError, match="width=1024"):
        list(sdk.images.generate(prompt="a red car", size="1024x1024", stream=True))


def test_a_closed_stream_stops_its_work_at_the_next_step(app, pace):
    wait_until(lambda: idle(app), 60, "the replica idle")
    cancelled, drawn = total(app.metrics_urls, CANCELLED, "diffusion"), total(app.metrics_urls, IMAGES, "diffusion")
    body = pace.body(LONG_SECONDS, prompt="a long stream", stream=True, progress=True)
    with requests.post(f"http://127.0.0.1:{app.port + 1}/v1/images/generations", json=body, stream=True,
                       timeout=300) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: "))
        assert json.loads(first[len("data: "):])["type"] == "image_generation.progress"
    # closed after its first step of a request meant to last a minute: the replica stops it
    wait_until(lambda: idle(app), LONG_SECONDS / 2, "the replica idle after the stream closed")
    assert total(app.metrics_urls, CANCELLED, "diffusion") == cancelled + 1
    assert total(app.metrics_urls, IMAGES, "diffusion") == drawn


def test_a_full_replica_is_a_429_with_retry_after_before_the_stream_opens(app, pace):
    with full_replica(app, pace):
        refused = requests.post(f"http://127.0.0.1:{app.port + 1}/v1/images/generations",
                                json={"prompt": "one too many", "stream": True}, timeout=60)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["content-type"] == "application/json"
    assert "busy" in refused.json()["error"]["message"]


def test_client_py_says_the_transcript_then_each_image_and_keeps_the_previews(app, tmp_path):
    done = run_client(ROOT / "tests/data/jfk.flac", "--host", f"127.0.0.1:{app.port}", "--num-images", "2",
                      "--steps", "4", "--partial-images", "2", "--width", "64", "--height", "64", "--seed", "11",
                      "--previews", tmp_path / "previews", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    told = done.stderr.splitlines()
    heard = next(k for k, line in enumerate(told) if "heard 'And so my fellow Americans" in line)
    drawn = [k for k, line in enumerate(told) if "drawn (seed" in line]
    assert len(drawn) == 2 and heard < drawn[0] and "seed 11, 4 steps" in told[drawn[0]]
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [
        f"00-jfk-seed{seed}-step{step:03d}.png" for seed in (11, 12) for step in (1, 3)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "00-jfk-seed11.png", "00-jfk-seed12.png", "contact_sheet.png"]


def test_jinas_own_client_streams_a_prompt_with_its_options_in_the_document(app):
    from jina import Client

    from speech2image.schema import SpeechImageDoc

    async def events():
        doc = SpeechImageDoc(prompt="a red car", stream_parameters=json.dumps(
            {"diffusion__steps": 2, "diffusion__width": 64, "diffusion__height": 64, "diffusion__seed": 3}))
        return [event async for event in Client(port=app.port, asyncio=True).stream_doc(
            on="/stream", inputs=doc, return_type=SpeechImageDoc)]

    told = asyncio.run(events())
    assert [(e.event, e.step) for e in told] == [("step", 1), ("step", 2), ("image.completed", 2), (None, None)]
    assert told[-2].images[0].seed == 3 and told[-2].images[0].width == 64


@pytest.fixture(scope="module")
def node_sdk(tmp_path_factory):
    """The OpenAI Node SDK at the version tests/support/node/package-lock.json pins, installed by
    npm ci into a folder of its own (nothing is written into the repository)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed (apt-get install nodejs npm)")
    folder = tmp_path_factory.mktemp("node")
    for name in ("package.json", "package-lock.json", "stream_transcript.mjs"):
        shutil.copy(ROOT / "tests/support/node" / name, folder / name)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True, timeout=600)
    return folder


def test_the_node_sdk_streams_a_transcript(app, node_sdk, jfk_text):
    done = subprocess.run(["node", "stream_transcript.mjs", f"http://127.0.0.1:{app.port + 1}/v1",
                           str(ROOT / "tests/data/jfk.flac")], cwd=node_sdk, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]
    assert "ask not what your country" in events[-1]["text"].lower()


def test_partial_images_without_a_stream_is_a_one_line_400(sdk):
    with pytest.raises(openai.BadRequestError, match="partial_images is sent in a stream: add stream=true"):
        sdk.images.generate(prompt="a red car", partial_images=2)


@pytest.mark.parametrize(("fields", "refusal"), [
    ({"prompt": "a cat", "text": "planted"}, "InvalidRequest: document 0 sets text, which the server fills"),
    ({"prompt": "a cat", "event": "image.completed"}, "InvalidRequest: document 0 sets event, which the server fills"),
    ({"prompt": "a cat", "stream_parameters": "[" * 70_000}, "InvalidRequest: parameters too large"),
    ({"prompt": "a cat", "stream_parameters": "[" * 5_000}, "InvalidRequest: stream_parameters is not a JSON object"),
])
def test_a_grpc_stream_refuses_what_the_server_fills_and_oversized_options_in_one_line(app, fields, refusal):
    import grpc
    from jina.proto import jina_pb2_grpc
    from jina.types.request.data import SingleDocumentRequest

    from speech2image.schema import SpeechImageDoc

    request = SingleDocumentRequest()
    request.document_cls = SpeechImageDoc
    request.data.doc = SpeechImageDoc(**fields)
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(jina_pb2_grpc.JinaSingleDocumentRequestRPCStub(channel).stream_doc(request, timeout=60))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and refused.value.details().startswith(refusal)


def test_an_error_after_the_stream_opened_is_one_error_event_that_ends_it(app, pace):
    """The transcript is sent, then the diffusion replica is full: its refusal is the last event."""
    with full_replica(app, pace), requests.post(
            f"http://127.0.0.1:{app.port + 1}/v1/speech-to-image", data={"stream": "true"}, stream=True, timeout=120,
            files={"file": ("jfk.flac", (ROOT / "tests/data/jfk.flac").read_bytes())}) as answer:
        assert answer.status_code == 200
        events = events_of(answer)
    assert [e.get("type", "error") for e in events][-2:] == ["transcript.text.done", "error"]
    assert events[-1]["error"]["type"] == "rate_limit_error" and "busy" in events[-1]["error"]["message"]
