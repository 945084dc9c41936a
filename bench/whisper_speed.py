"""Benchmark: both Whisper backends on jfk.flac with the embedded models (tiny.en, base).

    python bench/whisper_speed.py [--repeat 5] [--audio PATH] [--models embedded embedded-base]
    python bench/whisper_speed.py --multilingual    # base on the German, Spanish, French clips

Warm runs (one discarded first), median seconds, real-time factor and the speed ratio,
all in one run on one machine. --multilingual prints, per clip and backend, the
detected language and its probability, the task `auto` chose, the word error rate of
a transcription with the right language hint, and the English text.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from speech2image.asr.audio import decode_audio  # noqa: E402
from speech2image.asr.embedded import EMBEDDED_MODELS  # noqa: E402
from speech2image.asr.options import BACKENDS, TranscribeOptions, WhisperConfig  # noqa: E402
from speech2image.asr.transcription import load_engine, transcribe  # noqa: E402
from tests.support.speech import SPEECH, wer  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402

DEFAULT_AUDIO = SPEECH / "jfk.flac"


def speed(args) -> None:
    audio = decode_audio(args.audio.read_bytes())
    duration = audio.size / 16_000
    configs = [("faster-whisper", "auto"), ("faster-whisper", "float32"), ("openai-whisper", "auto")]
    print(f"audio: {args.audio.name}, {duration:.1f} s; beam_size 5; {args.repeat} warm runs each, median")
    for model in args.models:
        medians = {}
        for backend, compute_type in configs:
            engine = load_engine(WhisperConfig(backend=backend, model=model, device=args.device,
                                               compute_type=compute_type))
            transcribe(engine, audio)  # warm-up
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                transcript = transcribe(engine, audio, TranscribeOptions())
                times.append(time.perf_counter() - started)
            label = f"{engine.label} {backend} {engine.device}/{engine.compute_type}"
            medians[label] = statistics.median(times)
            print(f"{label:52s} {medians[label]:6.2f} s  RTF {medians[label] / duration:.3f}  "
                  f"({duration / medians[label]:.0f}x real time)  {transcript.text[:40]!r}")
        baseline = next(v for k, v in medians.items() if "openai-whisper" in k)
        for label, seconds in medians.items():
            print(f"speed vs openai-whisper: {label:52s} {baseline / seconds:5.1f}x")


def multilingual(args) -> None:
    clips = json.loads((SPEECH / "manifest.json").read_text())["clips"]
    print("embedded-base on the espeak-ng clips of tests/data; beam_size 5")
    for backend in BACKENDS:
        engine = load_engine(WhisperConfig(backend=backend, model="embedded-base", device=args.device))
        for clip in clips:
            audio = decode_audio((SPEECH / clip["file"]).read_bytes())
            auto = transcribe(engine, audio)
            hinted = transcribe(engine, audio, TranscribeOptions(language=clip["language"], task="transcribe"))
            print(f"{backend:15s} {clip['file']:15s} detected {auto.language} {auto.language_probability:.2f} "
                  f"auto→{auto.task:10s} WER with hint {wer(clip['text'], hinted.text, english=False):.2f}  "
                  f"{auto.text!r}" + ("  (unsure: warned)" if auto.warnings else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", choices=tuple(EMBEDDED_MODELS), default=list(EMBEDDED_MODELS))
    parser.add_argument("--multilingual", action="store_true", help="detection and translation of the test clips")
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    multilingual(args) if args.multilingual else speed(args)


if __name__ == "__main__":
    main()
