"""Audio in: decode untrusted bytes with PyAV into 16 kHz mono float32, within limits.

Nothing here needs a system ffmpeg: PyAV ships its own libraries (as faster-whisper
does). The declared format is checked before decoding and decoding stops as soon as a
limit is passed, so a file that claims (or unpacks) to be huge costs no more than the
limit in time and memory.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import numpy as np

from ..errors import AudioError, ForbiddenSource, one_line
from ..limits import AudioLimits

SAMPLE_RATE = 16_000
FORMATS = "wav, flac, mp3, ogg/opus, m4a/mp4/aac or webm"
FORMATS_HINT = f"send the bytes of a {FORMATS} file"
# FFmpeg picks a demuxer from the bytes, among all it was built with: a concat or HLS playlist
# would open the files or URLs it names, an SDP description would open RTP sockets. Only the
# demuxers of the formats above may be picked (FFmpeg's format_whitelist), and none may open
# anything through a protocol (protocol_whitelist names none): the bytes sent are all it reads.
AUDIO_DEMUXERS = ("wav", "flac", "mp3", "ogg", "mov", "mp4", "m4a", "aac", "matroska", "webm")
OPEN_OPTIONS = {"format_whitelist": ",".join(AUDIO_DEMUXERS), "protocol_whitelist": "none"}


@dataclass(frozen=True)
class AudioSources:
    """Where the server may read audio named by a document's `uri` (nowhere by default).

    `allowed_audio_dirs`: directories whose files may be read (symlinks are resolved
    first, so a link out of an allowed directory is refused). `allowed_audio_urls`: URL
    prefixes that may be fetched, e.g. ``https://media.example.com/`` (``https://``
    allows every HTTPS address). Redirects are not followed.
    """

    allowed_audio_dirs: tuple[str, ...] = ()
    allowed_audio_urls: tuple[str, ...] = ()
    url_timeout_seconds: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "allowed_audio_dirs", tuple(self.allowed_audio_dirs))
        object.__setattr__(self, "allowed_audio_urls", tuple(self.allowed_audio_urls))


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
            for frame in container.decode(stream):
                limits.check_format(frame.sample_rate, frame.layout.nb_channels)  # formats may change mid-stream
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


def read_source(uri: str, sources: AudioSources, limits: AudioLimits = AudioLimits()) -> bytes:
    """Read the bytes a `uri` names, only if `sources` allow-lists it."""
    if "\x00" in uri:
        raise ForbiddenSource("uri refused: it holds a NUL byte; send the audio bytes in the document instead")
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        if not any(uri.startswith(prefix) for prefix in sources.allowed_audio_urls):
            raise ForbiddenSource(
                f"uri refused: {uri!r} is not under an allowed URL (allowed_audio_urls); "
                "send the audio bytes in the document instead"
            )
        return _fetch(uri, sources, limits)
    if scheme not in ("", "file"):
        raise ForbiddenSource(f"uri refused: scheme {scheme!r} is not supported; send the audio bytes in the document")
    path = Path(urlsplit(uri).path if scheme == "file" else uri)
    resolved = Path(os.path.realpath(path))
    allowed = [Path(os.path.realpath(d)) for d in sources.allowed_audio_dirs]
    if not any(resolved.is_relative_to(d) for d in allowed):
        raise ForbiddenSource(
            f"uri refused: {uri!r} is not inside an allowed directory (allowed_audio_dirs); "
            "send the audio bytes in the document instead"
        )
    try:
        size = resolved.stat().st_size
        if size > limits.max_audio_bytes:
            raise AudioError(f"audio too large: {size} bytes > max_audio_bytes={limits.max_audio_bytes}")
        return resolved.read_bytes()
    except OSError as e:
        raise AudioError(f"cannot read {uri!r}: {e.strerror}") from e


def _fetch(url: str, sources: AudioSources, limits: AudioLimits) -> bytes:
    import requests

    try:
        with requests.get(url, stream=True, timeout=sources.url_timeout_seconds, allow_redirects=False) as response:
            if response.status_code != 200:  # a redirect's body is not the audio: redirects are not followed
                raise AudioError(f"cannot fetch {url!r}: HTTP {response.status_code} {response.reason} "
                                 "(redirects are not followed); allow-list the final URL")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > limits.max_audio_bytes:
                    raise AudioError(f"audio too large: {url!r} is over max_audio_bytes={limits.max_audio_bytes}")
            return bytes(body)
    except requests.RequestException as e:
        raise AudioError(f"cannot fetch {url!r}: {one_line(e)}") from e


def _too_long(seconds: float, limits: AudioLimits) -> AudioError:
    return AudioError(
        f"audio too long: {seconds:.1f} s > max_audio_seconds={limits.max_audio_seconds:g}; send a shorter clip"
    )


def load_audio(doc, sources: AudioSources, limits: AudioLimits) -> Optional[np.ndarray]:
    """The document's audio as a 16 kHz waveform, or None for a text-only document."""
    from ..schema import from_blob

    if doc.audio is not None:
        try:
            data = from_blob(doc.audio)
        except ValueError as e:
            raise AudioError(f"not audio: {e}; {FORMATS_HINT}") from e
        return decode_audio(data, limits)
    if doc.waveform is not None:
        return check_waveform(doc.waveform, limits)
    if doc.uri:
        return decode_audio(read_source(doc.uri, sources, limits), limits)
    return None
