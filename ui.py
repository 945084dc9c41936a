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
import io
import sys
import json
import os
import re
from pathlib import Path
from typing import Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from speech2image.client import make_documents, post_async, request_parameters  # noqa: E402
from speech2image.asr.options import LANGUAGES, TASKS  # noqa: E402
from speech2image.errors import Speech2ImageError  # noqa: E402
from speech2image.limits import MAX_IMAGES, MAX_SEED, AudioLimits  # noqa: E402

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # never a web font from a CDN
CACHE_CLEANING = (600, 3600)  # gradio's delete_cache: (every, older than) in seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the speech2image web page.")
    parser.add_argument("--host", default="localhost:54322", help="the Flow: HOST:PORT (gRPC), or grpcs://HOST:PORT")
    parser.add_argument("--api-key", default=os.environ.get("SPEECH2IMAGE_API_KEY"),
                        help="the Flow's API key (default $SPEECH2IMAGE_API_KEY); it stays on this server, never "
                             "in the page")
    parser.add_argument("--ca", metavar="FILE", help="trust this certificate authority for the Flow's TLS")
    parser.add_argument("--port", type=int, default=7860, help="the page's port")
    parser.add_argument("--listen", default="127.0.0.1",
                        help="address to serve the page on (default 127.0.0.1; 0.0.0.0: all, which needs --users)")
    parser.add_argument("--users", metavar="FILE",
                        help="who may open the page: user:password per line (or user:sha256:HEX); gradio's login")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="let --listen expose the page without --users, on purpose")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="people served at once (each waits on the Flow, not on this process); default 4")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="people who may wait for their turn; one more is told the page is busy (default 16)")
    parser.add_argument("--max-upload-bytes", type=int, default=AudioLimits().max_audio_bytes,
                        help="largest audio file accepted, default the server's max_audio_bytes")
    return parser.parse_args(argv)


def options_from(language: str, task: str, num_images, seed: str, steps: str, guidance: str, width: str,
                 height: str, negative_prompt: str) -> dict:
    """The page's fields as the client's request options (empty fields: the server's defaults);
    `speech2image.client` checks them, with the executors' own rules."""
    def optional(text):
        return (text or "").strip() or None

    return {
        "language": None if language == "auto" else language, "task": task, "num_images": int(num_images),
        "seed": optional(seed), "steps": optional(steps), "guidance_scale": optional(guidance),
        "width": optional(width), "height": optional(height), "negative_prompt": optional(negative_prompt),
    }


def picture(image):
    """One answer's image, its settings in a PNG text chunk that gradio keeps in the file it serves
    (in its own cache, under the hash of its bytes: one person's images are not named by another's
    seed, and the cache is cleaned)."""
    from PIL import Image

    from speech2image.schema import from_blob

    settings = {k: getattr(image, k) for k in ("prompt", "negative_prompt", "seed", "steps", "guidance_scale",
                                                "width", "height", "scheduler", "model", "dtype", "vae")}
    drawn = Image.open(io.BytesIO(from_blob(image.png)))
    drawn.info["speech2image"] = json.dumps(settings)
    return drawn


async def speak(host: str, audio: Optional[str], prompt: str, options: dict, api_key: Optional[str] = None):
    """Yield (status, transcript, images) as the answer grows: the transcript first, then each image."""
    images: list = []  # (seed, picture), in the order they arrive
    parameters = request_parameters(options)  # checked here: a bad option fails before any upload
    if audio:
        yield "Transcribing…", "", []
        [heard] = await post_async(make_documents([Path(audio)]), host, parameters, target_executor="whisper",
                                   api_key=api_key)
        if heard.no_speech or not heard.text:
            yield "No speech heard: speak closer to the microphone, or type a prompt", "", []
            return
        text = heard.text
        transcript = f"{text}  [{heard.language}, {heard.task}]"
        for warning in heard.warnings:
            transcript += f"\n⚠ {warning}"
    elif prompt and prompt.strip():
        text = transcript = prompt.strip()
    else:
        yield "Record or upload some speech, or type a prompt", "", []
        return
    count = options["num_images"]
    yield f"Drawing {count} image(s)…", transcript, []
    first_seed = None if options["seed"] is None else int(options["seed"])  # checked above
    # one request per image, one at a time: each shows as soon as it is drawn, a page takes one
    # place in a replica's queue (not `count`: others are not refused as busy for it), and Stop
    # cancels the request being drawn (the replica stops it at its next step)
    for k in range(count):  # image k: seed + k, as the executor numbers a request's images
        seed = None if first_seed is None else (first_seed + k) % (MAX_SEED + 1)
        [drawn] = await post_async(make_documents([], text), host,
                                   request_parameters(dict(options, num_images=1, seed=seed)),
                                   target_executor="diffusion", api_key=api_key)
        images += [(image.seed, picture(image)) for image in drawn.images]
        shown = [(image, f"seed {image_seed}") for image_seed, image in images]
        yield (f"Drew {k + 1} of {count}" if k + 1 < count else f"Done: {count} image(s)"), transcript, shown


class LocalOnly:
    """ASGI middleware: drops what gradio's page would fetch from outside hosts (a CDN script,
    font preconnects), so the page works with no internet and tells no one it was opened."""

    OUTSIDE = re.compile(rb"<(?:script|link)\b[^>]*?https?://[^>]*>(?:\s*</script>)?", re.S)

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
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


def build(host: str, api_key: Optional[str] = None):
    """The gradio page; the Flow's `api_key` is used here, on the server, and never sent to browsers."""
    import gradio as gr

    async def generate(audio, prompt, language, task, num_images, seed, steps, guidance, width, height,
                       negative_prompt):
        try:
            options = options_from(language, task, num_images, seed, steps, guidance, width, height, negative_prompt)
            async for status, transcript, images in speak(host, audio, prompt, options, api_key):
                yield status, transcript, images
        except Speech2ImageError as e:  # one readable line, never a traceback
            yield f"Error: {e}", gr.skip(), gr.skip()

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
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                transcript = gr.Textbox(label="Transcript", interactive=False, elem_id="transcript")
                gallery = gr.Gallery(label="Images", columns=2, format="png", elem_id="images")
        event = run.click(generate, [audio, prompt, language, task, num_images, seed, steps, guidance, width,
                                     height, negative_prompt], [status, transcript, gallery])
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
    if args.ca:
        from speech2image.client import trust

        trust(args.ca)
    import gradio as gr

    page = build(args.host, args.api_key)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    from starlette.middleware import Middleware

    page.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size).launch(
        server_name=args.listen, server_port=args.port, share=False, inbrowser=False, theme=theme, footer_links=[],
        ssr_mode=False, max_file_size=args.max_upload_bytes, auth=login.check if login else None,
        app_kwargs={"middleware": [Middleware(LocalOnly)]})
    return 0


def cli() -> None:
    """The `speech2image-ui` command."""
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
