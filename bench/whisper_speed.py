"""Benchmark: both Whisper backends on jfk.flac with the embedded models (tiny.en, base).

    python bench/whisper_speed.py [--repeat 5] [--audio PATH] [--models embedded embedded-base]
    python bench/whisper_speed.py --multilingual    # base on the German, Spanish, French clips
    python bench/whisper_speed.py --long            # 2 minutes of speech: one window after another vs batched

Warm runs (one discarded first), median seconds, real-time factor and the speed ratio,
all in one run on one machine. --multilingual prints, per clip and backend, the
detected language and its probability, the task `auto` chose, the word error rate of
a transcription with the right language hint, and the English text. --long joins the English
clips of tests/data (1 s of silence after each) into 2 minutes of speech and times faster-whisper
(int8, 2 threads) transcribing it one 30-second window after another against the server's path
(`transcribe`: batched above BATCHED_FROM_SECONDS), with the word error rate of each.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from speech2image.asr.audio import decode_audio  # noqa: E402
from speech2image.asr.embedded import EMBEDDED_MODELS  # noqa: E402
from speech2image.asr.options import BACKENDS, TranscribeOptions, WhisperConfig  # noqa: E402
from speech2image.asr.transcription import BATCH_SIZE, BATCHED_FROM_SECONDS, load_engine, transcribe  # noqa: E402
from speech2image.hardware import describe_cpu  # noqa: E402
from tests.support.speech import SPEECH, wer  # noqa: E402

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


ENGLISH_CLIPS = ("jfk.flac", "prompt1.wav", "prompt2.wav", "prompt3.wav", "prompt4.wav")


def long_speech(seconds: float = 120.0) -> tuple[np.ndarray, str]:
    """The English clips one after another, 1 s of silence after each, until `seconds`; and its text."""
    spoken = {clip["file"]: clip["text"] for clip in json.loads((SPEECH / "manifest.json").read_text())["clips"]}
    pieces, texts, silence = [], [], np.zeros(16_000, dtype=np.float32)
    while sum(piece.size for piece in pieces) < seconds * 16_000:
        clip = ENGLISH_CLIPS[len(texts) % len(ENGLISH_CLIPS)]
        pieces += [decode_audio((SPEECH / clip).read_bytes()), silence]
        texts.append(spoken[clip])
    return np.concatenate(pieces), " ".join(texts)


def ways_to_transcribe(engine, audio: np.ndarray) -> dict:
    """faster-whisper's own sequential transcription, and the server's (batched above 30 s)."""
    def sequential() -> str:
        return " ".join(segment.text for segment in engine.model.transcribe(audio, language="en", beam_size=5)[0])

    return {"one window after another": sequential,
            "batched (the server's path)": lambda: transcribe(engine, audio, TranscribeOptions(language="en")).text}


def long_audio(args) -> None:
    audio, text = long_speech()
    duration = audio.size / 16_000
    print(f"audio: {duration:.1f} s of the English clips of tests/data; faster-whisper int8, 2 threads, beam_size 5; "
          f"batched above {BATCHED_FROM_SECONDS:g} s, {BATCH_SIZE} chunks at a time; {args.repeat} warm runs, median")
    for model in args.models:
        engine = load_engine(WhisperConfig(model=model, device="cpu", compute_type="int8", cpu_threads=2))
        medians = {}
        for way, run in ways_to_transcribe(engine, audio).items():
            run()  # warm-up
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                said = run()
                times.append(time.perf_counter() - started)
            medians[way] = statistics.median(times)
            print(f"{engine.label:22s} {way:28s} {medians[way]:6.2f} s  RTF {medians[way] / duration:.3f}  "
                  f"WER {wer(text, said):.3f}  (load {os.getloadavg()[0]:.2f})", flush=True)
        sequential, batched = medians.values()
        print(f"{engine.label:22s} batched: {sequential / batched:.2f}x faster")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", choices=tuple(EMBEDDED_MODELS), default=list(EMBEDDED_MODELS))
    parser.add_argument("--multilingual", action="store_true", help="detection and translation of the test clips")
    parser.add_argument("--long", action="store_true", help="2 minutes of speech: sequential vs batched")
    args = parser.parse_args()
    print(f"CPU: {describe_cpu()}", flush=True)
    multilingual(args) if args.multilingual else long_audio(args) if args.long else speed(args)


if __name__ == "__main__":
    main()
