"""Audio in: decode untrusted bytes with PyAV into 16 kHz mono float32, within limits.

Nothing here needs a system ffmpeg: PyAV ships its own libraries (as faster-whisper
does). The declared format is checked before decoding and decoding stops as soon as a
limit is passed, so a file that claims (or unpacks) to be huge costs no more than the
limit in time and memory.
"""

import io
from typing import Callable, Optional

import numpy as np

from ..errors import AudioError, one_line
from ..limits import AudioLimits
from .options import AudioSources
from .sources import read_source

SAMPLE_RATE = 16_000
FORMATS = "wav, flac, mp3, ogg/opus, m4a/mp4/aac or webm"
FORMATS_HINT = f"send the bytes of a {FORMATS} file"
# FFmpeg picks a demuxer from the bytes, among all it was built with: a concat or HLS playlist
# would open the files or URLs it names, an SDP description would open RTP sockets. Only the
# demuxers of the formats above may be picked (FFmpeg's format_whitelist), and none may open
# anything through a protocol (protocol_whitelist names none): the bytes sent are all it reads.
# A file may declare many streams, each with its tables: an audio file needs few.
AUDIO_DEMUXERS = ("wav", "flac", "mp3", "ogg", "mov", "mp4", "m4a", "aac", "matroska", "webm")
OPEN_OPTIONS = {"format_whitelist": ",".join(AUDIO_DEMUXERS), "protocol_whitelist": "none", "max_streams": "8"}


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Decode an encoded audio file into float32 mono samples at 16 kHz."""
    import av

    if not data:
        raise AudioError(f"empty audio: the document's audio has 0 bytes; {FORMATS_HINT}")
    if len(data) > limits.max_audio_bytes:
        raise AudioError(
            f"audio too large: {len(data)} bytes > max_audio_bytes={limits.max_audio_bytes}; "
            "send a shorter or more compressed file"
        )
    max_samples = int(limits.max_audio_seconds * SAMPLE_RATE)
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=OPEN_OPTIONS)
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as e:
        # one message whatever FFmpeg said: a refused playlist must not tell which files exist
        raise AudioError(f"not audio: the bytes are not a {FORMATS} file; {FORMATS_HINT}") from e
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with container:
            if not container.streams.audio:
                raise AudioError(f"not audio: the file has no audio stream; {FORMATS_HINT}")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise AudioError(f"corrupt audio: its audio stream has no known codec; {FORMATS_HINT}")
            limits.check_format(stream.sample_rate or 0, stream.channels or 0)
            declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            if declared is not None and declared > limits.max_audio_seconds * 1.05:
                raise _too_long(declared, limits)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            seconds_in = 0.0
            for frame in container.decode(stream):
                limits.check_format(frame.sample_rate, frame.layout.nb_channels)  # formats may change mid-stream
                seconds_in += frame.samples / frame.sample_rate  # before resampling: its cost follows the input
                if seconds_in > limits.max_audio_seconds * 1.05:
                    raise _too_long(seconds_in, limits)
                frame.pts = None  # let the resampler count samples itself
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > max_samples:
                    raise _too_long(total / SAMPLE_RATE, limits)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise AudioError(f"corrupt audio: decoding failed ({one_line(e)}); {FORMATS_HINT}") from e
    waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if waveform.size == 0:
        raise AudioError(f"empty audio: the file decodes to no samples; {FORMATS_HINT}")
    if waveform.size > max_samples:
        raise _too_long(waveform.size / SAMPLE_RATE, limits)
    return waveform.astype(np.float32, copy=False)


class AudioDecoder:
    """:func:`decode_audio` in a worker process with `decode_memory_bytes` of address space and
    `decode_timeout_seconds` per file: what an FFmpeg parser costs on a hostile file (tables or
    headers that inflate to gigabytes while opening it) stays in the worker, which is replaced."""

    def __init__(self, limits: AudioLimits = AudioLimits()):
        import multiprocessing

        import pebble

        self.limits = limits
        self._pool = pebble.ProcessPool(max_workers=1, initializer=_cap_memory, initargs=(limits.decode_memory_bytes,),
                                        context=multiprocessing.get_context("spawn"))  # never fork model threads

    def decode(self, data: bytes) -> np.ndarray:
        from concurrent.futures import TimeoutError

        from pebble import ProcessExpired

        try:
            return self._pool.schedule(decode_audio, (data, self.limits),
                                       timeout=self.limits.decode_timeout_seconds).result()
        except TimeoutError as e:
            raise AudioError(f"audio took longer than decode_timeout_seconds={self.limits.decode_timeout_seconds:g} "
                             f"to decode; {FORMATS_HINT}") from e
        except (ProcessExpired, MemoryError) as e:
            raise AudioError(f"corrupt audio: decoding it needed more than decode_memory_bytes="
                             f"{self.limits.decode_memory_bytes}; {FORMATS_HINT}") from e

    def close(self) -> None:
        self._pool.stop()
        self._pool.join()


def _cap_memory(limit: int) -> None:
    """The decoding worker: at most `limit` bytes of address space, and deaf to a terminal's
    Ctrl-C (its replica stops it)."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_waveform(waveform, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Validate a float waveform sent in place of a file (mono, 16 kHz)."""
    array = np.asarray(waveform)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise AudioError(
            f"bad waveform: got dtype {array.dtype} with shape {array.shape}; "
            "send float32 mono samples at 16 kHz, shape (n,)"
        )
    if array.size == 0:
        raise AudioError("empty audio: the waveform has 0 samples; send float32 mono samples at 16 kHz")
    if array.size > limits.max_audio_seconds * SAMPLE_RATE:
        raise _too_long(array.size / SAMPLE_RATE, limits)
    if not np.isfinite(array).all():
        raise AudioError("bad waveform: it holds NaN or infinite samples; send finite float32 samples")
    return array.astype(np.float32, copy=False)


def _too_long(seconds: float, limits: AudioLimits) -> AudioError:
    return AudioError(
        f"audio too long: {seconds:.1f} s > max_audio_seconds={limits.max_audio_seconds:g}; send a shorter clip"
    )


def load_audio(doc, sources: AudioSources, limits: AudioLimits,
               decode: Callable[[bytes], np.ndarray] = None) -> Optional[np.ndarray]:
    """The document's audio as a 16 kHz waveform, or None for a text-only document; `decode`
    (an :class:`AudioDecoder`'s, in executors) turns file bytes into samples."""
    decode = decode or (lambda data: decode_audio(data, limits))
    from ..schema import from_blob

    if doc.audio is not None:
        try:
            data = from_blob(doc.audio)
        except ValueError as e:
            raise AudioError(f"not audio: {e}; {FORMATS_HINT}") from e
        return decode(data)
    if doc.waveform is not None:
        return check_waveform(doc.waveform, limits)
    if doc.uri:
        return decode(read_source(doc.uri, sources, limits))
    return None
