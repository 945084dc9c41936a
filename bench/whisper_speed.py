"""Benchmark: both Whisper backends on jfk.flac with the embedded tiny.en model.

    python bench/whisper_speed.py [--repeat 5] [--audio PATH]

Warm runs (one discarded first), median seconds, real-time factor and the speed ratio,
all in one run on one machine.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speech2image.audio import decode_audio  # noqa: E402
from speech2image.transcription import TranscribeOptions, load_engine, transcribe  # noqa: E402

DEFAULT_AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "speech" / "jfk.flac"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    audio = decode_audio(args.audio.read_bytes())
    duration = audio.size / 16_000
    configs = [("faster-whisper", "auto"), ("faster-whisper", "float32"), ("openai-whisper", "auto")]
    medians = {}
    print(f"audio: {args.audio.name}, {duration:.1f} s; beam_size 5; {args.repeat} warm runs each, median")
    for backend, compute_type in configs:
        engine = load_engine(backend, "embedded", device=args.device, compute_type=compute_type)
        transcribe(engine, audio)  # warm-up
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            transcript = transcribe(engine, audio, TranscribeOptions())
            times.append(time.perf_counter() - started)
        label = f"{backend} {engine.device}/{engine.compute_type}"
        medians[label] = statistics.median(times)
        print(f"{label:36s} {medians[label]:6.2f} s  RTF {medians[label] / duration:.3f}  "
              f"({duration / medians[label]:.0f}x real time)  {transcript.text[:40]!r}")
    baseline = next(v for k, v in medians.items() if k.startswith("openai-whisper"))
    for label, seconds in medians.items():
        print(f"speed vs openai-whisper: {label:36s} {baseline / seconds:5.1f}x")


if __name__ == "__main__":
    main()
