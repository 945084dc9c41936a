"""The StableDiffusionExecutor called directly, then in a one-executor Flow over real gRPC."""

import io

import pytest
from docarray import DocList
from jina import Flow
from PIL import Image

from executors.diffusion.executor import StableDiffusionExecutor
from speech2image.errors import InvalidRequest
from speech2image.limits import RequestLimits
from speech2image.schema import SpeechImageDoc, from_blob, to_blob
from tests.support.executors import call
from tests.support.speech import ROOT


@pytest.fixture(scope="module")
def executor():
    return StableDiffusionExecutor(model="tiny", num_images=2)


def run(executor, *docs, **parameters):
    return call(executor.generate, docs=DocList[SpeechImageDoc](docs), parameters=parameters)


def test_transcript_or_prompt_becomes_images(executor):
    docs = run(executor, SpeechImageDoc(text="a red apple"), SpeechImageDoc(prompt="a blue car"), seed=3)
    for doc, prompt in zip(docs, ("a red apple", "a blue car"), strict=True):
        assert len(doc.images) == 2  # config default
        assert [image.seed for image in doc.images] == [3, 4]
        assert all(image.prompt == prompt and image.random_weights for image in doc.images)
        assert Image.open(io.BytesIO(from_blob(doc.images[0].png))).size == (64, 64)


def test_request_parameters_override_config_defaults(executor):
    doc = run(executor, SpeechImageDoc(prompt="a cat"), num_images=1.0, width=32.0, steps=2, scheduler="ddim")[0]
    assert len(doc.images) == 1
    assert (doc.images[0].width, doc.images[0].steps, doc.images[0].scheduler) == (32, 2, "ddim")


def test_empty_transcript_gets_no_images_and_a_flag(executor):
    no_speech, empty = run(executor, SpeechImageDoc(text="", no_speech=True), SpeechImageDoc(prompt="   "))
    assert len(no_speech.images) == 0 and no_speech.no_images_reason == "no speech found in the audio"
    assert len(empty.images) == 0 and empty.no_images_reason == "empty prompt"


@pytest.mark.parametrize("parameters,fragment", [
    ({"num_images": 9}, "invalid num_images=9: allowed 1..8"),
    ({"seed": -5}, "invalid seed=-5"),
    ({"steps": 500}, "invalid steps=500: allowed 1..150"),
    ({"guidance_scale": -1}, "invalid guidance_scale=-1.0"),
    ({"width": 60}, "invalid width=60: must be a positive multiple of 8"),
    ({"height": 1024}, "invalid height=1024: allowed 16..512"),
    ({"scheduler": "fast"}, "invalid scheduler='fast'"),
])
def test_invalid_parameters_are_rejected_before_any_model_work(executor, parameters, fragment):
    doc = SpeechImageDoc(prompt="a cat")
    with pytest.raises(InvalidRequest, match=fragment):
        run(executor, doc, **parameters)
    assert len(doc.images) == 0
    assert len(run(executor, SpeechImageDoc(prompt="a cat"))[0].images) == 2  # still serving


@pytest.mark.flow
def test_one_executor_flow_over_grpc():
    flow = Flow().add(uses=str(ROOT / "executors" / "diffusion" / "config.yml"), name="diffusion",
                      uses_with={"model": "tiny"})
    inputs = DocList[SpeechImageDoc]([SpeechImageDoc(prompt="a red apple")])
    with flow:
        first = flow.post("/generate", inputs=inputs, return_type=DocList[SpeechImageDoc],
                          parameters={"num_images": 3, "seed": 42, "width": 48})
        again = flow.post("/generate", inputs=inputs, return_type=DocList[SpeechImageDoc],
                          parameters={"num_images": 3, "seed": 42, "width": 48})
        with pytest.raises(Exception, match="invalid num_images=0"):
            flow.post("/generate", inputs=inputs, return_type=DocList[SpeechImageDoc], parameters={"num_images": 0})
        images = first[0].images
        assert len(images) == 3 and [i.seed for i in images] == [42, 43, 44]
        assert Image.open(io.BytesIO(from_blob(images[0].png))).size == (48, 64)
        assert [from_blob(i.png) for i in images] == [from_blob(i.png) for i in again[0].images]


def test_work_budget_is_checked_before_any_image_is_drawn():
    executor = StableDiffusionExecutor(model="tiny", max_megapixel_steps=0.5, max_documents=2)
    docs = DocList[SpeechImageDoc]([SpeechImageDoc(prompt="a cat"), SpeechImageDoc(text="a dog")])
    with pytest.raises(InvalidRequest, match=r"2 document\(s\) x num_images=2 x steps=4 x 256x256 = 1.0 megapixel-steps"
                                             r" > max_megapixel_steps=0.5"):
        call(executor.generate, docs=docs, parameters={"num_images": 2, "width": 256, "height": 256})
    assert all(len(doc.images) == 0 for doc in docs)  # nothing was drawn
    with pytest.raises(InvalidRequest, match="too many documents: 3 > max_documents=2"):
        call(executor.generate, docs=DocList[SpeechImageDoc]([SpeechImageDoc(prompt="a")] * 3), parameters={})
    assert len(run(executor, SpeechImageDoc(prompt="a cat"), num_images=1, width=256, height=256)[0].images) == 1


def test_a_request_past_its_timeout_is_not_drawn_and_the_executor_keeps_serving():
    from speech2image.errors import DeadlineExceeded

    # a 1 ms budget is spent before the first image's 50 steps end, on a GPU too
    executor = StableDiffusionExecutor(model="tiny", request_timeout_seconds=0.001)
    with pytest.raises(DeadlineExceeded, match=r"^deadline passed (before the request reached the replica|at the prompt, "
                                               r"before its encoding|at step \d+ of 50 of image 1 of 8|at image 1 of 8, "
                                               r"before its first step)"):
        run(executor, SpeechImageDoc(prompt="a cat"), num_images=8, steps=50, width=128, height=128)
    executor.limits = RequestLimits()  # the same replica, with time enough: it serves the next request
    assert len(run(executor, SpeechImageDoc(prompt="a cat"), steps=1, width=16, height=16)[0].images) == 1


def test_the_text_drawn_is_bounded_whatever_field_it_came_in(executor):
    """The page sends text straight to this executor (target_executor): a client could too."""
    with pytest.raises(InvalidRequest, match=r"text of document 0 too long: 300000 characters > max_prompt_chars=1000"):
        run(executor, SpeechImageDoc(text="x" * 300_000))


def test_images_a_client_sent_are_refused_not_echoed(executor):
    from speech2image.schema import GeneratedImage

    planted = SpeechImageDoc(prompt="a cat", images=DocList[GeneratedImage]([GeneratedImage(prompt="planted")]))
    with pytest.raises(InvalidRequest, match=r"document 0 sets images, which the server fills"):
        run(executor, planted)


def test_an_image_to_edit_is_decoded_off_the_event_loop(executor, monkeypatch):
    """The replica's event loop keeps serving (other requests' stream events, health checks) while
    an edit's image is decoded: decoding waits here until the loop has run something else."""
    import asyncio
    import threading

    from executors.diffusion import executor as module

    loop_served, decode = threading.Event(), module.edit_source

    def edit_source(*data):
        assert loop_served.wait(10), "the executor decoded the image on its event loop, which was blocked"
        return decode(*data)

    monkeypatch.setattr(module, "edit_source", edit_source)
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(picture, "PNG")

    async def generate_beside_the_loop():
        async def serve_something_else():
            loop_served.set()

        other = asyncio.ensure_future(serve_something_else())
        docs = await executor.generate(docs=DocList[SpeechImageDoc]([SpeechImageDoc(
            prompt="a red car", edit_image=to_blob(picture.getvalue()))]), parameters={"strength": 0.5})
        await other
        return docs

    [doc] = call(lambda **_: generate_beside_the_loop())
    assert len(doc.images) == 2 and doc.images[0].strength == 0.5


def test_one_side_asked_for_an_edit_keeps_its_images_aspect_ratio(executor):
    picture = io.BytesIO()
    Image.new("RGB", (128, 64), "red").save(picture, "PNG")
    [doc] = run(executor, SpeechImageDoc(prompt="a red car", edit_image=to_blob(picture.getvalue())), width=64,
                num_images=1)
    assert Image.open(io.BytesIO(from_blob(doc.images[0].png))).size == (64, 32)
