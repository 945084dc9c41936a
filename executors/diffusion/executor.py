"""StableDiffusionExecutor: text → images for every document of a request."""

import time

from docarray import DocList
from jina import Executor, requests

from speech2image.imaging.diffusion import generate, load_engine
from speech2image.imaging.options import ARGUMENTS
from speech2image.observability.metrics import ExecutorMetrics
from speech2image.observability.stages import StageClock
from speech2image.options import configure, merge
from speech2image.schema import GeneratedImage, SpeechImageDoc, refuse_filled
from speech2image.serving.announce import announce_when_serving
from speech2image.serving.scheduler import Scheduler


class StableDiffusionExecutor(Executor):
    """Draws images of each document's English text (its transcript, else its prompt).

    Arguments (config.yml `with:`, flow.yml `uses_with`), each with its default in one
    dataclass of `speech2image.imaging.options.ARGUMENTS`: the pipeline (`DiffusionConfig`),
    the limits (`RequestLimits`), and the defaults of every request option (`GenerateOptions`),
    which request parameters override. Checked at start-up: a wrong type or an unknown name
    stops it.
    """

    def __init__(self, **kwargs):
        config, self.limits, self.defaults, rest = configure(kwargs, *ARGUMENTS)
        super().__init__(**rest)
        self.engine = load_engine(config)
        self.metrics = ExecutorMetrics.of(self, "diffusion")
        self.scheduler = Scheduler(waited=self.metrics.waited)
        announce_when_serving(f"diffusion executor ({self.engine.model})")

    @requests(on="/generate")
    def generate(self, docs: DocList[SpeechImageDoc], parameters: dict, tracing_context=None,
                 **kwargs) -> DocList[SpeechImageDoc]:
        clock = StageClock(self.metrics.observe)
        with self.metrics.request("generate", tracing_context, model=self.engine.model, dtype=self.engine.dtype,
                                  vae=self.engine.vae, documents=len(docs)):
            deadline = time.monotonic() + self.limits.request_timeout_seconds
            options = merge(self.defaults, parameters or {})  # every document and option is checked before model work
            self.limits.check_documents(docs)
            refuse_filled(docs, "diffusion")
            prompts = [(doc.image_prompt() or "").strip() for doc in docs]
            settings = [self.engine.resolve(options) for _ in docs]  # once each: rejects sizes the model cannot draw
            if settings:
                first = settings[0]
                self.limits.check_work(documents=sum(map(bool, prompts)), num_images=len(first.seeds),
                                       steps=first.steps, width=first.width, height=first.height)
                self.metrics.set_attributes(steps=first.steps, width=first.width, height=first.height,
                                            images=len(first.seeds))
            with self.scheduler.turn(), self.metrics.working():
                for doc, prompt, drawn in zip(docs, prompts, settings):
                    if not prompt:
                        doc.no_images_reason = "no speech found in the audio" if doc.no_speech else "empty prompt"
                        continue
                    doc.images = DocList[GeneratedImage](
                        generate(self.engine, prompt, drawn, deadline=deadline, clock=clock))
                    self.metrics.images_made(self.engine.model, len(doc.images))
        return docs

    @requests(on="/models")
    def models(self, docs: DocList[SpeechImageDoc], **kwargs) -> DocList[SpeechImageDoc]:
        """The model this replica serves, for the gateway's model list."""
        for doc in docs:
            doc.images = DocList[GeneratedImage]([GeneratedImage(model=self.engine.model)])
        return docs
