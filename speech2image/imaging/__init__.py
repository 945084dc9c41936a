"""Text → images: the options (`options`), the diffusers engine and `generate` (`diffusion`),
and pipelines of the real architectures with random weights (`random_pipelines`).

Importing the package or its `options` imports no model library.
"""
