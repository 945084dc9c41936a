"""Speech → text with Whisper, through faster-whisper (default) or openai-whisper.

:func:`load_engine` loads a model once (a :class:`WhisperConfig`); both backends meet the
:class:`WhisperEngine` protocol. :func:`transcribe` runs one on a 16 kHz float32 waveform
and returns a :class:`Transcript`, which echoes the options used. No server is needed.
"""

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from ..errors import InvalidRequest, ModelLoadError, one_line
from ..observability.names import DETECT_LANGUAGE, TRANSCRIBE, VAD
from ..observability.stages import StageClock
from ..options import check_choice
from ..schema import Segment, Word
from ..serving.scheduler import Turn
from .audio import SAMPLE_RATE
from .embedded import (
    EMBEDDED,
    EMBEDDED_MODELS,
    alignment_heads_file,
    embedded_ctranslate2_path,
    embedded_openai_checkpoint,
    resolve_model,
)
from .options import TranscribeOptions, WhisperConfig

log = logging.getLogger(__name__)

# faster-whisper transcribes audio longer than this in batches of its speech stretches (Silero VAD
# chunks of up to 30 s, decoded BATCH_SIZE at a time, with timestamps): measured 1.3-1.9x faster
# than one window after another on 2 cores at int8, as accurate (docs/benchmarks.md); shorter
# audio is one window either way
BATCHED_FROM_SECONDS = 30.0
BATCH_SIZE = 8


class WhisperEngine(Protocol):
    """A loaded Whisper model, whichever backend runs it."""

    backend: str
    model_name: str  # the model asked for: "small", "embedded"
    label: str  # and what it is: "small", "embedded (tiny.en)"
    device: str
    compute_type: str
    multilingual: bool

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]: ...

    def run(self, audio: np.ndarray, options: TranscribeOptions, *, language: str, task: str,
            turn: Turn, decoded: "Decoded") -> list[Segment]: ...


@dataclass(frozen=True)
class Transcript:
    """What one waveform said and how it was transcribed; field names are the document's."""

    text: str
    language: str
    language_probability: float
    task: str
    duration: float
    segments: tuple[Segment, ...]
    no_speech: bool
    warnings: tuple[str, ...]
    asr_backend: str
    asr_model: str
    asr_device: str
    asr_compute_type: str
    asr_seconds: float
    options: TranscribeOptions


def _label(model: str) -> str:
    return f"{model} ({EMBEDDED_MODELS[model]})" if model in EMBEDDED_MODELS else model


Decoded = Callable[[Segment], None]  # told each segment as soon as it is decoded


class FasterWhisperEngine:
    """A faster-whisper (CTranslate2) model, loaded once."""

    backend = "faster-whisper"

    def __init__(self, config: WhisperConfig):
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline, WhisperModel, available_models

        resolve_model(config.model, available_models())
        self.model_name, self.label = config.model, _label(config.model)
        self.device = config.device if config.device != "auto" else (
            "cuda" if ctranslate2.get_cuda_device_count() else "cpu")
        self.compute_type = config.compute_type if config.compute_type != "auto" else (
            "float16" if self.device == "cuda" else "int8")
        source = str(embedded_ctranslate2_path(config.model)) if config.model in EMBEDDED_MODELS else config.model
        try:
            self.model = WhisperModel(source, device=self.device, compute_type=self.compute_type,
                                      download_root=config.cache_dir, cpu_threads=config.cpu_threads)
        except Exception as e:  # huggingface_hub, ctranslate2 and OS errors alike
            raise ModelLoadError(_load_failure(config.model, e)) from e
        self.multilingual = self.model.model.is_multilingual
        self.batched = BatchedInferencePipeline(self.model)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        language, probability, _ = self.model.detect_language(audio)
        return language, float(probability)

    def run(self, audio: np.ndarray, options: TranscribeOptions, *, language: str, task: str,
            turn: Turn, decoded: Decoded) -> list[Segment]:
        common = dict(language=language, task=task, beam_size=options.beam_size, initial_prompt=options.initial_prompt,
                      word_timestamps=options.word_timestamps, **_temperature(options))
        if audio.size / SAMPLE_RATE > BATCHED_FROM_SECONDS:
            # the VAD always splits batched audio; without timestamps tiny.en stops after a chunk's first sentence
            segments, _ = self.batched.transcribe(audio, vad_filter=True, batch_size=BATCH_SIZE,
                                                  without_timestamps=False, **common)
        else:
            segments, _ = self.model.transcribe(audio, vad_filter=options.vad_filter, **common)
        done = []  # faster-whisper transcribes lazily, a segment at a time: the turn is checked between them
        while True:
            _check(turn, done[-1].end if done else 0.0, audio)
            s = next(segments, None)
            if s is None:
                return done
            done.append(_segment(s.start, s.end, s.text, [(w.word, w.start, w.end, w.probability)
                                                           for w in s.words or ()]))
            decoded(done[-1])


class OpenAIWhisperEngine:
    """An openai-whisper (PyTorch) model, loaded once: the reference implementation."""

    backend = "openai-whisper"

    def __init__(self, config: WhisperConfig):
        import torch
        import whisper

        resolve_model(config.model, whisper.available_models())
        self.model_name, self.label = config.model, _label(config.model)
        self.device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.compute_type = config.compute_type if config.compute_type != "auto" else (
            "float16" if self.device == "cuda" else "float32")
        check_choice("compute_type", self.compute_type, ("float16", "float32"))
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        try:
            if config.model in EMBEDDED_MODELS:
                checkpoint = embedded_openai_checkpoint(config.model)
                self.model = whisper.load_model(str(checkpoint), device=self.device)
                self.model.set_alignment_heads(alignment_heads_file(checkpoint).read_bytes())
            else:
                self.model = whisper.load_model(config.model, device=self.device, download_root=config.cache_dir)
        except ModelLoadError:
            raise
        except Exception as e:  # download, unpickling and OS errors alike
            raise ModelLoadError(_load_failure(config.model, e)) from e
        self.multilingual = self.model.is_multilingual

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        import torch
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), self.model.dims.n_mels).to(self.device)
        dtype = torch.float16 if self.compute_type == "float16" else torch.float32
        _, probabilities = self.model.detect_language(mel.to(dtype))
        language = max(probabilities, key=probabilities.get)
        return language, float(probabilities[language])

    def run(self, audio: np.ndarray, options: TranscribeOptions, *, language: str, task: str,
            turn: Turn, decoded: Decoded) -> list[Segment]:
        import whisper

        clips = "0"
        if options.vad_filter:  # the same Silero VAD faster-whisper uses, as openai-whisper clips
            speech = speech_timestamps(audio)
            if not speech:
                return []
            clips = [t / SAMPLE_RATE for s in speech for t in (s["start"], s["end"])]
        result = whisper.transcribe(
            _Checked(self.model, turn, audio), audio, language=language, task=task, beam_size=options.beam_size,
            best_of=options.beam_size, initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps, fp16=self.compute_type == "float16",
            clip_timestamps=clips, verbose=None, **_temperature(options),
        )
        segments = [_segment(s["start"], s["end"], s["text"],
                             [(w["word"], w["start"], w["end"], w["probability"]) for w in s.get("words", ())])
                    for s in result["segments"]]
        for segment in segments:  # openai-whisper tells nothing before the end but its console output
            decoded(segment)
        return segments


class _Checked:
    """An openai-whisper model whose decoding of each 30-second window first checks the turn
    (openai-whisper's transcribe calls `model.decode` once per window)."""

    def __init__(self, model, turn: Turn, audio: np.ndarray):
        self._model, self._turn, self._audio, self._windows = model, turn, audio, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def decode(self, mel, options):
        _check(self._turn, min(30.0 * self._windows, self._audio.size / SAMPLE_RATE), self._audio)
        self._windows += 1
        return self._model.decode(mel, options)


def _temperature(options: TranscribeOptions) -> dict:
    """Both libraries' own temperature schedule unless a temperature is asked for."""
    return {"temperature": options.temperature} if options.temperature > 0 else {}


def _check(turn: Turn, done_seconds: float, audio: np.ndarray) -> None:
    turn.check(f"{done_seconds:.1f} s of {audio.size / SAMPLE_RATE:.1f} s of audio")


def _segment(start, end, text: str, words: list[tuple]) -> Segment:
    from docarray import DocList

    return Segment(start=float(start), end=float(end), text=text.strip(), words=DocList[Word](
        Word(word=word.strip(), start=float(begun), end=float(ended), probability=float(probability))
        for word, begun, ended, probability in words))


def speech_timestamps(audio: np.ndarray) -> list[dict]:
    """Speech stretches (in samples) found by the Silero VAD that faster-whisper ships."""
    from faster_whisper.vad import get_speech_timestamps

    return get_speech_timestamps(audio)


def _load_failure(model: str, error: Exception) -> str:
    return (
        f"whisper model {model!r} could not be loaded ({one_line(error)}); it is neither cached nor downloadable here: "
        f"connect to the internet once, pass a local path, or use model='{EMBEDDED}' (no network needed)"
    )


def fetch_model(config: WhisperConfig) -> None:
    """Download a named model if it is not cached (its backend's own download code)."""
    model = config.model
    if model in EMBEDDED_MODELS or os.path.exists(model):
        return
    try:
        if config.backend == "faster-whisper":
            from faster_whisper import available_models
            from faster_whisper.utils import download_model

            download_model(resolve_model(model, available_models()), cache_dir=config.cache_dir)
        else:
            import whisper

            root = config.cache_dir or os.path.join(os.path.expanduser("~/.cache"), "whisper")
            whisper._download(whisper._MODELS[resolve_model(model, whisper.available_models())], root, False)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(_load_failure(model, e)) from e


def load_engine(config: WhisperConfig = WhisperConfig()) -> WhisperEngine:
    """Load a Whisper model with the chosen backend (once per executor)."""
    started = time.perf_counter()
    engine = (FasterWhisperEngine if config.backend == "faster-whisper" else OpenAIWhisperEngine)(config)
    log.info("whisper %s model %s loaded on %s/%s in %.1f s", engine.backend, engine.label, engine.device,
             engine.compute_type, time.perf_counter() - started)
    return engine


def transcribe(engine: WhisperEngine, audio: np.ndarray, options: TranscribeOptions = TranscribeOptions(), *,
               clock: StageClock = StageClock(), turn: Optional[Turn] = None,
               decoded: Decoded = lambda segment: None) -> Transcript:
    """Transcribe a 16 kHz mono float32 waveform; between two segments `turn` may stop it
    (DeadlineExceeded, Cancelled); `clock` times the stages (vad, detect_language, transcribe);
    `decoded` is told each segment as soon as it is decoded (a streaming call's deltas)."""
    turn = turn or Turn()  # no deadline, never cancelled
    if options.task == "translate" and not engine.multilingual:
        raise InvalidRequest(
            f"invalid task='translate': model {engine.label!r} is English-only; use a multilingual model"
        )
    if options.language not in (None, "en") and not engine.multilingual:
        raise InvalidRequest(
            f"invalid language={options.language!r}: model {engine.label!r} is English-only; "
            "use language='en' or a multilingual model"
        )
    started = time.perf_counter()
    if options.skip_silence:
        with clock.stage(VAD):
            silent = not speech_timestamps(audio)
        if silent:
            return _transcript(engine, audio, options, language=options.language or "en", probability=0.0,
                               task="transcribe", segments=(), started=started)
    if options.language:
        language, probability = options.language, 1.0
    elif engine.multilingual:
        with clock.stage(DETECT_LANGUAGE):
            language, probability = engine.detect_language(audio)
    else:
        language, probability = "en", 1.0
    task, warnings = _choose_task(options, language, probability)
    with clock.stage(TRANSCRIBE):
        segments = tuple(engine.run(audio, options, language=language, task=task, turn=turn, decoded=decoded))
    return _transcript(engine, audio, options, language=language, probability=probability, task=task,
                       segments=segments, started=started, warnings=warnings)


def _choose_task(options: TranscribeOptions, language: str, probability: float) -> tuple[str, tuple[str, ...]]:
    """The task to run, and a warning when the detected language is unsure."""
    if probability >= options.min_language_probability:
        task = options.task if options.task != "auto" else ("transcribe" if language == "en" else "translate")
        return task, ()
    unsure = (f"language detection unsure: {language} at {probability:.2f}, below "
              f"min_language_probability={options.min_language_probability:g}")
    if options.task != "auto":
        return options.task, (f"{unsure}; pass language=... if it is not {language}",)
    return "translate", (f"{unsure}: translated to English to be safe; pass language=... to name the language",)


def _transcript(engine, audio, options, *, language, probability, task, segments, started, warnings=()) -> Transcript:
    text = " ".join(s.text for s in segments if s.text).strip()
    return Transcript(
        text=text, language=language, language_probability=probability, task=task,
        duration=audio.size / SAMPLE_RATE, segments=segments, no_speech=not text, warnings=warnings,
        asr_backend=engine.backend, asr_model=engine.label, asr_device=engine.device,
        asr_compute_type=engine.compute_type, asr_seconds=time.perf_counter() - started, options=options,
    )


def document_fields(transcript: Transcript) -> dict:
    """The transcript as the document's fields (everything but the options)."""
    from docarray import DocList

    fields = {f.name: getattr(transcript, f.name) for f in dataclasses.fields(transcript) if f.name != "options"}
    return {**fields, "segments": DocList[Segment](transcript.segments), "warnings": list(transcript.warnings)}
