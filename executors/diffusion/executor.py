"""StableDiffusionExecutor: text → images for every document of a request."""

from docarray import DocList
from jina import Executor, requests

from speech2image.imaging.diffusion import generate, load_engine
from speech2image.imaging.options import DiffusionArguments
from speech2image.observability.metrics import ExecutorMetrics
from speech2image.observability.stages import StageClock
from speech2image.options import configure, merge
from speech2image.schema import GeneratedImage, SpeechImageDoc, refuse_filled
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
            deadline = monotonic_deadline(parameters, self.limits.request_timeout_seconds)
            options = merge(self.defaults, parameters)  # every document and option is checked before model work
            self.limits.check_documents(docs)
            refuse_filled(docs, "diffusion")
            prompts = [(doc.image_prompt() or "").strip() for doc in docs]
            settings = [self.engine.resolve(options) for _ in docs]  # once each: rejects sizes the model cannot draw
            for doc, prompt in zip(docs, prompts, strict=True):
                if not prompt:
                    doc.no_images_reason = "no speech found in the audio" if doc.no_speech else "empty prompt"
            if not any(prompts):
                return docs  # nothing to draw: nothing to queue for
            first = settings[0]
            work = self.limits.check_work(documents=sum(map(bool, prompts)), num_images=len(first.seeds),
                                          steps=first.steps, width=first.width, height=first.height)
            self.metrics.set_attributes(steps=first.steps, width=first.width, height=first.height,
                                        images=len(first.seeds))
            async with self.scheduler.turn(deadline, parameters.get(CALLER), work) as turn:
                with self.metrics.working():
                    await self.scheduler.run(turn, self._draw_all, docs, prompts, settings, clock)
        return docs

    def _draw_all(self, docs, prompts, settings, clock, turn) -> None:
        for doc, prompt, resolved in zip(docs, prompts, settings, strict=True):
            if prompt:
                doc.images = DocList[GeneratedImage](generate(
                    self.engine, prompt, resolved, turn=turn, clock=clock,
                    drawn=lambda count: self.metrics.images_made(self.engine.model, count)))

    @requests(on="/models")
    def models(self, docs: DocList[SpeechImageDoc], **kwargs) -> DocList[SpeechImageDoc]:
        """The model this replica serves, for the gateway's model list."""
        for doc in docs:
            doc.images = DocList[GeneratedImage]([GeneratedImage(model=self.engine.model)])
        return docs
