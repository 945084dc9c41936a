"""A web page to speak to a running speech2image Flow: record or upload, watch the images arrive.

    python ui.py [--host localhost:54322] [--port 7860]

The page (gradio) talks to the Flow over gRPC through `speech2image.client`: it sends the
audio to the Whisper executor alone (Jina's `target_executor`), shows the transcript at
once, then asks the diffusion executor for each image in its own request, one after the
other (the page holds one place in a replica's queue; Stop cancels the request being drawn,
server-side too), and shows each image as it arrives. It
fetches nothing from the internet: no analytics, no share tunnel, no web fonts. It does
not import torch.
"""

import argparse
import atexit
import contextlib
import io
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from speech2image.asr.options import LANGUAGES, TASKS
from speech2image.client import make_documents, request_parameters, stream_async
from speech2image.errors import ConfigurationError, Speech2ImageError
from speech2image.limits import MAX_IMAGES, MAX_PARTIAL_IMAGES, AudioLimits

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # never a web font from a CDN
CACHE_CLEANING = (600, 3600)  # gradio's delete_cache: (every, older than) in seconds
FORM_BYTES = 65_536  # an upload's form around its file: boundaries, part headers
SPOOL_IN_MEMORY = 1 << 20  # a request body up to this size is held in memory, a larger one in an unnamed file
STRIP_IMAGES = 24  # the most images of a visit the strip keeps (the oldest go): each is a PNG in the session


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the speech2image web page.")
    parser.add_argument("--host", default="localhost:54322", help="the Flow: HOST:PORT (gRPC), or grpcs://HOST:PORT")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="the Flow's API key; every local user sees a command line (ps): prefer "
                                       "$SPEECH2IMAGE_API_KEY or --api-key-file. It stays on this server, never in "
                                       "the page")
    key.add_argument("--api-key-file", metavar="FILE", help="read the Flow's API key from FILE")
    parser.add_argument("--ca", metavar="FILE", help="trust this certificate authority for the Flow's TLS")
    parser.add_argument("--port", type=int, default=7860, help="the page's port")
    parser.add_argument("--listen", default="127.0.0.1",
                        help="address to serve the page on (default 127.0.0.1; 0.0.0.0: all, which needs --users)")
    parser.add_argument("--allowed-hosts", metavar="NAME[,NAME...]", default="",
                        help="host names the page is served under, besides localhost and IP addresses (and "
                             "--listen's name): a request for another is refused (421), so that no site whose "
                             "name comes to point at this machine (DNS rebinding) can use the page; behind a "
                             "proxy, pass the browser's Host on")
    parser.add_argument("--users", metavar="FILE",
                        help="who may open the page (gradio's login): user:password per line, passwords of 12 "
                             "characters or more; or user:sha256:HEX, the SHA-256 of a password whose length "
                             "cannot be checked here")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve the page over HTTPS with this certificate (PEM); "
                                                           "its session cookies are then Secure")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--session-hours", type=float, default=12,
                        help="a login lasts this long, then the page asks again (default 12)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="let --listen expose the page without --users, on purpose")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="people served at once (each waits on the Flow, not on this process); default 4")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="people who may wait for their turn; one more is told the page is busy (default 16)")
    parser.add_argument("--max-upload-bytes", type=int, default=AudioLimits().max_audio_bytes,
                        help="largest audio file accepted, default the server's max_audio_bytes; an upload holds "
                             "one file, and a request this many bytes and 64 KiB at most")
    return parser.parse_args(argv)


def flow_api_key(args: argparse.Namespace) -> str | None:
    """The Flow's key: --api-key (warned about on stderr: ps shows it), --api-key-file, else
    $SPEECH2IMAGE_API_KEY; ConfigurationError when the file cannot be read or is empty."""
    if args.api_key:
        print("ui.py: --api-key shows the Flow's key to every local user (ps); use $SPEECH2IMAGE_API_KEY or "
              "--api-key-file FILE", file=sys.stderr)
        return args.api_key
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as e:
            raise ConfigurationError(f"cannot read the Flow's key file {args.api_key_file}: {e.strerror}") from e
        if not key:
            raise ConfigurationError(f"the Flow's key file {args.api_key_file} is empty: write the key in it")
        return key
    return os.environ.get("SPEECH2IMAGE_API_KEY") or None


def options_from(language: str, task: str, num_images, seed: str, steps: str, guidance: str, width: str,
                 height: str, negative_prompt: str, previews=2) -> dict:
    """The page's fields as the client's request options (empty fields: the server's defaults);
    `speech2image.client` checks them, with the executors' own rules."""
    def optional(text):
        return (text or "").strip() or None

    return {
        "language": None if language == "auto" else language, "task": task, "num_images": int(num_images),
        "seed": optional(seed), "steps": optional(steps), "guidance_scale": optional(guidance),
        "width": optional(width), "height": optional(height), "negative_prompt": optional(negative_prompt),
        "partial_images": int(previews),
    }


def picture(image):
    """One answer's image as gradio serves it: gradio keeps the PNG's settings chunk
    (`speech2image.imaging.provenance`) in the file, in its own cache, under the hash of its bytes
    (one person's images are not named by another's seed, and the cache is cleaned)."""
    from PIL import Image

    from speech2image.schema import from_blob

    return Image.open(io.BytesIO(from_blob(image.png)))


async def speak(host: str, audio: Optional[str], prompt: str, options: dict, api_key: Optional[str] = None,
                refine: Optional[bytes] = None):
    """Yield (status, transcript, images) as the answer grows, one stream for all of it: the
    transcript as Whisper hears it, then each image sharpening (its partial images, with its
    step), then drawn. None: unchanged since the last yield. Stop closes the stream: the
    replica stops the work at its next step. With `refine` (a PNG), spoken words say what to change
    in it (docs/api.md#refine-by-voice); a typed prompt draws anew. The last yield, once every
    image is drawn, adds their PNGs as a fourth item."""
    from speech2image.schema import (
        IMAGE_COMPLETED,
        IMAGE_PARTIAL,
        STEP,
        TRANSCRIPT_DELTA,
        TRANSCRIPT_DONE,
        from_blob,
        to_blob,
    )

    parameters = request_parameters(options)  # checked here: a bad option fails before any upload
    if audio:
        [doc] = make_documents([Path(audio)])
        if refine is not None:
            doc.edit_image = to_blob(refine)
        transcript = ""
        yield "Transcribing…", "", []
    elif prompt and prompt.strip():
        [doc] = make_documents([], prompt.strip())
        transcript = prompt.strip()
    else:
        yield "Record or upload some speech, or type a prompt", "", []
        return
    count, shown, pngs = options["num_images"], {}, {}  # image index → (picture, caption); → its PNG

    def gallery():
        return [shown[index] for index in sorted(shown)]

    async for event in stream_async(doc, host, parameters, api_key=api_key):
        if event.event == TRANSCRIPT_DELTA:
            transcript = f"{transcript} {event.delta}".strip()
            yield "Transcribing…", transcript, None
        elif event.event == TRANSCRIPT_DONE:
            if event.no_speech or not event.text:
                yield "No speech heard: speak closer to the microphone, or type a prompt", "", []
                return
            transcript = f"{event.text}  [{event.language}, {event.task}]"
            for warning in event.warnings:
                transcript += f"\n⚠ {warning}"
            yield f"Drawing {count} image(s)…", transcript, None
        elif event.event == STEP:
            yield f"Drawing image {event.image_index + 1} of {count}: step {event.step} of {event.total_steps}", \
                transcript, None
        elif event.event in (IMAGE_PARTIAL, IMAGE_COMPLETED):
            image = event.images[0]
            done = event.event == IMAGE_COMPLETED
            caption = f"seed {image.seed}" + ("" if done else f", step {event.step} of {event.total_steps}")
            shown[event.image_index] = (picture(image), caption)
            if done:
                pngs[event.image_index] = from_blob(image.png)
            drawn = sum(1 for _, caption in shown.values() if ", step" not in caption)
            status = (f"Done: {count} image(s)" if drawn == count else f"Drew {drawn} of {count}") if done else \
                f"Drawing image {event.image_index + 1} of {count}: step {event.step} of {event.total_steps}"
            if done and drawn == count:
                yield status, transcript, gallery(), [pngs[index] for index in sorted(pngs)]
            else:
                yield status, transcript, gallery()


async def answer(send, status: int, line: str, headers: tuple = ()) -> None:
    """A one-line plain-text answer, from a middleware, in gradio's place."""
    body = f"{line}\n".encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def header(scope, name: bytes) -> bytes:
    """A request header's value (b"" when there is none)."""
    return next((value for key, value in scope["headers"] if key.lower() == name), b"")


class LocalOnly:
    """ASGI middleware: the page for this machine's browser and the host names the operator
    allows. A request for any other host name is refused (421): a site whose name comes to
    resolve to this machine (DNS rebinding) cannot use the page as its own. A request that changes
    something (not GET, HEAD or OPTIONS), or a WebSocket, sent by another site's page (an Origin
    that is not the page's own) is refused (403). It serves none of gradio's monitoring (its
    summary of every call was open to anyone: 404). And it drops what gradio's page would fetch
    from outside hosts (a CDN script, font preconnects), so the page works with no internet and
    tells no one it was opened."""

    OUTSIDE = re.compile(rb"<(?:script|link)\b[^>]*?https?://[^>]*>(?:\s*</script>)?", re.S)
    NOT_SERVED = "/monitoring"

    def __init__(self, app, hosts: tuple = ()):
        from speech2image.serving.network import HostPolicy

        self.app, self.hosts = app, HostPolicy(hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = header(scope, b"host").decode("latin-1")
        origin = header(scope, b"origin").decode("latin-1")
        if not self.hosts.serves(host):
            refusal = (421, "this page is not served under that host name (ui.py --allowed-hosts NAME)")
        elif self.hosts.foreign(origin, host, scope.get("method", "GET"), scope["type"] == "websocket"):
            refusal = (403, "requests from another site's page are refused")
        elif scope["type"] == "http" and (scope["path"] + "/").startswith(self.NOT_SERVED + "/"):
            refusal = (404, "not found")
        else:
            refusal = None
        if refusal and scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if refusal:
            return await answer(send, *refusal)
        if scope["type"] != "http" or scope["path"] != "/":
            return await self.app(scope, receive, send)
        start, body = {}, []

        async def rewrite(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            html = self.OUTSIDE.sub(b"", b"".join(body))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(html)).encode())]})
            await send({"type": "http.response.body", "body": html})

        await self.app(scope, receive, rewrite)


class FormFiles:
    """Counts the files of a multipart/form-data body as its bytes arrive, with python-multipart's
    parser (gradio's): a part whose Content-Disposition has a filename is a file."""

    def __init__(self, boundary: bytes):
        from python_multipart.multipart import MultipartParser

        self.files = 0
        self._field, self._value, self._disposition = b"", b"", b""
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begins, "on_header_field": self._field_bytes,
            "on_header_value": self._value_bytes, "on_header_end": self._header_ends,
            "on_headers_finished": self._headers_end})

    @classmethod
    def of(cls, content_type: bytes) -> "FormFiles | None":
        """A counter for a body of `content_type`; None when it is not a form with a boundary."""
        from python_multipart.multipart import parse_options_header

        kind, options = parse_options_header(content_type)
        return cls(options[b"boundary"]) if kind == b"multipart/form-data" and options.get(b"boundary") else None

    def count(self, chunk: bytes) -> int:
        """The files begun so far, `chunk` read too; ValueError when the form is malformed."""
        self._parser.write(chunk)
        return self.files

    def _part_begins(self):
        self._disposition = b""

    def _field_bytes(self, data, start, end):
        self._field += data[start:end]

    def _value_bytes(self, data, start, end):
        self._value += data[start:end]

    def _header_ends(self):
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field, self._value = b"", b""

    def _headers_end(self):
        from python_multipart.multipart import parse_options_header

        self.files += b"filename" in parse_options_header(self._disposition)[1]


class BodyLimit:
    """ASGI middleware: a request's body is read here first, counted as it arrives (Content-Length
    may be missing), into a spool of its own (memory, then an unnamed file); gradio reads it only
    once it is whole and within bounds: at most `max_bytes`, and a form of at most `max_files`
    files (gradio takes 1000 files a request, its size limit is per file). Else one line, 413,
    and nothing of it is stored. A body abandoned half-way leaves nothing either (gradio leaves
    the part of a file it had received in the temporary folder)."""

    CHUNK = 65_536

    def __init__(self, app, max_bytes: int, max_files: int, refusal: str):
        self.app, self.max_bytes, self.max_files, self.refusal = app, max_bytes, max_files, refusal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await answer(send, 413, self.refusal)
        form = FormFiles.of(header(scope, b"content-type"))
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away before its body was whole: gradio never saw it
                chunk = message.get("body", b"")
                size += len(chunk)
                try:
                    too_many_files = form is not None and form.count(chunk) > self.max_files
                except ValueError:
                    return await answer(send, 400, "the upload is not a well-formed multipart/form-data form")
                if size > self.max_bytes or too_many_files:
                    return await answer(send, 413, self.refusal)
                spool.write(chunk)
                more = message.get("more_body", False)
            spool.seek(0)
            await self.app(scope, self.replay(spool, size, receive), send)

    def replay(self, spool, size: int, receive):
        """The spooled body as `receive` messages, then the client's own (its disconnect)."""
        left = size

        async def replayed():
            nonlocal left
            if left < 0:
                return await receive()
            chunk = spool.read(self.CHUNK)
            left -= len(chunk)
            more = left > 0
            if not more:
                left = -1
            return {"type": "http.request", "body": chunk, "more_body": more}

        return replayed


class FailedLogins:
    """Failed logins by client address: after `free` failures an address waits before its next
    attempt, `first_delay` seconds, twice as long after each further failure (at most
    `longest_delay`); and one attempt at a time per address, so guesses sent together wait too."""

    def __init__(self, free: int = 5, first_delay: float = 60, longest_delay: float = 3600,
                 clock: Callable[[], float] = time.monotonic, remembered: int = 10_000):
        self.free, self.first_delay, self.longest_delay = free, first_delay, longest_delay
        self.clock, self.remembered = clock, remembered
        self._addresses: OrderedDict[str, tuple] = OrderedDict()  # address → (failures, wait until, checking)

    def begin(self, address: str) -> float:
        """0: the address's attempt may be checked now (end() says how it went); else the seconds
        it must wait first."""
        now = self.clock()
        failures, until, checking = self._addresses.get(address, (0, now, False))
        if checking:
            return 1.0
        if now < until:
            return until - now
        self._addresses[address] = (failures, until, True)
        self._addresses.move_to_end(address)
        if len(self._addresses) > self.remembered:
            self._addresses.popitem(last=False)
        return 0.0

    def end(self, address: str, succeeded: bool) -> None:
        failures, _, _ = self._addresses.pop(address, (0, 0.0, True))
        if succeeded:
            return
        failures += 1
        until = self.clock()
        if failures >= self.free:
            until += min(self.first_delay * 2 ** min(failures - self.free, 32), self.longest_delay)
        self._addresses[address] = (failures, until, False)


class Login:
    """ASGI middleware around gradio's login: failed logins are throttled per client address
    (FailedLogins: a refused attempt is answered 429 and never checked), and over TLS every cookie
    the page sets is Secure (gradio sets its fallback session cookie without)."""

    PATHS = ("/login", "/login/")  # where gradio's login form posts

    def __init__(self, app, secure: bool, failed: FailedLogins | None = None):
        self.app, self.secure, self.failed = app, secure, failed or FailedLogins()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.secure:
            send = self.secure_cookies(send)
        if scope["method"] != "POST" or scope["path"] not in self.PATHS:
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("",))[0]
        wait = math.ceil(self.failed.begin(address))
        if wait:
            return await answer(send, 429, f"too many failed logins from {address}: try again in {wait} s",
                                ((b"retry-after", str(wait).encode()),))
        statuses = []

        async def watched(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.failed.end(address, succeeded=statuses == [200])

    @staticmethod
    def secure_cookies(send):
        async def secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    (name, value + b"; Secure") if name.lower() == b"set-cookie" and b"secure" not in
                    [attribute.strip().lower() for attribute in value.split(b";")[1:]] else (name, value)
                    for name, value in message.get("headers", [])]}
            await send(message)

        return secured


class SessionTokens(MutableMapping):
    """gradio's login sessions (its `app.tokens`: token → user), each forgotten `seconds` after it
    began: a session cookie left in a browser or taken from one stops working (gradio keeps them
    until the page stops)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = seconds, clock
        self._sessions: dict = {}  # token → (user, when it began)
        self._lock = threading.Lock()  # gradio reads them from its worker threads

    def _live(self) -> dict:
        now = self.clock()
        for token in [token for token, (_, began) in self._sessions.items() if now - began >= self.seconds]:
            del self._sessions[token]
        return self._sessions

    def __getitem__(self, token):
        with self._lock:
            return self._live()[token][0]

    def __setitem__(self, token, user):
        with self._lock:
            self._live()[token] = (user, self.clock())

    def __delitem__(self, token):
        with self._lock:
            del self._live()[token]

    def __iter__(self):
        with self._lock:
            return iter(list(self._live()))

    def __len__(self):
        with self._lock:
            return len(self._live())


def expiring_sessions(seconds: float):
    """A lifespan for gradio's app that, as it starts, keeps its login sessions in SessionTokens."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.tokens = SessionTokens(seconds)
        yield

    return lifespan


def keep_files_private() -> None:
    """gradio keeps uploads and drawn images under $GRADIO_TEMP_DIR, by default /tmp/gradio: a
    folder every local user may list and read (0755, its files 0644), or one another user made
    first. Unless the operator names one, the page's go in a folder of its own (mkdtemp: 0700),
    removed when ui.py stops (Ctrl-C or SIGTERM); and what it creates is its user's alone (umask)."""
    os.umask(0o077)
    if not os.environ.get("GRADIO_TEMP_DIR"):
        folder = tempfile.mkdtemp(prefix="speech2image-ui-")
        os.environ["GRADIO_TEMP_DIR"] = folder  # read by gradio as it is imported
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C: gradio closes, atexit runs


def build(host: str, api_key: Optional[str] = None):
    """The gradio page; the Flow's `api_key` is used here, on the server, and never sent to browsers."""
    import gradio as gr
    from PIL import Image

    async def generate(audio, prompt, language, task, num_images, seed, steps, guidance, width, height,
                       negative_prompt, previews, visit, chosen):
        """The answer as it grows; once drawn, its images join this visit's strip, the last one chosen."""
        try:
            refine = visit[chosen] if chosen is not None and audio else None
            options = options_from(language, task, num_images, seed, steps, guidance, width, height, negative_prompt,
                                   previews)
            async for status, transcript, images, *drawn in speak(host, audio, prompt, options, api_key, refine):
                if drawn:
                    visit = [*visit, *drawn[0]][-STRIP_IMAGES:]
                    yield (status, transcript, images, visit, strip_of(visit), len(visit) - 1,
                           refining(len(visit) - 1))
                else:
                    yield status, transcript, gr.skip() if images is None else images, *[gr.skip()] * 4
        except Speech2ImageError as e:  # one readable line, never a traceback
            yield f"Error: {e}", *[gr.skip()] * 6
        except (IndexError, TypeError):  # a strip index the page did not give
            yield "Error: no such image in the strip: pick one there, or press New picture", *[gr.skip()] * 6

    def strip_of(visit: list[bytes]) -> list:
        return [(Image.open(io.BytesIO(png)), f"{index + 1}") for index, png in enumerate(visit)]

    def refining(chosen: Optional[int]) -> str:
        return (f"Speaking again refines image {chosen + 1} of the strip (pick another there, or press New picture)"
                if chosen is not None else "Speaking again draws a new picture")

    def choose(selected: gr.SelectData):
        return selected.index, refining(selected.index)

    # uploads and images live in gradio's cache: every 10 minutes, files older than an hour go
    with gr.Blocks(title="speech2image", analytics_enabled=False, delete_cache=CACHE_CLEANING) as page:
        gr.Markdown("# speech2image\nSpeak a sentence (or type one) and watch the images arrive.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speak or upload",
                                 elem_id="audio")
                prompt = gr.Textbox(label="…or type a prompt (used when there is no audio)", elem_id="prompt")
                with gr.Accordion("Options", open=False):
                    language = gr.Dropdown([("detect", "auto"), *((name, code) for code, name in LANGUAGES.items())],
                                           value="auto", label="Language (detect, or name it)", elem_id="language")
                    task = gr.Radio(list(TASKS), value="auto", label="Task (auto: translate what is not English)",
                                    elem_id="task")
                    num_images = gr.Slider(1, MAX_IMAGES, value=2, step=1, label="Images", elem_id="num_images")
                    seed = gr.Textbox(label="Seed (empty: random)", elem_id="seed")
                    steps = gr.Textbox(label="Steps (empty: the model's preset)", elem_id="steps")
                    guidance = gr.Textbox(label="Guidance (empty: the model's preset)", elem_id="guidance")
                    width = gr.Textbox(label="Width (empty: the model's size)", elem_id="width")
                    height = gr.Textbox(label="Height (empty: the model's size)", elem_id="height")
                    negative_prompt = gr.Textbox(label="Negative prompt", elem_id="negative_prompt")
                    previews = gr.Slider(0, MAX_PARTIAL_IMAGES, value=2, step=1, elem_id="previews",
                                         label="Previews of each image as it sharpens")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                transcript = gr.Textbox(label="Transcript", interactive=False, elem_id="transcript")
                gallery = gr.Gallery(label="Images", columns=2, format="png", elem_id="images")
                mode = gr.Markdown(refining(None), elem_id="mode")
                # JPEG thumbnails: never the same file in gradio's cache as the PNG the gallery above is
                # writing in the same answer (the visit keeps the PNGs, with their settings)
                strip = gr.Gallery(label="This visit's images: pick one to refine", columns=6, rows=1, height=120,
                                   object_fit="contain", format="jpeg", allow_preview=False, elem_id="strip")
                new_picture = gr.Button("New picture", elem_id="new_picture")
        visit = gr.State([])  # this visit's PNGs (with their settings), for as long as the page is open
        chosen = gr.State(None)  # the index in `visit` of the image speaking refines; None: a new picture
        event = run.click(generate, [audio, prompt, language, task, num_images, seed, steps, guidance, width,
                                     height, negative_prompt, previews, visit, chosen],
                          [status, transcript, gallery, visit, strip, chosen, mode])
        strip.select(choose, None, [chosen, mode])
        new_picture.click(lambda: (None, refining(None)), None, [chosen, mode])
        stop.click(lambda: "Stopped: the images not drawn yet were cancelled", None, status, cancels=[event])
    return page


def main(argv=None) -> int:
    args = parse_args(argv)
    from speech2image.api.keys import Users
    from speech2image.errors import ConfigurationError
    from speech2image.serving.network import check_exposure

    try:
        check_exposure(args.listen, "--users FILE (user:password lines)", bool(args.users), args.allow_unauthenticated,
                       "the page")
        login = Users.load(args.users) if args.users else None
    except ConfigurationError as e:
        print(f"ui.py: {e}", file=sys.stderr)
        return 2
    if not args.session_hours > 0:
        print("ui.py: --session-hours needs a number of hours over 0 (a login lasts that long)", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("ui.py: --tls-cert and --tls-key go together: the certificate (PEM) and its private key",
              file=sys.stderr)
        return 2
    if args.tls_cert:
        import ssl

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            print(f"ui.py: cannot serve TLS with --tls-cert {args.tls_cert} --tls-key {args.tls_key}: {e}",
                  file=sys.stderr)
            return 2
    try:
        api_key = flow_api_key(args)
    except ConfigurationError as e:
        print(f"ui.py: {e}", file=sys.stderr)
        return 2
    if args.ca:
        from speech2image.client import trust

        trust(args.ca)
    keep_files_private()
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: any local process could
    # name any client address, and so pass the login throttling. Behind a proxy on this machine the
    # operator sets FORWARDED_ALLOW_IPS to it.
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    import gradio as gr

    page = build(args.host, api_key)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    from starlette.middleware import Middleware

    middleware = [
        Middleware(LocalOnly, hosts=(*args.allowed_hosts.split(","), args.listen)),
        Middleware(Login, secure=bool(args.tls_cert)),
        Middleware(BodyLimit, max_bytes=args.max_upload_bytes + FORM_BYTES, max_files=1,
                   refusal=f"an upload holds one file of at most {args.max_upload_bytes} bytes "
                           "(ui.py --max-upload-bytes)")]
    try:  # serves until Ctrl-C or SIGTERM
        page.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size).launch(
            server_name=args.listen, server_port=args.port, share=False, inbrowser=False, theme=theme,
            footer_links=[], ssr_mode=False, max_file_size=args.max_upload_bytes,
            auth=login.check if login else None, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
            ssl_verify=False,  # its start-up check calls its own loopback URL, a name the certificate need not hold
            app_kwargs={"middleware": middleware, "lifespan": expiring_sessions(args.session_hours * 3600)})
    except KeyboardInterrupt:  # stopped while gradio was still starting (once started, gradio's wait takes it)
        page.close()
    return 0


def cli() -> None:
    """The `speech2image-ui` command."""
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
