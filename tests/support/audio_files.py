"""Encode test audio in many formats with PyAV (no ffmpeg binary needed)."""

import io

import av
import numpy as np

FORMATS = {  # name → (container format, codec)
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "ogg-opus": ("ogg", "libopus"),
    "m4a": ("ipod", "aac"),
}


def encode(waveform: np.ndarray, rate: int, name: str, layout: str = "mono", source_rate: int = 16_000) -> bytes:
    """Encode 16 kHz mono float samples as `name` at `rate` Hz with `layout` channels."""
    container_format, codec = FORMATS[name]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(waveform.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = source_rate
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
