"""Speech → text: audio decoding (`audio`), the options (`options`), the Whisper engines and
`transcribe` (`transcription`), and the models that need no network (`embedded`).

Importing the package or its `options` imports no model library.
"""
