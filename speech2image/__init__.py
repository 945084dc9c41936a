"""speech2image: a Jina Flow that turns a spoken sentence into images.

This package holds what the executors and the client share: the document schema
(`speech2image.schema`), audio decoding (`speech2image.audio`), the errors
(`speech2image.errors`), and the model code each executor calls
(`speech2image.transcription`, `speech2image.diffusion`). Importing the package
imports none of the heavy libraries.
"""

__version__ = "0.1.0"
