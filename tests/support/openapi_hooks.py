"""Schemathesis hooks for tests/test_openapi.py (SCHEMATHESIS_HOOKS): what a schema cannot say
about a valid request, for the requests schemathesis means to be valid (positive ones).

- An audio field's schema says `audio/*` bytes; whether they decode, it cannot: audio files are
  drawn here (short WAVs of silence: the VAD finds no speech, so Whisper is quick).
- A size within the served model's range (tiny: 16 to 512), the steps its PNDM scheduler needs (4
  or more, unless the model's config skips its Runge-Kutta start) and a request's whole work
  (documents × images × steps × pixels, max_megapixel_steps) depend on the model and on several
  fields at once. Positive JSON requests are made to ask for little (at most 2 images of 2 steps,
  4 with pndm, 32x32), which also keeps the run short; a positive multipart request (whose
  silence draws nothing) that the model would refuse is left out, since schemathesis takes a
  multipart body changed by a hook for a negative one.
- /generate's `edit_image` and `edit_mask` are drawn as the forms' images are (a mask only with
  an image: alone it is refused).
- /generate's `uri` must be one the operator allowed (none here), and the client's own `timeout`
  is its deadline: positive requests send a prompt instead and leave a minute.
- An image field's schema says PNG, JPEG or WebP bytes; that they decode, it cannot: images are
  drawn here (32x32, half transparent, so that one is also a mask of any other's size), and a
  positive edit asks for little (at most 2 images of 2 steps, 64x64), since it draws. Schemathesis
  sends the items of `image[]` as text fields, not files (which the route refuses): positive
  cases send `image` (the SDK's `image[]` is tested in tests/test_edits.py).
- `stream: true` answers server-sent events, which schemathesis cannot read with the urllib3 that
  Jina pins (its streamed response has no `read1`): positive requests ask for whole answers, and
  so for no `partial_images` or `progress`, which only a stream takes (tests/test_streaming.py
  reads the streams, with the OpenAI SDKs and curl).
Negative requests go as drawn.
"""

import io
import wave

import schemathesis
from hypothesis import strategies as st

SMALL = {"n": 2, "num_images": 2, "steps": 2}  # the most a positive request asks for
SIZES = ("width", "height")
TINY_SIZES = range(16, 513, 8)
PNDM_STEPS = 4
STREAM_ONLY = ("stream", "partial_images", "progress")  # what asks for, or only goes with, a stream


def silence(rate: int, seconds: float) -> bytes:
    """A mono 16-bit WAV file of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(rate * seconds)))
    return buffer.getvalue()


schemathesis.openapi.media_type("audio/wav", st.builds(silence, st.sampled_from([8000, 16000, 44100]),
                                                       st.floats(0.1, 1.0)))
SILENCE = list(silence(16000, 0.2))
EDIT_SIZE = 32  # every image drawn here: any one is a mask of any other's size


def picture(kind: str, shade: int) -> bytes:
    """A EDIT_SIZE² image, its left half transparent where the format has transparency."""
    from PIL import Image

    drawn = Image.new("RGBA", (EDIT_SIZE, EDIT_SIZE), (shade, 40, 40, 255))
    drawn.paste((0, 0, 0, 0), (0, 0, EDIT_SIZE // 2, EDIT_SIZE))
    buffer = io.BytesIO()
    (drawn.convert("RGB") if kind == "JPEG" else drawn).save(buffer, kind)
    return buffer.getvalue()


for _kind in ("PNG", "JPEG", "WEBP"):
    schemathesis.openapi.media_type(f"image/{_kind.lower()}", st.builds(picture, st.just(_kind), st.integers(0, 255)))
EDIT_MOST = {"n": 2, "steps": 2}  # a positive edit draws: it asks for little
EDIT_SIZES = range(16, 65, 8)


def _positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive and isinstance(case.body, dict)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _small(fields: dict) -> dict:
    small = dict(fields)
    for prefix in ("", "diffusion__"):
        for name, most in SMALL.items():
            if _number(small.get(prefix + name)):
                small[prefix + name] = min(small[prefix + name], most)
        for side in SIZES:
            if _number(small.get(prefix + side)):
                small[prefix + side] = 32
        if small.get(prefix + "scheduler") == "pndm" and _number(small.get(prefix + "steps")):
            small[prefix + "steps"] = PNDM_STEPS
    if small.get("size") not in (None, "auto"):
        small["size"] = "32x32"
    return small


def _document(doc: dict) -> dict:
    doc = dict(doc)
    if doc.get("audio") is not None:
        doc["audio"] = SILENCE
    if doc.get("edit_image") is not None:  # bytes that decode, as for the forms' images
        doc["edit_image"] = list(picture("PNG", 0))
    doc["edit_mask"] = list(picture("PNG", 1)) if doc.get("edit_mask") is not None and doc.get("edit_image") else None
    if doc.get("uri") is not None:
        doc["uri"] = None
        if all(doc.get(name) is None for name in ("audio", "waveform", "prompt")):
            doc["prompt"] = "a red apple"
    return doc


@schemathesis.hook
def filter_case(context, case) -> bool:
    if not _positive(case) or case.media_type != "multipart/form-data":
        return True
    if any(case.body.get(name) not in (None, False, "false", 0, "0") for name in STREAM_ONLY):
        return False
    if case.body.get("strength") is not None and case.body.get("image") is None:
        return False  # only an edit takes a strength (/v1/speech-to-image without an image refuses it)
    size, steps = case.body.get("size"), case.body.get("steps")
    sides = size.split("x") if size not in (None, "auto") else ()
    if case.operation.path == "/v1/images/edits":
        little = all(case.body.get(name) is None or int(case.body[name]) <= most for name, most in EDIT_MOST.items())
        one_file = case.body.get("image") is not None and not case.body.get("image[]")
        return little and one_file and all(int(side) in EDIT_SIZES for side in sides) and case.body.get(
            "scheduler") != "pndm"
    return all(int(side) in TINY_SIZES for side in sides) and not (
        case.body.get("scheduler") == "pndm" and steps is not None and int(steps) < PNDM_STEPS)


@schemathesis.hook
def map_case(context, case):
    if not _positive(case) or case.media_type != "application/json":
        return case
    body = _small(case.body)
    for name in STREAM_ONLY:
        body.pop(name, None)
    if case.operation.path == "/generate":
        body["data"] = [_document(doc) for doc in body.get("data", [])[:2]]
        if isinstance(body.get("parameters"), dict):
            parameters = _small(body["parameters"])
            if _number(parameters.get("timeout")):
                parameters["timeout"] = max(parameters["timeout"], 60)
            body["parameters"] = parameters
    if body != case.body:
        case.body = body
    return case
