"""Prepare an executor's offline model in its cache, e.g. while building an image.

    python -m speech2image.bake whisper     # "embedded-base" joined; openai-whisper checkpoints of both
    python -m speech2image.bake diffusion   # the "tiny" random-weights pipeline
"""

import sys


def bake(executor: str) -> str:
    """Build the offline model `executor` needs and return where it is."""
    if executor == "whisper":
        from .asr.embedded import EMBEDDED_MODELS, embedded_ctranslate2_path, embedded_openai_checkpoint

        for model in EMBEDDED_MODELS:
            embedded_ctranslate2_path(model)  # faster-whisper reads it from there
        return " ".join(str(embedded_openai_checkpoint(model)) for model in EMBEDDED_MODELS)
    if executor == "diffusion":
        from .cache import tiny_diffusion_dir
        from .imaging.random_pipelines import save_random_pipeline

        return str(save_random_pipeline(tiny_diffusion_dir(), "tiny"))
    raise SystemExit(f"unknown executor {executor!r}: use whisper or diffusion")


if __name__ == "__main__":
    print(bake(sys.argv[1] if len(sys.argv) > 1 else ""))
