"""Where speech2image keeps the models it converts or builds."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where speech2image caches converted and generated models."""
    root = os.environ.get("SPEECH2IMAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "speech2image"
    )
    return Path(root)


def tiny_diffusion_dir() -> Path:
    """The cached tiny random-weights diffusion pipeline."""
    return cache_dir() / "tiny-sd-v3"  # v3: latent scale 8, like SD's
