"""Image edits (POST /v1/images/edits), called by the official OpenAI SDK and curl against the
shared `python app.py --offline` (float32 Whisper): image to image, inpainting with OpenAI's mask,
and every bad input refused in one line with the service still serving. The checks of an image's
header, without a Flow, come first (the fast lane)."""

import base64
import io
import json
import struct
import subprocess
import zlib

import httpx
import pytest
from PIL import Image

from speech2image.errors import InvalidRequest, TooLarge
from speech2image.imaging.diffusion import fitted
from speech2image.imaging.pictures import edit_source, open_picture
from speech2image.limits import MAX_EDIT_IMAGE_BYTES, MAX_EDIT_IMAGE_PIXELS

WIDTH, HEIGHT = 96, 64  # a small picture, not square: the answer keeps its size


def encoded(picture: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, kind)
    return buffer.getvalue()


def red_car() -> bytes:
    picture = Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30))
    picture.paste((20, 20, 20), (10, 40, 86, 56))
    return encoded(picture)


def left_half_mask(size=(WIDTH, HEIGHT)) -> bytes:
    """OpenAI's mask: opaque where the image stays, transparent (alpha 0) where it is repainted."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return encoded(mask)


def declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, and one tiny compressed row: a decompression
    bomb's shape, a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# --- without a Flow --------------------------------------------------------------------------

def test_a_declared_gigapixel_image_is_refused_before_it_is_decoded():
    for width, height in ((100_000, 100_000), (5000, 4000)):  # over Pillow's own bound, and over ours alone
        with pytest.raises(InvalidRequest, match=f"image declares more than {MAX_EDIT_IMAGE_PIXELS} pixels"):
            open_picture(declaring(width, height))


@pytest.mark.parametrize("data,message", [
    (b"hello, not an image", "image is not a PNG, JPEG or WebP file Pillow can read: send one"),
    (encoded(Image.new("RGB", (8, 8)), "GIF"), "image is not a PNG, JPEG or WebP file Pillow can read: send one"),
    (red_car()[:200], r"image could not be decoded \(\w+\): send a whole PNG, JPEG or WebP file"),
])
def test_what_is_not_a_whole_png_jpeg_or_webp_is_one_line(data, message):
    with pytest.raises(InvalidRequest, match=message):
        open_picture(data)


def test_over_the_byte_bound_is_too_large():
    with pytest.raises(TooLarge, match=f"> {MAX_EDIT_IMAGE_BYTES} accepted"):
        open_picture(b"\0" * (MAX_EDIT_IMAGE_BYTES + 1))


def test_openais_mask_becomes_diffusers_white_where_repainted():
    source = edit_source(red_car(), left_half_mask())
    assert source.mask.mode == "L" and source.mask.getpixel((0, 0)) == 255 and source.mask.getpixel((WIDTH - 1, 0)) == 0
    with pytest.raises(InvalidRequest, match=f"mask is 32x32, the image {WIDTH}x{HEIGHT}"):
        edit_source(red_car(), left_half_mask((32, 32)))
    with pytest.raises(InvalidRequest, match="mask has no transparency"):
        edit_source(red_car(), encoded(Image.new("RGB", (WIDTH, HEIGHT))))
    with pytest.raises(InvalidRequest, match="a mask without an image"):
        edit_source(None, left_half_mask())
    with pytest.raises(InvalidRequest, match="mask has no transparent pixel, so nothing to repaint"):
        edit_source(red_car(), encoded(Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 255))))
    # no mask: an image's own transparent area is repainted, as OpenAI does
    see_through = Image.new("RGBA", (WIDTH, HEIGHT), (200, 30, 30, 255))
    see_through.paste((0, 0, 0, 0), (0, 0, 10, 10))
    source = edit_source(encoded(see_through))
    assert source.image.mode == "RGB" and source.mask.getbbox() == (0, 0, 10, 10)


def test_an_edit_is_drawn_at_its_images_size_scaled_down_to_fit():
    assert fitted((WIDTH, HEIGHT), 8, 512) == (WIDTH, HEIGHT)
    assert fitted((4032, 3024), 128, 1024) == (1024, 768)
    assert fitted((1001, 50), 128, 512) == (512, 128)  # never under the model's least size
    assert fitted((4032, 3024), 128, 1024, width=512) == (512, 384)  # one side asked: the other keeps the ratio
    assert fitted((4032, 3024), 128, 1024, height=512) == (680, 512)
    assert fitted((100, 1000), 128, 1024, width=512) == (512, 1024)  # within the model's range


# --- the front door ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_url(float32_app):
    return f"http://127.0.0.1:{float32_app.port + 1}"


@pytest.fixture(scope="module")
def sdk(base_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def edit(sdk, **fields):
    return sdk.images.edit(model="tiny", prompt="a red car in the snow", **fields)


@pytest.mark.flow
def test_the_sdk_edits_an_image_and_the_same_seed_gives_the_same_bytes(sdk):
    options = {"seed": 7, "steps": 2, "strength": 0.5}
    first = edit(sdk, image=("car.png", red_car(), "image/png"), extra_body=options)
    again = edit(sdk, image=("car.png", red_car(), "image/png"), extra_body=options)
    [image] = first.data
    png = base64.b64decode(image.b64_json)
    assert png == base64.b64decode(again.data[0].b64_json)
    assert Image.open(io.BytesIO(png)).size == (WIDTH, HEIGHT)
    settings = image.model_extra
    assert (settings["seed"], settings["steps"], settings["strength"], settings["width"]) == (7, 2, 0.5, WIDTH)
    assert image.revised_prompt == "a red car in the snow"


@pytest.mark.flow
def test_the_sdk_inpaints_with_a_mask_and_gets_a_url(sdk, base_url):
    answer = edit(sdk, image=("car.png", red_car(), "image/png"), mask=("mask.png", left_half_mask(), "image/png"),
                  response_format="url", extra_body={"seed": 3, "steps": 1})
    [image] = answer.data
    assert image.model_extra["strength"] == 1.0  # a mask's area is drawn anew
    png = httpx.get(f"{base_url}{image.url}" if image.url.startswith("/") else image.url, timeout=30).content
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (WIDTH, HEIGHT)
    # outside the mask the picture is kept: its right half stays red
    assert picture.getpixel((WIDTH - 4, 4))[0] > 150


@pytest.mark.flow
def test_steps_that_would_run_none_are_raised_and_say_so(sdk):
    [image] = edit(sdk, image=("car.png", red_car(), "image/png"), extra_body={"steps": 1, "strength": 0.4}).data
    assert image.model_extra["steps"] == 3
    assert image.model_extra["warnings"] == ["steps raised from 1 to 3: an edit runs steps x strength of them "
                                             "(3 x 0.4), and at least one"]


def curl_edit(base_url: str, *parts: str) -> tuple[int, dict]:
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"{base_url}/v1/images/edits",
                           "-F", "prompt=a red car at night", *[arg for part in parts for arg in ("-F", part)]],
                          capture_output=True, timeout=120)
    body, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.flow
def test_bad_input_is_one_line_and_the_service_keeps_serving(base_url, tmp_path):
    files = {"car.png": red_car(), "bomb.png": declaring(50_000, 50_000), "text.png": b"not an image",
             "small-mask.png": left_half_mask((32, 32)), "big.png": b"\0" * (MAX_EDIT_IMAGE_BYTES + 2),
             "anim.gif": encoded(Image.new("RGB", (8, 8)), "GIF")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    cases = [
        (["image=@" + str(tmp_path / "text.png")], 400, "image is not a PNG, JPEG or WebP file Pillow can read"),
        (["image=@" + str(tmp_path / "anim.gif")], 400, "image is not a PNG, JPEG or WebP file Pillow can read"),
        (["image=@" + str(tmp_path / "bomb.png")], 400, f"image declares more than {MAX_EDIT_IMAGE_PIXELS} pixels"),
        (["image=@" + str(tmp_path / "car.png"), "mask=@" + str(tmp_path / "small-mask.png")], 400,
         f"mask is 32x32, the image {WIDTH}x{HEIGHT}"),
        (["image=@" + str(tmp_path / "car.png"), "strength=2"], 400, "strength"),
        ([], 400, "missing image"),
        (["image=@" + str(tmp_path / "big.png")], 413, f"image too large: {MAX_EDIT_IMAGE_BYTES + 2} bytes"),
    ]
    for parts, status, message in cases:
        got, body = curl_edit(base_url, *parts)
        error = body["error"]["message"]
        assert (got, "\n" not in error) == (status, True) and message in error, (parts, got, error)
    got, body = curl_edit(base_url, "image=@" + str(tmp_path / "car.png"), "steps=2")
    assert got == 200 and len(body["data"]) == 1


@pytest.mark.flow
def test_of_images_sent_as_a_list_the_first_is_edited(sdk):
    options = {"seed": 11, "steps": 2}
    other = encoded(Image.new("RGB", (WIDTH, HEIGHT), (10, 200, 10)))
    listed = edit(sdk, image=[("car.png", red_car(), "image/png"), ("other.png", other, "image/png")],
                  extra_body=options)
    alone = edit(sdk, image=("car.png", red_car(), "image/png"), extra_body=options)
    assert listed.data[0].b64_json == alone.data[0].b64_json


# --- refining by voice -------------------------------------------------------------------------

def test_spoken_words_are_added_to_the_images_prompt_and_a_speaker_can_start_over():
    from speech2image.imaging.provenance import refined

    previous = {"prompt": "a red car", "seed": 5}
    assert refined(previous, " In the snow. ") == ("a red car, In the snow", True)
    assert refined(None, "A red car at night.") == ("A red car at night", True)  # no settings: the words alone
    assert refined(previous, "New picture: a blue boat.") == ("a blue boat.", False)
    assert refined(previous, "start over, a green field") == ("a green field", False)


def test_a_refined_prompt_over_the_limit_says_how_to_start_over():
    from PIL.PngImagePlugin import PngInfo

    from speech2image.imaging.options import GenerateOptions
    from speech2image.imaging.provenance import spoken_edit

    info = PngInfo()
    info.add_text("speech2image", json.dumps({"prompt": "a red car" + ", in the snow" * 90, "seed": 5}))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    with pytest.raises(InvalidRequest, match='over max_prompt_chars=1000: say "new picture"'):
        spoken_edit("at night", edit_source(buffer.getvalue()), GenerateOptions(), 1000)


def test_only_a_prompt_and_a_seed_are_read_from_a_clients_image():
    from PIL.PngImagePlugin import PngInfo

    from speech2image.imaging.provenance import settings_of

    def carrying(text: str):
        info = PngInfo()
        info.add_text("speech2image", text)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
        return open_picture(buffer.getvalue())

    assert settings_of(carrying('{"prompt": "a red car", "seed": 5, "model": "x"}')) == {"prompt": "a red car",
                                                                                          "seed": 5}
    assert settings_of(carrying('{"prompt": "a red car", "seed": -1}')) == {"prompt": "a red car", "seed": None}
    for text in ('{"prompt": 3}', "[1, 2]", "not json", '{"seed": 5}', "[" * 100_000):
        assert settings_of(carrying(text)) is None
    assert settings_of(open_picture(red_car())) is None


@pytest.mark.flow
def test_every_png_carries_its_settings_and_speech_refines_the_last_image(sdk, base_url, tmp_path, clips):
    from tests.support.speech import SPEECH

    drawn = sdk.images.generate(model="tiny", prompt="a red car", size="64x64", extra_body={"seed": 5, "steps": 2})
    png = base64.b64decode(drawn.data[0].b64_json)
    settings = json.loads(Image.open(io.BytesIO(png)).text["speech2image"])
    assert (settings["prompt"], settings["seed"], settings["steps"], settings["strength"]) == ("a red car", 5, 2, None)
    (tmp_path / "car.png").write_bytes(png)
    done = subprocess.run(["curl", "-s", f"{base_url}/v1/speech-to-image", "-F", f"file=@{SPEECH / 'prompt4.wav'}",
                           "-F", f"image=@{tmp_path / 'car.png'}", "-F", "steps=2", "-F", "strength=0.5"],
                          capture_output=True, timeout=120)
    answer = json.loads(done.stdout)
    [image] = answer["data"]
    heard = answer["text"].strip().rstrip(".!? ")
    assert image["revised_prompt"] == f"a red car, {heard}" and image["seed"] == 5 and image["strength"] == 0.5
    refined = json.loads(Image.open(io.BytesIO(base64.b64decode(image["b64_json"]))).text["speech2image"])
    assert (refined["prompt"], refined["transcript"], refined["language"]) == (f"a red car, {heard}", answer["text"],
                                                                               "en")


@pytest.mark.flow
def test_client_py_refines_an_image_by_voice_over_grpc(float32_app, tmp_path):
    from tests.support.app import run_client
    from tests.support.speech import SPEECH

    first = run_client("--text", "a red car", "--host", f"localhost:{float32_app.port}", "--seed", 9, "--steps", 2,
                       "--width", 64, "--height", 64, "--out", tmp_path / "first", "--json")
    assert first.returncode == 0, first.stderr
    [png] = json.loads(first.stdout)["images"]
    again = run_client(SPEECH / "prompt4.wav", "--image", png, "--host", f"localhost:{float32_app.port}",
                       "--steps", 2, "--out", tmp_path / "again", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    [refined] = result["images"]
    settings = json.loads(Image.open(refined).text["speech2image"])
    assert settings["prompt"].startswith("a red car, ") and settings["seed"] == 9 and settings["strength"] == 0.6


@pytest.mark.flow
def test_the_sdk_streams_an_edits_previews_then_the_image(sdk):
    stream = edit(sdk, image=("car.png", red_car(), "image/png"), stream=True, partial_images=1,
                  extra_body={"seed": 2, "steps": 4, "strength": 1.0})
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    final = Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json)))
    assert final.size == (WIDTH, HEIGHT) and json.loads(final.text["speech2image"])["strength"] == 1.0


@pytest.mark.flow
def test_jinas_json_route_carries_an_edit(float32_app, tmp_path):
    from speech2image.client import make_documents, post, request_parameters

    (tmp_path / "car.png").write_bytes(red_car())
    docs = make_documents([], "a red car in the snow", image=tmp_path / "car.png")
    [doc] = post(docs, f"http://127.0.0.1:{float32_app.port + 1}", request_parameters({"steps": 2, "seed": 4}))
    [image] = doc.images
    assert (image.width, image.height, image.strength, image.steps) == (WIDTH, HEIGHT, 0.6, 2)
