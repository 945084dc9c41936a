"""WhisperExecutor: speech → text for every document of a request."""

import time
from typing import Optional

from docarray import DocList
from jina import Executor, requests

from speech2image.audio import AudioSources, load_audio
from speech2image.errors import InvalidRequest
from speech2image.limits import AudioLimits, RequestLimits
from speech2image.metrics import ExecutorMetrics
from speech2image.options import merge, split_kwargs
from speech2image.serving import announce_when_serving
from speech2image.schema import Segment, SpeechImageDoc, Word
from speech2image.transcription import TranscribeOptions, Transcript, load_engine, transcribe


class WhisperExecutor(Executor):
    """Transcribes each document's audio with Whisper and writes the transcript on it.

    Arguments (config.yml `with:`): `backend` ("faster-whisper" or "openai-whisper"),
    `model` (a Whisper name, a local path, "embedded" or "embedded-base"), `device` and
    `compute_type` ("auto" picks CUDA+float16 when there is a GPU), `cache_dir`,
    `cpu_threads`; the limits of :mod:`speech2image.limits` (`max_audio_bytes`,
    `max_audio_seconds`, `max_sample_rate`, `max_channels`, `max_documents`,
    `max_prompt_chars`); the `uri` allow-lists (`allowed_audio_dirs`,
    `allowed_audio_urls`); and the defaults of every request option of
    :class:`TranscribeOptions`, which request parameters override.
    """

    def __init__(self, backend: str = "faster-whisper", model: str = "embedded", device: str = "auto",
                 compute_type: str = "auto", cache_dir: Optional[str] = None, cpu_threads: int = 0, **kwargs):
        self.audio_limits, self.request_limits, self.sources, self.defaults, rest = split_kwargs(
            kwargs, AudioLimits, RequestLimits, AudioSources, TranscribeOptions)
        super().__init__(**rest)
        self.engine = load_engine(backend, model, device, compute_type, cache_dir, cpu_threads)
        self.metrics = ExecutorMetrics.of(self, "whisper")
        announce_when_serving(f"whisper executor ({self.engine.model_label})")

    @requests(on="/generate")
    def transcribe(self, docs: DocList[SpeechImageDoc], parameters: dict, tracing_context=None,
                   **kwargs) -> DocList[SpeechImageDoc]:
        with self.metrics.request("transcribe", tracing_context, model=self.engine.model_label,
                                  documents=len(docs)):
            options = merge(self.defaults, parameters or {})
            self.request_limits.check_documents(docs)
            for doc in docs:  # all documents are checked before any model work
                if not doc.has_audio() and not doc.prompt:
                    raise InvalidRequest("empty document: it has neither audio nor a text prompt; "
                                         "send audio bytes or prompt")
            started = time.time_ns()
            waveforms = [load_audio(doc, self.sources, self.audio_limits) for doc in docs]
            self.metrics.observe("decode", started, time.time_ns())
            with self.metrics.working():
                for doc, waveform in zip(docs, waveforms):
                    if waveform is not None:  # text-only documents pass through untouched
                        transcript = transcribe(self.engine, waveform, options, self.metrics.observe)
                        write_transcript(doc, transcript)
                        doc.audio = doc.waveform = None  # the answer does not carry the input back
                        self.metrics.audio_transcribed(transcript.duration)
                        self.metrics.set_attributes(audio_seconds=transcript.duration, language=transcript.language,
                                                    task=transcript.task)
        return docs


def write_transcript(doc: SpeechImageDoc, transcript: Transcript) -> None:
    """Copy a transcript onto its document."""
    doc.text = transcript.text
    doc.language = transcript.language
    doc.language_probability = transcript.language_probability
    doc.task = transcript.task
    doc.duration = transcript.duration
    doc.no_speech = transcript.no_speech
    doc.segments = DocList[Segment](
        Segment(start=s.start, end=s.end, text=s.text,
                words=DocList[Word](Word(word=w.word, start=w.start, end=w.end, probability=w.probability) for w in s.words))
        for s in transcript.segments
    )
    doc.asr_backend = transcript.backend
    doc.asr_model = transcript.model
    doc.asr_device = transcript.device
    doc.asr_compute_type = transcript.compute_type
    doc.asr_seconds = transcript.seconds
    doc.warnings = list(transcript.warnings)
