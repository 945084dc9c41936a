"""StableDiffusionExecutor: text → images for every document of a request."""

import time
from typing import Optional

from docarray import DocList
from jina import Executor, requests

from speech2image.diffusion import DEFAULT_MODEL, GenerateOptions, Image, generate, load_engine
from speech2image.limits import RequestLimits
from speech2image.metrics import ExecutorMetrics
from speech2image.options import merge, split_kwargs
from speech2image.serving import announce_when_serving
from speech2image.schema import GeneratedImage, SpeechImageDoc, to_blob


class StableDiffusionExecutor(Executor):
    """Draws images of each document's English text (its transcript, else its prompt).

    Arguments (config.yml `with:`): `model` (a diffusers model id, a local diffusers
    directory, or "tiny"), `device`, `dtype` and `vae` ("auto": CUDA, float16 and the full
    VAE with a GPU; else the CPU, bfloat16 where the CPU has it natively, and the tiny
    VAE), `compile`, `cache_dir` (HF_HOME by default), `local_files_only`,
    `safety_checker`, `cpu_threads`, `batch_images`; the request limits of :class:`RequestLimits`
    (`max_documents`, `max_prompt_chars`, `max_megapixel_steps`, `request_timeout_seconds`);
    and the defaults of every request option of :class:`GenerateOptions`, which request
    parameters override.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                 cache_dir: Optional[str] = None, local_files_only: bool = False, safety_checker: bool = False,
                 cpu_threads: int = 0, batch_images: bool = False, vae: str = "auto", compile: bool = False,
                 **kwargs):
        self.limits, self.defaults, rest = split_kwargs(kwargs, RequestLimits, GenerateOptions)
        super().__init__(**rest)
        self.engine = load_engine(model, device, dtype, cache_dir, local_files_only, safety_checker,
                                  cpu_threads, batch_images, vae, compile)
        self.metrics = ExecutorMetrics.of(self, "diffusion")
        announce_when_serving(f"diffusion executor ({self.engine.model})")

    @requests(on="/generate")
    def generate(self, docs: DocList[SpeechImageDoc], parameters: dict, tracing_context=None,
                 **kwargs) -> DocList[SpeechImageDoc]:
        with self.metrics.request("generate", tracing_context, model=self.engine.model, dtype=self.engine.dtype,
                                  vae=self.engine.vae, documents=len(docs)):
            deadline = time.monotonic() + self.limits.request_timeout_seconds
            options = merge(self.defaults, parameters or {})
            settings = self.engine.resolve(options)  # rejects sizes outside the model's limits
            self.limits.check_documents(docs)
            prompts = [(doc.image_prompt() or "").strip() for doc in docs]
            self.limits.check_work(sum(map(bool, prompts)), len(settings.seeds), settings.steps, settings.width,
                                   settings.height)
            self.metrics.set_attributes(steps=settings.steps, width=settings.width, height=settings.height,
                                        images=len(settings.seeds))
            with self.metrics.working():
                for doc, prompt in zip(docs, prompts):
                    if not prompt:
                        doc.no_images_reason = "no speech found in the audio" if doc.no_speech else "empty prompt"
                        continue
                    images = generate(self.engine, prompt, options, deadline, self.metrics.observe)
                    doc.images = DocList[GeneratedImage](to_document(image) for image in images)
                    self.metrics.images_made(self.engine.model, len(images))
        return docs


def to_document(image: Image) -> GeneratedImage:
    """A generated image as a document field (the PNG as uint8 bytes)."""
    fields = {k: v for k, v in vars(image).items() if k not in ("png", "warnings")}
    return GeneratedImage(png=to_blob(image.png), warnings=list(image.warnings), **fields)
