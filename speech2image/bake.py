"""Prepare an executor's offline model in its cache, e.g. while building an image.

    python -m speech2image.bake whisper     # the openai-whisper checkpoint of "embedded"
    python -m speech2image.bake diffusion   # the "tiny" random-weights pipeline
"""

import sys


def bake(executor: str) -> str:
    """Build the offline model `executor` needs and return where it is."""
    if executor == "whisper":
        from .whisper_models import embedded_ctranslate2_path, embedded_openai_checkpoint

        embedded_ctranslate2_path()  # faster-whisper reads it straight from the package
        return str(embedded_openai_checkpoint())
    if executor == "diffusion":
        from .cache import tiny_diffusion_dir
        from .random_pipelines import save_random_pipeline

        return str(save_random_pipeline(tiny_diffusion_dir(), "tiny"))
    raise SystemExit(f"unknown executor {executor!r}: use whisper or diffusion")


if __name__ == "__main__":
    print(bake(sys.argv[1] if len(sys.argv) > 1 else ""))
