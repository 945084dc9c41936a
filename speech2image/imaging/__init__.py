"""Text → images: the options (`options`), the diffusers engine and `generate` (`diffusion`),
its OpenVINO backend for CPUs (`openvino_backend`), and pipelines of the real architectures
with random weights (`random_pipelines`).

Importing the package or its `options` imports no model library.
"""
