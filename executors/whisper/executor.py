"""WhisperExecutor: speech → text for every document of a request."""

from docarray import DocList
from jina import Executor, requests

from speech2image.asr.audio import SAMPLE_RATE, AudioDecoder, load_audio
from speech2image.asr.options import WhisperArguments
from speech2image.asr.transcription import document_fields, load_engine, transcribe
from speech2image.observability.metrics import ExecutorMetrics
from speech2image.observability.names import DECODE
from speech2image.observability.stages import StageClock
from speech2image.options import configure, merge
from speech2image.schema import (
    TRANSCRIPT_DELTA,
    TRANSCRIPT_DONE,
    SpeechImageDoc,
    error_doc,
    event_doc,
    refuse_filled,
    stream_parameters,
)
from speech2image.serving.announce import announce_when_serving
from speech2image.serving.deadline import monotonic_deadline
from speech2image.serving.interrupts import leave_interrupts_to_the_flow
from speech2image.serving.logs import one_line_refusals
from speech2image.serving.scheduler import CALLER, Scheduler


class WhisperExecutor(Executor):
    """Transcribes each document's audio with Whisper and writes the transcript on it.

    Arguments (config.yml `with:`, flow.yml `uses_with`), each with its default in one options
    dataclass of `speech2image.asr.options.WhisperArguments`: the model (`WhisperConfig`), the
    limits (`AudioLimits`, `RequestLimits`, `ReplicaLimits`), where a document's `uri` may
    point (`AudioSources`), and the defaults of every request option (`TranscribeOptions`),
    which request parameters override. Checked at start-up: a wrong type or an unknown name
    stops it. Requests queue in the replica's scheduler (a bounded queue fair between callers,
    deadlines, cancellation).
    """

    def __init__(self, **kwargs):
        arguments, rest = configure(kwargs, WhisperArguments)
        super().__init__(**rest)
        self.audio_limits, self.request_limits = arguments.audio, arguments.request
        self.sources, self.defaults = arguments.sources, arguments.defaults
        self.engine = load_engine(arguments.model)
        self.decoder = AudioDecoder(self.audio_limits)  # hostile files cost a worker process, not this one
        self.metrics = ExecutorMetrics.of(self, "whisper")
        self.scheduler = Scheduler(arguments.replica.max_queued_requests, self.metrics.scheduler_event,
                                   max_caller_share=arguments.replica.max_caller_share)
        one_line_refusals(self.metrics.labels["runtime_name"])  # bad input, busy, late: one log line, no stack
        leave_interrupts_to_the_flow()  # a terminal's Ctrl-C: app.py drains, then stops this replica
        announce_when_serving(f"whisper executor ({self.engine.label})")

    @requests(on="/generate")
    async def transcribe(self, docs: DocList[SpeechImageDoc], parameters: dict, tracing_context=None,
                         **kwargs) -> DocList[SpeechImageDoc]:
        parameters = parameters or {}
        clock = StageClock(self.metrics.observe)
        with self.metrics.request("transcribe", tracing_context, model=self.engine.label, documents=len(docs)):
            deadline, options = self._admit(docs, parameters)
            if not any(doc.has_audio() for doc in docs):
                return docs  # text only: nothing to queue for
            async with self.scheduler.turn(deadline, parameters.get(CALLER)) as turn:  # its work: known once decoded
                waveforms = await self._decode(docs, options, clock, turn)
                with self.metrics.working():
                    await self.scheduler.run(turn, self._transcribe_all, docs, waveforms, options, clock)
        return docs

    @requests(on="/stream")
    async def stream(self, doc: SpeechImageDoc, tracing_context=None, **kwargs) -> SpeechImageDoc:
        """One document's transcript as it forms (event documents): each segment's text as soon as
        it is decoded, then the transcribed document; an error ends the stream as its last event."""
        clock = StageClock(self.metrics.observe)
        try:
            with self.metrics.request("stream", tracing_context, model=self.engine.label, documents=1):
                parameters = stream_parameters(doc)
                doc.stream_parameters = None
                docs = DocList[SpeechImageDoc]([doc])
                deadline, options = self._admit(docs, parameters)
                async def hear(turn, emit):
                    [waveform] = await self._decode(docs, options, clock, turn)
                    with self.metrics.working():
                        await self.scheduler.run(turn, self._transcribe_streaming, doc, waveform, options, clock, emit)

                if doc.has_audio():
                    async for event in self.scheduler.stream(deadline, parameters.get(CALLER), hear):
                        yield event
                doc.event = TRANSCRIPT_DONE
                yield doc
        except Exception as error:  # the stream's last event
            yield error_doc(error, self.logger)

    def _admit(self, docs, parameters: dict):
        """Check every document and option before any model work: (deadline, options)."""
        deadline = monotonic_deadline(parameters, self.request_limits.request_timeout_seconds)
        options = merge(self.defaults, parameters)
        self.request_limits.check_documents(docs)
        refuse_filled(docs, "whisper", "diffusion", "stream")
        for doc in docs:
            doc.check_input()
        return deadline, options

    async def _decode(self, docs, options, clock, turn) -> list:
        """The documents' waveforms, in the replica's turn; the turn's work is known once decoded."""
        with clock.stage(DECODE):  # a worker process decodes: the replica's turn, but not its model
            waveforms = await self.scheduler.run(turn, self._decode_all, docs)
        turn.work = self.request_limits.check_transcription(
            audio_seconds=sum(w.size for w in waveforms if w is not None) / SAMPLE_RATE, beam_size=options.beam_size)
        return waveforms

    def _decode_all(self, docs, turn) -> list:
        waveforms = []
        for index, doc in enumerate(docs):
            turn.check(f"decoding document {index}")  # a client gone or out of time: no more decoding
            waveforms.append(load_audio(doc, self.sources, self.audio_limits, self.decoder.decode))
        return waveforms

    def _transcribe_all(self, docs, waveforms, options, clock, turn, decoded=lambda segment: None) -> None:
        for doc, waveform in zip(docs, waveforms, strict=True):
            if waveform is None:  # text-only documents pass through untouched
                continue
            transcript = transcribe(self.engine, waveform, options, clock=clock, turn=turn, decoded=decoded)
            for name, value in document_fields(transcript).items():
                setattr(doc, name, value)
            doc.audio = doc.waveform = None  # the answer does not carry the input back
            self.metrics.audio_transcribed(transcript.duration)
            self.metrics.set_attributes(audio_seconds=transcript.duration, language=transcript.language,
                                        task=transcript.task)

    def _transcribe_streaming(self, doc, waveform, options, clock, emit, turn) -> None:
        def decoded(segment) -> None:
            emit(event_doc(TRANSCRIPT_DELTA, delta=segment.text))

        self._transcribe_all([doc], [waveform], options, clock, turn, decoded)

    @requests(on="/models")
    def models(self, docs: DocList[SpeechImageDoc], **kwargs) -> DocList[SpeechImageDoc]:
        """The model this replica serves, for the gateway's model list."""
        for doc in docs:
            doc.asr_model = self.engine.model_name
        return docs

    def close(self) -> None:
        self.decoder.close()
        super().close()
