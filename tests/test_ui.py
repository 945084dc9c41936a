"""The web page in a real browser: Debian's Chromium driven by Playwright, a fake microphone
that plays a speech clip, app.py and ui.py as processes. A run that must outlast a click lasts a
set time at the pace measured on the same app.py (tests/support/pace.py)."""

import io
import json
import shutil
import time

import pytest

from speech2image.asr.audio import decode_audio
from speech2image.observability import names
from tests.support.app import Page
from tests.support.audio_files import encode
from tests.support.metrics import total, wait_until
from tests.support.pace import measure
from tests.support.ports import free_port
from tests.support.speech import SPEECH, wer
from tests.support.tls import private_ca

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")
SMALL = {"width": "32", "height": "32", "steps": "1"}
SLOW_IMAGE_SECONDS = 10  # an image still being drawn when the test clicks or submits again


@pytest.fixture(scope="module")
def server(float32_app):
    return float32_app


@pytest.fixture(scope="module")
def flow(server):
    return server.port


@pytest.fixture(scope="module")
def pace(server):
    return measure(f"localhost:{server.port}")


@pytest.fixture(scope="module")
def ui(flow):
    with Page(f"localhost:{flow}") as page:
        yield page.url


@pytest.fixture(scope="module")
def lonely_ui():
    """ui.py talking to a port where no Flow listens, taking uploads of at most 1000 bytes."""
    with Page(f"localhost:{free_port()}", "--max-upload-bytes", "1000") as page:
        yield page.url


@pytest.fixture(scope="module")
def microphone(tmp_path_factory):
    """jfk.flac as the WAV file Chromium's fake capture device plays (48 kHz, 16-bit)."""
    path = tmp_path_factory.mktemp("mic") / "jfk.wav"
    path.write_bytes(encode(decode_audio((SPEECH / "jfk.flac").read_bytes()), 48_000, "wav"))
    return path


@pytest.fixture(scope="module")
def browser(microphone):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, ui):
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside = []  # requests to anything but this machine
    page.on("request", lambda r: page.outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")) else None)
    opened(page, ui)
    yield page
    context.close()


def opened(page, url: str) -> None:
    """Open the page, until gradio has drawn its form (Chromium reports some of the module
    preloads of a page with two galleries as never finished: no network idle to wait for)."""
    page.goto(url, wait_until="load")
    page.locator("#generate").wait_for(timeout=60_000)


def set_options(page, **values):
    if not page.locator("#seed").is_visible():  # open the Options accordion
        page.get_by_text("Options").click()
    for name, value in values.items():
        page.locator(f"#{name} input, #{name} textarea").first.fill(str(value))


def is_upload(response) -> bool:
    return "/upload" in response.url and response.request.method == "POST"


def upload(page, path) -> None:
    """Upload a file into the audio field, until the field holds gradio's copy of it."""
    page.locator("#audio button[aria-label='Upload file']").click()
    with page.expect_response(is_upload):
        page.locator("#audio input[type=file]").set_input_files(str(path))
    holds_audio(page)


def record(page, seconds: float) -> None:
    """Record `seconds` of the (fake) microphone, until the field holds gradio's copy of it."""
    page.locator("#audio button.record-button").click()
    time.sleep(seconds)  # the recording's length, not a wait for something to happen
    with page.expect_response(is_upload):
        page.locator("#audio button.stop-button").click()
    holds_audio(page)


def holds_audio(page) -> None:
    """Wait until the audio field shows its player: it took the server's answer as its value."""
    page.locator("#audio audio, #audio button[aria-label='Clear']").first.wait_for(state="attached", timeout=30_000)


def generate(page) -> None:
    """Click Generate, with the status line emptied first: a line read after this is the new run's."""
    page.locator("#status textarea").evaluate("e => { e.value = '' }")
    page.locator("#generate").click()


def status(page) -> str:
    return page.locator("#status textarea").input_value()


def wait_for_status(page, *prefixes, timeout=120) -> str:
    """The status line, once it starts with one of `prefixes` (the browser watches it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("prefixes => prefixes.some(p => document.querySelector('#status textarea')"
                               ".value.startsWith(p))", arg=list(prefixes), timeout=timeout * 1000)
    except PlaywrightTimeout:
        raise AssertionError(f"status never started with {prefixes}: {status(page)!r}") from None
    return status(page)


def shows_images(page, count: int, timeout: float = 60) -> bool:
    """Whether the gallery comes to show `count` loaded images (the browser fetches each after the
    answer that lists it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("n => [...document.querySelectorAll('#images img')].filter(e => e.complete && "
                               "e.naturalWidth > 0).length === n", arg=count, timeout=timeout * 1000)
    except PlaywrightTimeout:
        return False
    return len(rendered_images(page)) == count


def rendered_images(page) -> list[dict]:
    """The gallery's <img> elements that really loaded, with their captions."""
    images = page.locator("#images img")
    found = [images.nth(k).evaluate("e => ({loaded: e.complete, width: e.naturalWidth, height: e.naturalHeight})")
             for k in range(images.count())]
    return [image for image in found if image["loaded"] and image["width"] > 0]


@pytest.mark.flow
def test_speak_into_the_microphone_and_watch_the_images_arrive(page, clips, screenshots):
    set_options(page, seed=7, **SMALL)
    record(page, 12)  # jfk.flac is 11 s
    generate(page)
    wait_for_status(page, "Drawing", "Drew", "Done")  # the transcript is shown before the images
    transcript = page.locator("#transcript textarea").input_value()
    assert transcript.endswith("[en, transcribe]")
    # tiny.en at float32 through Chromium's fake microphone: measured WER 0 on jfk
    assert wer(clips["jfk.flac"], transcript.rsplit("[", 1)[0]) <= 0.15
    wait_for_status(page, "Done: 2 image(s)")
    assert shows_images(page, 2)
    assert page.locator("#images").inner_text().count("seed ") == 2
    assert "seed 7" in page.locator("#images").inner_text() and "seed 8" in page.locator("#images").inner_text()
    assert page.outside == []  # no CDN, no analytics, no fonts from outside
    page.screenshot(path=str(screenshots / "ui.png"), full_page=True)


@pytest.mark.flow
def test_upload_a_file(page):
    set_options(page, num_images=1, **SMALL)
    upload(page, SPEECH / "prompt4.wav")
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"
    assert "table" in page.locator("#transcript textarea").input_value().lower()
    assert shows_images(page, 1)


@pytest.mark.flow
def test_type_a_prompt(page):
    set_options(page, seed=3, num_images=3, **SMALL)
    page.locator("#prompt textarea").fill("a lighthouse at dusk")
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 3 image(s)"
    assert page.locator("#transcript textarea").input_value() == "a lighthouse at dusk"
    assert shows_images(page, 3)


@pytest.mark.flow
def test_a_file_that_is_not_audio_says_so_and_the_page_keeps_working(page, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("these are not the samples you are looking for\n" * 40)
    set_options(page, num_images=1, **SMALL)
    upload(page, notes)
    generate(page)
    line = wait_for_status(page, "Error", "Done")
    assert line.startswith("Error: the server refused the request: AudioError: not audio: "), line
    assert "Traceback" not in page.content()
    page.locator("#audio button[aria-label='Clear']").first.click()  # and the next one works
    upload(page, SPEECH / "prompt4.wav")
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"


@pytest.mark.flow
def test_a_bad_option_is_one_readable_line(page):
    set_options(page, seed="seven", **SMALL)
    page.locator("#prompt textarea").fill("a red apple")
    generate(page)
    assert wait_for_status(page, "Error").startswith("Error: invalid seed='seven'")


@pytest.mark.flow
def test_stop_after_the_first_image_draws_at_most_one_more(page, server, pace):
    def drawn():
        return total(server.metrics_urls, f"{names.IMAGES}_total", "diffusion")

    def busy():
        return total(server.metrics_urls, names.IN_PROGRESS, "diffusion")

    before = drawn()
    # three images (within the default work budget however many steps this machine needs)
    set_options(page, **pace.options(SLOW_IMAGE_SECONDS, images=3))
    page.locator("#prompt textarea").fill("a slow lighthouse")
    generate(page)
    wait_for_status(page, "Drew 1 of 3")
    page.locator("#stop").click()
    assert wait_for_status(page, "Stopped").startswith("Stopped: the images not drawn yet were cancelled")
    wait_until(lambda: busy() == 0, 60, "the replica idle")
    assert drawn() - before <= 2  # the first, and at most the one being drawn when Stop was pressed
    # the page keeps working: the next run ends as itself (a run still going would overwrite the
    # status and the gallery)
    set_options(page, num_images=1, width=32, height=32, steps=1)
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"
    assert shows_images(page, 1)


@pytest.mark.flow
def test_an_image_sharpens_in_its_previews_with_its_step_before_it_is_drawn(page, pace):
    set_options(page, previews=1, **pace.options(SLOW_IMAGE_SECONDS, images=1))  # a preview halfway
    page.locator("#prompt textarea").fill("a lighthouse sharpening")
    generate(page)
    page.wait_for_function("document.querySelector('#images').innerText.includes(', step ')", timeout=120_000)
    assert wait_for_status(page, "Drawing image 1 of 1: step", "Done").startswith("Drawing image 1 of 1: step")
    assert shows_images(page, 1)  # the preview, shown
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"
    caption = page.locator("#images").inner_text()
    assert "seed " in caption and ", step " not in caption  # the drawn image took the preview's place


def drawn_settings(page) -> dict:
    """The settings chunk of the image the gallery shows, fetched as the browser fetched it."""
    from PIL import Image

    source = page.locator("#images img").first.get_attribute("src")
    return json.loads(Image.open(io.BytesIO(page.request.get(source).body())).text["speech2image"])


@pytest.mark.flow
def test_speaking_again_refines_the_last_image_and_new_picture_starts_over(page, clips):
    set_options(page, seed=5, num_images=1, **SMALL)
    page.locator("#prompt textarea").fill("a red car")
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"
    assert "refines image 1" in page.locator("#mode").inner_text()
    set_options(page, seed="", steps="2")  # the image's seed is kept; 2 steps x 0.6: one runs
    record(page, 12)  # jfk.flac is 11 s: the words say what to change
    generate(page)
    assert wait_for_status(page, "Done", "Error") == "Done: 1 image(s)"
    assert shows_images(page, 1)
    settings = drawn_settings(page)
    assert settings["prompt"].startswith("a red car, ") and settings["seed"] == 5 and settings["strength"] == 0.6
    assert wer(clips["jfk.flac"], settings["prompt"].removeprefix("a red car, ")) <= 0.15
    assert page.locator("#strip img").count() == 2 and "refines image 2" in page.locator("#mode").inner_text()
    page.locator("#strip img").first.click()  # back to the first
    page.wait_for_function("document.querySelector('#mode').innerText.includes('refines image 1')")
    page.locator("#new_picture").click()
    page.wait_for_function("document.querySelector('#mode').innerText.includes('draws a new picture')")


@pytest.mark.flow
def test_an_unreachable_flow_is_one_readable_line(browser, lonely_ui):
    page = browser.new_page()
    opened(page, lonely_ui)
    page.locator("#prompt textarea").fill("a red apple")
    generate(page)
    assert wait_for_status(page, "Error").startswith("Error: cannot reach the speech2image server at localhost:")


def test_served_png_holds_its_settings():
    from gradio.processing_utils import encode_pil_to_bytes
    from PIL import Image

    import ui
    from speech2image.imaging.diffusion import encode_png
    from speech2image.imaging.provenance import chunk
    from speech2image.schema import GeneratedImage, to_blob

    image = GeneratedImage(prompt="a red apple", seed=5, steps=2, width=8, height=8, model="tiny", vae="tiny")
    image.png = to_blob(encode_png(Image.new("RGB", (8, 8), "red"), chunk(image, {"transcript": "a red apple"})))
    saved = io.BytesIO()  # as gradio's cache writes it (processing_utils.encode_pil_to_bytes keeps text chunks)
    saved.write(encode_pil_to_bytes(ui.picture(image), "png"))
    settings = json.loads(Image.open(saved).text["speech2image"])
    assert (settings["prompt"], settings["seed"], settings["steps"], settings["transcript"]) == (
        "a red apple", 5, 2, "a red apple")


@pytest.mark.flow
@pytest.mark.slow  # five browser pages at once, each waiting on long images
def test_the_page_serves_a_few_people_at_once_and_tells_the_next_one_it_is_busy(flow, pace):
    """One at a time and one waiting: of three people who press Generate together, the third is told."""
    from gradio_client import Client

    with Page(f"localhost:{flow}", "--concurrency", "1", "--queue-size", "1") as ui:
        page = Client(ui.url, verbose=False)
        slow = pace.options(SLOW_IMAGE_SECONDS)  # the first still runs when the third comes
        inputs = (None, "a lighthouse", "auto", "auto", 1, "", str(slow["steps"]), "", str(slow["width"]),
                  str(slow["height"]), "", 0)  # the page's inputs
        jobs = [page.submit(*inputs, fn_index=0) for _ in range(3)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=300)
                outcomes.append("served")
            except Exception as e:
                outcomes.append(str(e))
        assert outcomes.count("served") == 2, outcomes
        assert any("queue is full" in outcome.lower() for outcome in outcomes), outcomes


@pytest.mark.flow
def test_an_upload_over_the_audio_limit_is_refused(lonely_ui, tmp_path):
    import requests

    big = tmp_path / "long.wav"
    big.write_bytes(b"RIFF" + bytes(5000))
    with big.open("rb") as file:
        answer = requests.post(f"{lonely_ui}/gradio_api/upload", files={"files": file}, timeout=30)
    assert answer.status_code == 413, answer.text


@pytest.mark.flow
def test_log_in_over_tls_and_upload(browser, tmp_path):
    """gradio's login page over TLS (a private CA; the browser told to take it): its Secure
    cookies are kept, the page opens, and an upload passes the page's own checks (its Origin,
    its size, one file). No Flow: none of this needs one."""
    tls = private_ca(tmp_path)
    users = tmp_path / "users.txt"
    users.write_text("alice:correct-horse-battery\n")
    with Page(f"localhost:{free_port()}", "--users", str(users), "--tls-cert", str(tls / "server.pem"),
              "--tls-key", str(tls / "server.key")) as ui:
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(ui.url.replace("http://127.0.0.1", "https://localhost"), wait_until="load")
        page.locator("input[type=text]").fill("alice")
        page.locator("input[type=password]").fill("correct-horse-battery")
        page.get_by_role("button", name="Login").click()
        page.locator("#generate").wait_for(timeout=30_000)
        cookies = context.cookies()
        assert len(cookies) == 2 and all(cookie["secure"] for cookie in cookies), cookies
        upload(page, SPEECH / "prompt4.wav")
        context.close()
