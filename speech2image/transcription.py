"""Speech → text with Whisper, through faster-whisper (default) or openai-whisper.

Both backends take the same :class:`TranscribeOptions` and return the same
:class:`Transcript`. :func:`load_engine` loads a model once; :func:`transcribe` runs it
on a 16 kHz float32 waveform. No server is needed to call either.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .audio import SAMPLE_RATE
from .errors import InvalidRequest, ModelLoadError, one_line
from .metrics import Observe
from .options import check_choice, check_range
from .whisper_models import (
    EMBEDDED,
    EMBEDDED_MODELS,
    alignment_heads_file,
    embedded_ctranslate2_path,
    embedded_openai_checkpoint,
    resolve_model,
)

log = logging.getLogger(__name__)

BACKENDS = ("faster-whisper", "openai-whisper")
TASKS = ("auto", "transcribe", "translate")


def _language_codes() -> tuple[str, ...]:
    # Whisper's language codes, as faster-whisper lists them (the same set as openai-whisper's)
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options; defaults here, overridden by config.yml and request parameters.

    language: a Whisper language code hint (e.g. "en", "fr"), or None to detect it.
    task: "transcribe", "translate" (into English), or "auto": translate when the
        language is not English, so the image step always gets English text.
    min_language_probability: a detected language below this probability is unsure:
        the transcript carries a warning, and `task: auto` translates (English comes
        out whatever was spoken; Whisper's translation of English is English).
    """

    language: Optional[str] = None
    task: str = "auto"
    min_language_probability: float = 0.5
    beam_size: int = 5
    vad_filter: bool = False
    initial_prompt: Optional[str] = None
    word_timestamps: bool = False
    skip_silence: bool = True

    def __post_init__(self):
        if self.language is not None and self.language not in _language_codes():
            raise InvalidRequest(
                f"invalid language={self.language!r}: use a Whisper language code such as en, fr, de, es, zh, "
                "or leave it unset to detect the language"
            )
        check_choice("task", self.task, TASKS)
        check_range("min_language_probability", self.min_language_probability, 0.0, 1.0)
        check_range("beam_size", self.beam_size, 1, 16)
        if self.initial_prompt is not None and len(self.initial_prompt) > 1000:
            raise InvalidRequest(
                f"invalid initial_prompt: {len(self.initial_prompt)} characters, allowed up to 1000"
            )


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What one waveform said, and how it was transcribed."""

    text: str
    language: str
    language_probability: float
    task: str
    duration: float
    segments: tuple[Segment, ...]
    no_speech: bool
    backend: str
    model: str
    device: str
    compute_type: str
    seconds: float
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    warnings: tuple[str, ...] = ()


class FasterWhisperEngine:
    """A faster-whisper (CTranslate2) model, loaded once."""

    backend = "faster-whisper"

    def __init__(self, model: str, device: str, compute_type: str, cache_dir: Optional[str], cpu_threads: int):
        import ctranslate2
        from faster_whisper import WhisperModel, available_models

        self.model_name = resolve_model(model, available_models())
        self.device = device if device != "auto" else ("cuda" if ctranslate2.get_cuda_device_count() else "cpu")
        self.compute_type = compute_type if compute_type != "auto" else ("float16" if self.device == "cuda" else "int8")
        source = str(embedded_ctranslate2_path(model)) if model in EMBEDDED_MODELS else model
        try:
            self.model = WhisperModel(
                source, device=self.device, compute_type=self.compute_type,
                download_root=cache_dir, cpu_threads=cpu_threads,
            )
        except Exception as e:  # huggingface_hub, ctranslate2 and OS errors alike
            raise ModelLoadError(_load_failure(model, e)) from e
        self.multilingual = self.model.model.is_multilingual

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        language, probability, _ = self.model.detect_language(audio)
        return language, float(probability)

    def run(self, audio: np.ndarray, options: TranscribeOptions, language: str, task: str) -> list[Segment]:
        segments, _ = self.model.transcribe(
            audio, language=language, task=task, beam_size=options.beam_size,
            vad_filter=options.vad_filter, initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
        )
        return [
            Segment(
                float(s.start), float(s.end), s.text.strip(),
                tuple(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for w in s.words or ()),
            )
            for s in segments
        ]


class OpenAIWhisperEngine:
    """An openai-whisper (PyTorch) model, loaded once: the reference implementation."""

    backend = "openai-whisper"

    def __init__(self, model: str, device: str, compute_type: str, cache_dir: Optional[str], cpu_threads: int):
        import torch
        import whisper

        self.model_name = resolve_model(model, whisper.available_models())
        self.device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.compute_type = compute_type if compute_type != "auto" else ("float16" if self.device == "cuda" else "float32")
        check_choice("compute_type", self.compute_type, ("float16", "float32"))
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        try:
            if model in EMBEDDED_MODELS:
                checkpoint = embedded_openai_checkpoint(model)
                self.model = whisper.load_model(str(checkpoint), device=self.device)
                self.model.set_alignment_heads(alignment_heads_file(checkpoint).read_bytes())
            else:
                self.model = whisper.load_model(model, device=self.device, download_root=cache_dir)
        except ModelLoadError:
            raise
        except Exception as e:  # download, unpickling and OS errors alike
            raise ModelLoadError(_load_failure(model, e)) from e
        self.multilingual = self.model.is_multilingual

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        import torch
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), self.model.dims.n_mels).to(self.device)
        dtype = torch.float16 if self.compute_type == "float16" else torch.float32
        _, probabilities = self.model.detect_language(mel.to(dtype))
        language = max(probabilities, key=probabilities.get)
        return language, float(probabilities[language])

    def run(self, audio: np.ndarray, options: TranscribeOptions, language: str, task: str) -> list[Segment]:
        import whisper

        clips = "0"
        if options.vad_filter:  # the same Silero VAD faster-whisper uses, as openai-whisper clips
            speech = speech_timestamps(audio)
            if not speech:
                return []
            clips = [t / SAMPLE_RATE for s in speech for t in (s["start"], s["end"])]
        result = whisper.transcribe(
            self.model, audio, language=language, task=task, beam_size=options.beam_size,
            best_of=options.beam_size, initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps, fp16=self.compute_type == "float16",
            clip_timestamps=clips, verbose=None,
        )
        return [
            Segment(
                float(s["start"]), float(s["end"]), s["text"].strip(),
                tuple(Word(w["word"].strip(), float(w["start"]), float(w["end"]), float(w["probability"])) for w in s.get("words", ())),
            )
            for s in result["segments"]
        ]


def speech_timestamps(audio: np.ndarray) -> list[dict]:
    """Speech stretches (in samples) found by the Silero VAD that faster-whisper ships."""
    from faster_whisper.vad import get_speech_timestamps

    return get_speech_timestamps(audio)


def _load_failure(model: str, error: Exception) -> str:
    return (
        f"whisper model {model!r} could not be loaded ({one_line(error)}); it is neither cached nor downloadable here: "
        f"connect to the internet once, pass a local path, or use model='{EMBEDDED}' (no network needed)"
    )


def fetch_model(backend: str, model: str, cache_dir: Optional[str] = None) -> None:
    """Download a named model if it is not cached (its backend's own download code)."""
    if model in EMBEDDED_MODELS or os.path.exists(model):
        return
    check_choice("backend", backend, BACKENDS)
    try:
        if backend == "faster-whisper":
            from faster_whisper import available_models
            from faster_whisper.utils import download_model

            download_model(resolve_model(model, available_models()), cache_dir=cache_dir)
        else:
            import whisper

            root = cache_dir or os.path.join(os.path.expanduser("~/.cache"), "whisper")
            whisper._download(whisper._MODELS[resolve_model(model, whisper.available_models())], root, False)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(_load_failure(model, e)) from e


def load_engine(backend: str = "faster-whisper", model: str = EMBEDDED, device: str = "auto",
                compute_type: str = "auto", cache_dir: Optional[str] = None, cpu_threads: int = 0):
    """Load a Whisper model with the chosen backend (once per executor)."""
    check_choice("backend", backend, BACKENDS)
    engine_class = FasterWhisperEngine if backend == "faster-whisper" else OpenAIWhisperEngine
    started = time.perf_counter()
    engine = engine_class(model, device, compute_type, cache_dir, cpu_threads)
    shown = f"{model} ({EMBEDDED_MODELS[model]})" if model in EMBEDDED_MODELS else model
    engine.model_label = shown
    log.info("whisper %s model %s loaded on %s/%s in %.1f s", backend, shown, engine.device,
             engine.compute_type, time.perf_counter() - started)
    return engine


def _timed(observe: Optional[Observe], stage: str, work: Callable):
    started = time.time_ns()
    result = work()
    if observe:
        observe(stage, started, time.time_ns())
    return result


def transcribe(engine, audio: np.ndarray, options: TranscribeOptions = TranscribeOptions(),
               observe: Optional[Observe] = None) -> Transcript:
    """Transcribe a 16 kHz mono float32 waveform; `observe` is told when each stage ran
    (`vad`, `detect_language`, `transcribe`)."""
    if options.task == "translate" and not engine.multilingual:
        raise InvalidRequest(
            f"invalid task='translate': model {engine.model_label!r} is English-only; use a multilingual model"
        )
    if options.language not in (None, "en") and not engine.multilingual:
        raise InvalidRequest(
            f"invalid language={options.language!r}: model {engine.model_label!r} is English-only; "
            "use language='en' or a multilingual model"
        )
    started = time.perf_counter()
    if options.skip_silence and not _timed(observe, "vad", lambda: speech_timestamps(audio)):
        return _transcript(engine, audio, options, options.language or "en", 0.0, "transcribe", (), started)
    if options.language:
        language, probability = options.language, 1.0
    elif engine.multilingual:
        language, probability = _timed(observe, "detect_language", lambda: engine.detect_language(audio))
    else:
        language, probability = "en", 1.0
    task, warnings = _choose_task(options, language, probability)
    segments = _timed(observe, "transcribe", lambda: tuple(engine.run(audio, options, language, task)))
    return _transcript(engine, audio, options, language, probability, task, segments, started, warnings)


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


def _transcript(engine, audio, options, language, probability, task, segments, started, warnings=()) -> Transcript:
    text = " ".join(s.text for s in segments if s.text).strip()
    return Transcript(
        text=text, language=language, language_probability=probability, task=task,
        duration=audio.size / SAMPLE_RATE, segments=segments, no_speech=not text,
        backend=engine.backend, model=engine.model_label, device=engine.device,
        compute_type=engine.compute_type, seconds=time.perf_counter() - started, options=options,
        warnings=warnings,
    )
