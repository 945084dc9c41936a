"""Post audio files (or a text prompt) to a running speech2image Flow and save the images.

    python client.py AUDIO [AUDIO ...] [--host localhost:54322] [--num-images N] [--seed S]
                     [--out DIR] [--json] [--text "a prompt"] [request options ...]

The client sends each file's bytes (never a path for the server to open), prints each
transcript as soon as it is known and each image's steps as they are drawn (over gRPC: one
stream per input), writes the PNGs and one contact sheet into --out, and prints where they
are; --previews DIR keeps the partial images too. With --json (or an http:// host) it waits
for whole answers and prints one JSON object per input. The calls themselves live in
`speech2image.client`. Importing this module does not import torch or any model library.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import typing
from pathlib import Path

from speech2image.asr.options import TASKS
from speech2image.client import OPTIONS, make_documents, post, request_parameters, save, stream_documents, trust
from speech2image.errors import Speech2ImageError
from speech2image.imaging.options import SCHEDULERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Turn spoken audio into images with a speech2image server.")
    parser.add_argument("audio", nargs="*", type=Path, help="audio files (wav, flac, mp3, ogg/opus, m4a)")
    parser.add_argument("--text", help="a text prompt instead of audio (skips the speech step)")
    parser.add_argument("--image", type=Path, metavar="FILE",
                        help="an image to edit (PNG, JPEG, WebP): spoken words about it refine it, its settings (a "
                             "PNG of this service) giving the prompt and seed")
    parser.add_argument("--mask", type=Path, metavar="FILE",
                        help="with --image: a PNG of its size, transparent where it is repainted")
    parser.add_argument("--host", default="localhost:54322",
                        help="HOST:PORT (gRPC), http://HOST:PORT, or grpcs:// / https:// for TLS")
    parser.add_argument("--api-key", default=os.environ.get("SPEECH2IMAGE_API_KEY"),
                        help="the key the server asks for (default: $SPEECH2IMAGE_API_KEY)")
    parser.add_argument("--ca", metavar="FILE", help="trust this certificate authority for TLS (a private one)")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="where the PNGs go (default ./outputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input (whole answers, no "
                                                            "progress)")
    parser.add_argument("--previews", type=Path, metavar="DIR",
                        help="save each image's partial images here as they come (with --partial-images N)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the answer; the server stops the work by then too (default 600)")
    for executor, title in (("whisper", "speech → text"), ("diffusion", "text → images")):
        add_options(parser.add_argument_group(title), OPTIONS[executor])
    args = parser.parse_args(argv)
    if bool(args.audio) == (args.text is not None):
        parser.error("give audio files or --text, not both and not neither")
    return args


def add_options(group, option_class) -> None:
    """A flag for every field of a request options dataclass; a flag not given leaves the server's default."""
    choices = {"task": TASKS, "scheduler": tuple(SCHEDULERS)}
    for option in dataclasses.fields(option_class):
        flag = "--" + option.name.replace("_", "-")
        kind = typing.get_args(option.type) or (option.type,)
        meaning = option.metadata["help"] + ("" if option.default is None else f" (default {option.default})")
        if bool in kind:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meaning)
        else:
            group.add_argument(flag, type=kind[0], choices=choices.get(option.name), help=meaning)


class Shown:
    """A stream's events on a terminal as they come: the transcript once known, a bar of each
    image's steps, each image when done; partial images saved into `previews`."""

    BAR = 24

    def __init__(self, inputs: list[str], previews: typing.Optional[Path], out):
        self.inputs, self.previews, self.out = inputs, previews, out
        if previews:
            previews.mkdir(parents=True, exist_ok=True)

    def __call__(self, index: int, event) -> None:
        from speech2image.schema import IMAGE_COMPLETED, IMAGE_PARTIAL, STEP, TRANSCRIPT_DONE, from_blob

        name = self.inputs[index]
        if event.event == TRANSCRIPT_DONE:
            print(f"{name}: heard {event.text!r}", file=self.out, flush=True)
        elif event.event == STEP and self.out.isatty():  # a bar redrawn in place: a terminal's
            done = round(self.BAR * event.step / event.total_steps)
            print(f"\r  image {event.image_index + 1} [{'#' * done}{'.' * (self.BAR - done)}] step {event.step}/"
                  f"{event.total_steps}", end="", file=self.out, flush=True)
        elif event.event == IMAGE_PARTIAL and self.previews:
            image = event.images[0]
            path = self.previews / f"{index:02d}-{Path(name).stem}-seed{image.seed}-step{event.step:03d}.png"
            path.write_bytes(from_blob(image.png))
        elif event.event == IMAGE_COMPLETED:
            print(f"\r  image {event.image_index + 1} drawn (seed {event.images[0].seed}, {event.total_steps} steps)"
                  f"{' ' * self.BAR}", file=self.out, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "CRITICAL")  # failures are reported in one line below
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's own log lines (a failed TLS handshake) too
    try:
        parameters = request_parameters(vars(args))
        docs = make_documents(args.audio, args.text, args.image, args.mask)
        if args.ca:
            trust(args.ca)
        inputs = [str(p) for p in args.audio] if args.text is None else ["text"]
        started = time.perf_counter()
        if args.json or args.host.startswith(("http://", "https://")):
            answered = post(docs, args.host, parameters, timeout=args.timeout, api_key=args.api_key)
        else:
            shown = Shown(inputs, args.previews, sys.stderr)
            answered = asyncio.run(stream_documents(docs, args.host, parameters, timeout=args.timeout,
                                                    api_key=args.api_key, told=shown))
        results = save(answered, inputs, args.out, time.perf_counter() - started)
    except Speech2ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for result in results:
        if args.json:
            print(json.dumps(vars(result)))
            continue
        spoken = f"{result.text!r}" + (f" [{result.language}, {result.task}]" if result.language else "")
        print(f"{result.input}: {spoken}")
        for warning in result.warnings:
            print(f"  warning: {warning}")
        if result.images:
            print(f"  {len(result.images)} image(s): {', '.join(result.images)}")
        else:
            print(f"  no images: {result.no_images_reason}")
    if not args.json and any(r.images for r in results):
        print(f"contact sheet: {args.out / 'contact_sheet.png'}")
    return 0


def cli() -> None:
    """The `speech2image-client` command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
