"""The whole pipeline: app.py's Flow in-process over real gRPC and HTTP, with real models."""

import asyncio

import numpy as np
import pytest
import requests
from docarray import DocList
from jina import Client

import app
from speech2image.asr.audio import decode_audio
from speech2image.client import make_documents, post, post_async, request_parameters
from speech2image.schema import SpeechImageDoc, from_blob, to_blob
from tests.support.audio_files import encode
from tests.support.ports import free_port_pair
from tests.support.speech import SPEECH, wer

pytestmark = pytest.mark.flow

PROMPTS = ["prompt1.wav", "prompt2.wav", "prompt3.wav", "prompt4.wav"]


@pytest.fixture(scope="module")
def flow():
    port = free_port_pair()  # grpc and http take two consecutive ports
    args = app.parse_args(["--offline", "--port", str(port), "--whisper-compute-type", "float32",
                          "--max-queued-requests", "8"])  # eight clients at once below
    with app.build_flow(args, app.executor_specs(args)):
        yield port


def generate(port, docs, **options):
    return post(docs, f"localhost:{port}", request_parameters(options))


def test_clips_become_their_transcripts_and_n_images(flow, clips):
    names = ["jfk.flac", *PROMPTS]
    docs = generate(flow, make_documents([SPEECH / n for n in names]), num_images=2, seed=1)
    assert wer(clips["jfk.flac"], docs[0].text) == 0
    assert np.mean([wer(clips[n], d.text) for n, d in zip(PROMPTS, docs[1:], strict=True)]) <= 0.40
    for doc in docs:
        assert len(doc.images) == 2 and [i.seed for i in doc.images] == [1, 2]
        assert all(i.prompt == doc.text and from_blob(i.png)[:8] == b"\x89PNG\r\n\x1a\n" for i in doc.images)
        assert doc.asr_model == "embedded (tiny.en)" and doc.images[0].model == "tiny"


def test_text_only_request_skips_speech(flow):
    doc = generate(flow, make_documents([], "a red apple on a table"), num_images=1)[0]
    assert doc.text is None and doc.asr_model is None
    assert doc.images[0].prompt == "a red apple on a table"


def test_seed_determinism_through_the_whole_flow(flow):
    def pngs(seed):
        docs = generate(flow, make_documents([SPEECH / "prompt4.wav"]), num_images=2, seed=seed)
        return [from_blob(i.png) for i in docs[0].images]

    first = pngs(123)
    assert pngs(123) == first
    assert pngs(124)[0] == first[1]  # image k is seed + k, reproducible alone
    assert pngs(999) != first


def test_silence_gives_no_images_and_a_flag(flow):
    silence = encode(np.zeros(32_000, np.float32), 16_000, "wav")
    doc = generate(flow, DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(silence))]))[0]
    assert doc.no_speech and doc.text == "" and len(doc.images) == 0
    assert doc.no_images_reason == "no speech found in the audio"


def test_http_with_jina_client_and_with_plain_json(flow, jfk_bytes, jfk_text):
    docs = Client(host="localhost", port=flow + 1, protocol="http").post(
        "/generate", inputs=DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(jfk_bytes))]),
        parameters={"diffusion__seed": 5}, return_type=DocList[SpeechImageDoc])
    assert wer(jfk_text, docs[0].text) == 0 and docs[0].images[0].seed == 5
    # what curl sends: bytes as a JSON array of numbers; PNG bytes come back the same way
    answer = requests.post(f"http://localhost:{flow + 1}/generate", timeout=120, json={
        "data": [{"audio": list(jfk_bytes)}], "parameters": {"diffusion__num_images": 2, "diffusion__seed": 5}})
    assert answer.status_code == 200
    doc = answer.json()["data"][0]
    assert wer(jfk_text, doc["text"]) == 0
    assert [i["seed"] for i in doc["images"]] == [5, 6]
    assert bytes(doc["images"][0]["png"]) == from_blob(docs[0].images[0].png)


def test_bad_audio_fails_alone_and_the_flow_keeps_serving(flow, jfk_bytes):
    from speech2image.errors import ClientError

    with pytest.raises(ClientError, match="AudioError: not audio"):
        generate(flow, DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(b"junk" * 64))]))
    with pytest.raises(ClientError, match="invalid width=4096: allowed 16..512"):
        generate(flow, make_documents([], "a cat"), width=4096)
    assert generate(flow, make_documents([SPEECH / "jfk.flac"]))[0].text.startswith("And so")


@pytest.mark.slow  # a load test: bench/load.py and test_reliability cover concurrency in the default run
def test_eight_concurrent_clients_get_their_own_answers(flow, clips):
    waveforms = {n: decode_audio((SPEECH / n).read_bytes()) for n in PROMPTS}
    cases = [(n, (SPEECH / n).read_bytes(), clips[n]) for n in ["jfk.flac", *PROMPTS]]
    for a, b in [(0, 2), (1, 3), (3, 0)]:  # three more clips: two prompts spoken one after the other
        joined = np.concatenate([waveforms[PROMPTS[a]], np.zeros(8000, np.float32), waveforms[PROMPTS[b]]])
        cases.append((f"{PROMPTS[a]}+{PROMPTS[b]}", encode(joined, 16_000, "flac"),
                      f"{clips[PROMPTS[a]]} {clips[PROMPTS[b]]}"))

    async def one(index):
        docs = DocList[SpeechImageDoc]([SpeechImageDoc(audio=to_blob(cases[index][1]))])
        return (await post_async(docs, f"localhost:{flow}", request_parameters({"seed": 1000 * index})))[0]

    async def all_at_once():  # one event loop: Jina's gRPC client is not thread-safe
        return await asyncio.gather(*(one(index) for index in range(8)))

    answers = asyncio.run(all_at_once())
    for index, (name, _, text) in enumerate(cases):
        doc = answers[index]
        own = wer(text, doc.text)
        assert own <= 0.7, (name, doc.text)  # tiny.en on robotic speech; exactness is checked above
        assert all(wer(other, doc.text) > own for k, (_, _, other) in enumerate(cases) if k != index and other != text)
        assert doc.images[0].seed == 1000 * index and doc.images[0].prompt == doc.text
