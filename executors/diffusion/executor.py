"""StableDiffusionExecutor: text → images for every document of a request."""

import asyncio

from docarray import DocList
from jina import Executor, requests

from speech2image.errors import InvalidRequest
from speech2image.imaging.diffusion import generate, load_engine
from speech2image.imaging.options import DiffusionArguments
from speech2image.imaging.pictures import edit_source
from speech2image.imaging.provenance import spoken_edit
from speech2image.observability.metrics import ExecutorMetrics
from speech2image.observability.stages import StageClock
from speech2image.options import configure, merge
from speech2image.schema import (
    GeneratedImage,
    SpeechImageDoc,
    error_doc,
    event_doc,
    from_blob,
    refuse_filled,
    stream_parameters,
)
from speech2image.serving.announce import announce_when_serving
from speech2image.serving.deadline import monotonic_deadline
from speech2image.serving.interrupts import leave_interrupts_to_the_flow
from speech2image.serving.logs import one_line_refusals
from speech2image.serving.scheduler import CALLER, Scheduler


class StableDiffusionExecutor(Executor):
    """Draws images of each document's English text (its transcript, else its prompt).

    Arguments (config.yml `with:`, flow.yml `uses_with`), each with its default in one options
    dataclass of `speech2image.imaging.options.DiffusionArguments`: the pipeline (`DiffusionConfig`),
    the limits (`RequestLimits`, `ReplicaLimits`), and the defaults of every request option
    (`GenerateOptions`), which request parameters override. Checked at start-up: a wrong type
    or an unknown name stops it. Requests queue in the replica's scheduler (a bounded queue
    fair between callers, deadlines, cancellation between two denoising steps).
    """

    def __init__(self, **kwargs):
        arguments, rest = configure(kwargs, DiffusionArguments)
        super().__init__(**rest)
        self.limits, self.defaults = arguments.request, arguments.defaults
        self.engine = load_engine(arguments.model)
        self.metrics = ExecutorMetrics.of(self, "diffusion")
        self.scheduler = Scheduler(arguments.replica.max_queued_requests, self.metrics.scheduler_event,
                                   max_caller_share=arguments.replica.max_caller_share)
        one_line_refusals(self.metrics.labels["runtime_name"])  # bad input, busy, late: one log line, no stack
        leave_interrupts_to_the_flow()  # a terminal's Ctrl-C: app.py drains, then stops this replica
        announce_when_serving(f"diffusion executor ({self.engine.model})")

    @requests(on="/generate")
    async def generate(self, docs: DocList[SpeechImageDoc], parameters: dict, tracing_context=None,
                       **kwargs) -> DocList[SpeechImageDoc]:
        parameters = parameters or {}
        clock = StageClock(self.metrics.observe)
        with self.metrics.request("generate", tracing_context, model=self.engine.model, dtype=self.engine.dtype,
                                  vae=self.engine.vae, documents=len(docs)):
            request = await asyncio.to_thread(self._admit, docs, parameters)
            if request is None:
                return docs  # nothing to draw: nothing to queue for
            deadline, prompts, settings, sources, work = request
            async with self.scheduler.turn(deadline, parameters.get(CALLER), work) as turn:
                with self.metrics.working():
                    await self.scheduler.run(turn, self._draw_all, docs, prompts, settings, sources, clock)
        return docs

    @requests(on="/stream")
    async def stream(self, doc: SpeechImageDoc, tracing_context=None, **kwargs) -> SpeechImageDoc:
        """One document's images as they form (event documents): each step, `partial_images`
        previews of each image, each image when done, then the document; an error ends the stream
        as its last event."""
        clock = StageClock(self.metrics.observe)
        try:
            with self.metrics.request("stream", tracing_context, model=self.engine.model, dtype=self.engine.dtype,
                                      vae=self.engine.vae, documents=1):
                parameters = stream_parameters(doc)
                doc.stream_parameters = None
                request = await asyncio.to_thread(self._admit, DocList[SpeechImageDoc]([doc]), parameters)
                if request is None:
                    yield doc
                    return
                deadline, [prompt], [settings], [source], work = request
                partial_images = merge(self.defaults, parameters).partial_images

                async def draw(turn, emit):
                    with self.metrics.working():
                        await self.scheduler.run(turn, self._draw_streaming, prompt, settings, source, heard(doc),
                                                 partial_images, clock, emit)

                async for event in self.scheduler.stream(deadline, parameters.get(CALLER), draw, work):
                    yield event
                doc.edit_image = doc.edit_mask = None
                yield doc  # the end: the document (its images went as events)
        except Exception as error:  # the stream's last event
            yield error_doc(error, self.logger)

    def _admit(self, docs, parameters: dict):
        """Check every document and option before any model work; (deadline, prompts, settings,
        edit sources, work), or None when there is nothing to draw. Run in a thread: decoding an
        image to edit (up to 4096², a quarter of a second) would stall the replica's event loop,
        which streams the other requests' events meanwhile."""
        deadline = monotonic_deadline(parameters, self.limits.request_timeout_seconds)
        options = merge(self.defaults, parameters)
        self.limits.check_documents(docs)
        refuse_filled(docs, "diffusion", "stream")
        prompts, sources, settings = [], [], []
        for index, doc in enumerate(docs):
            prompt = (doc.image_prompt() or "").strip()
            source = edit_source(*binary(index, doc)) if prompt else None
            asked = options
            if source is not None and doc.text is not None:  # words spoken about the image
                prompt, source, asked = spoken_edit(prompt, source, options, self.limits.max_prompt_chars)
            prompts.append(prompt)
            sources.append(source)
            settings.append(self.engine.resolve(asked, source))  # each: refuses sizes the model cannot draw
        for doc, prompt in zip(docs, prompts, strict=True):
            if not prompt:
                doc.no_images_reason = "no speech found in the audio" if doc.no_speech else "empty prompt"
                doc.edit_image = doc.edit_mask = None  # answers stay small
        drawn = [resolved for resolved, prompt in zip(settings, prompts, strict=True) if prompt]
        if not drawn:
            return None
        # each document's work (an edit's size and steps are its own), against the bound together
        shapes = [(len(s.seeds), s.denoise_steps, s.width, s.height) for s in drawn]
        if len(set(shapes)) == 1:
            work = self.limits.check_work(documents=len(drawn), num_images=shapes[0][0], steps=shapes[0][1],
                                          width=shapes[0][2], height=shapes[0][3])
        else:
            work = self.limits.check_total_work([
                self.limits.check_work(documents=1, num_images=n, steps=steps, width=width, height=height)
                for n, steps, width, height in shapes])
        first = drawn[0]
        self.metrics.set_attributes(steps=first.steps, width=first.width, height=first.height,
                                    images=len(first.seeds))
        return deadline, prompts, settings, sources, work

    def _draw_all(self, docs, prompts, settings, sources, clock, turn) -> None:
        for doc, prompt, resolved, source in zip(docs, prompts, settings, sources, strict=True):
            if prompt:
                doc.images = DocList[GeneratedImage](generate(
                    self.engine, prompt, resolved, turn=turn, clock=clock, source=source, heard=heard(doc),
                    drawn=lambda count: self.metrics.images_made(self.engine.model, count)))
            doc.edit_image = doc.edit_mask = None  # answers stay small

    def _draw_streaming(self, prompt, settings, source, spoken, partial_images, clock, emit, turn) -> None:
        def progress(event, index, step, steps, image):
            emit(event_doc(event, image_index=index, step=step, total_steps=steps, images=[image] if image else []))

        generate(self.engine, prompt, settings, turn=turn, clock=clock, progress=progress, source=source, heard=spoken,
                 partial_images=partial_images, drawn=lambda count: self.metrics.images_made(self.engine.model, count))

    @requests(on="/models")
    def models(self, docs: DocList[SpeechImageDoc], **kwargs) -> DocList[SpeechImageDoc]:
        """The model this replica serves, for the gateway's model list."""
        for doc in docs:
            doc.images = DocList[GeneratedImage]([GeneratedImage(model=self.engine.model)])
        return docs


def heard(doc: SpeechImageDoc):
    """The transcript and language of a spoken prompt, for its images' settings; None for a typed one."""
    return {"transcript": doc.text, "language": doc.language} if doc.text is not None else None


def binary(index: int, doc: SpeechImageDoc) -> tuple:
    """A document's image to edit and mask as bytes (None where absent); a value outside a byte is
    one line, as for audio."""
    try:
        return tuple(from_blob(blob) if blob is not None else None for blob in (doc.edit_image, doc.edit_mask))
    except ValueError as e:
        raise InvalidRequest(f"document {index}: edit_image or edit_mask: {e}; send the file's bytes") from e
