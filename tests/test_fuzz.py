"""Fuzzing request validation and audio decoding (hypothesis): whatever a client sends,
every failure is one of the project's own documented errors, never a crash.

Quick by default (FUZZ_EXAMPLES per property, 150); the long run, 10 000 per property:

    FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz.py
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from speech2image.asr.audio import decode_audio, load_audio
from speech2image.asr.options import AudioSources, TranscribeOptions
from speech2image.client import request_parameters
from speech2image.errors import AudioError, ForbiddenSource, InvalidRequest
from speech2image.imaging.diffusion import load_engine
from speech2image.imaging.options import DiffusionConfig, GenerateOptions
from speech2image.limits import AudioLimits, RequestLimits
from speech2image.options import merge
from speech2image.schema import SpeechImageDoc, to_blob
from tests.support.audio_files import FORMATS, encode

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OPTION_NAMES = sorted({f for cls in (GenerateOptions, TranscribeOptions, RequestLimits, AudioLimits)
                       for f in cls.__dataclass_fields__})
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=30) | st.sampled_from(["8", "-1", "1e9", "nan", "true", "ddim", "en", "translate", "", "512"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)
parameters = st.dictionaries(st.sampled_from(OPTION_NAMES) | st.text(max_size=12), values, max_size=8)


@pytest.fixture(scope="module")
def tiny_engine():
    return load_engine(DiffusionConfig(model="tiny", local_files_only=True))


@fuzz
@given(parameters)
def test_request_parameters_are_accepted_or_refused_as_invalid_request(tiny_engine, request):
    """Checks more than crashes: a refusal is one line, and what resolves is a size and count the model allows."""
    for defaults in (GenerateOptions(), TranscribeOptions()):
        try:
            options = merge(defaults, request)
        except InvalidRequest as e:
            assert "\n" not in str(e)
            continue
        if isinstance(options, GenerateOptions):
            try:
                settings_ = tiny_engine.resolve(options)
            except InvalidRequest:
                continue
            try:
                RequestLimits().check_work(documents=1, num_images=len(settings_.seeds), steps=settings_.steps,
                                           width=settings_.width, height=settings_.height)
            except InvalidRequest:
                pass
            assert 16 <= settings_.width <= 512 and 1 <= len(settings_.seeds) <= 8


@fuzz
@given(parameters)
def test_limits_and_client_side_checks_raise_only_invalid_request(request):
    """Crash check only: nothing but InvalidRequest is raised; what is accepted is not looked at."""
    for cls in (RequestLimits, AudioLimits):
        try:
            merge(cls(), request)
        except InvalidRequest:
            pass
    try:
        request_parameters(request)
    except InvalidRequest:
        pass


@fuzz
@given(st.integers(0, 10**4), st.integers(1, 8), st.integers(1, 150), st.integers(1, 4096), st.integers(1, 4096))
def test_the_work_budget_refuses_exactly_what_is_over_it(documents, images, steps, width, height):
    """Checks the verdict: refused exactly when over max_megapixel_steps, and the message names it."""
    limits = RequestLimits()
    over = documents * images * steps * width * height > limits.max_megapixel_steps * 2**20
    try:
        limits.check_work(documents=documents, num_images=images, steps=steps, width=width, height=height)
        assert not over
    except InvalidRequest as e:
        assert over and "max_megapixel_steps=128" in str(e)


@pytest.fixture(scope="module")
def seed_files() -> list[bytes]:
    """Half a second of a tone in every format: the starting points of mutation."""
    tone = (0.3 * np.sin(2 * math.pi * 440 * np.arange(8000) / 16_000)).astype(np.float32)
    return [encode(tone, rate, name, layout) for name in FORMATS for rate, layout in ((16_000, "mono"), (48_000, "stereo"))]


def mutate(data: bytes, edits) -> bytes:
    """Apply byte edits: overwrite, delete, insert, truncate, duplicate a span."""
    data = bytearray(data)
    for kind, position, value in edits:
        if not data:
            break
        position %= len(data)
        if kind == 0:
            data[position] = value
        elif kind == 1:
            del data[position:position + value]
        elif kind == 2:
            data[position:position] = bytes([value]) * (value % 64 + 1)
        elif kind == 3:
            del data[position:]
        else:
            data[position:position] = data[position:position + value * 64]
    return bytes(data)


edits = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8)
limits_small = AudioLimits(max_audio_seconds=30, max_audio_bytes=1_000_000)


@fuzz
@given(st.data(), edits)
def test_mutated_audio_files_decode_or_raise_audio_error(seed_files, data, changes):
    """Checks more than crashes: a refusal is one line, a decoded waveform float32 mono within the limit."""
    original = data.draw(st.sampled_from(seed_files))
    try:
        waveform = decode_audio(mutate(original, changes), limits_small)
    except AudioError as e:
        assert "\n" not in str(e)
        return
    assert waveform.dtype == np.float32 and waveform.ndim == 1 and 0 < waveform.size <= 30 * 16_000


@fuzz
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_audio_error(data):
    """Crash check only: nothing but AudioError is raised; what decodes is not looked at."""
    try:
        decode_audio(data, limits_small)
    except AudioError:
        pass


# documents that make FFmpeg open other files, URLs or sockets: playlists and session descriptions
paths = st.sampled_from(["tests/data/de-car.flac", "/etc/passwd", "file:/etc/hostname", "http://127.0.0.1:9/a.flac",
                         "../../../../etc/shadow", "subfile,,start,0,end,0,,:tests/data/de-car.flac",
                         "data:audio/wav;base64,UklGRg=="]) | st.text(max_size=40)
SHAPES = [b"ffconcat version 1.0\nfile %s\n", b"#EXTM3U\n#EXTINF:10,\n%s\n#EXT-X-ENDLIST\n",
          b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n%s\n",
          b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=%s\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 45006 RTP/AVP 0\n"]


@fuzz
@given(st.sampled_from(SHAPES), paths, edits | st.just([]))
@example(SHAPES[0], "tests/data/de-car.flac", []).via("a 45-byte playlist aimed at a clip of ours")
@example(SHAPES[1], "tests/data/de-car.flac", [])
def test_playlists_and_session_descriptions_never_open_what_they_name(shape, path, changes):
    """Checks more than crashes: the file a playlist names is never read, nor its path echoed."""
    data = shape.replace(b"%s", path.encode("utf-8", "replace"))
    data = mutate(data, changes) if changes else data
    try:
        waveform = decode_audio(data, limits_small)
    except AudioError as e:
        assert "\n" not in str(e) and (len(path) < 8 or path not in str(e))
        return
    assert waveform.size < 16_000  # never the 3 s of the clip a playlist names: noise in the bytes themselves


hostile_uris = st.sampled_from([
    "/etc/passwd", "../../etc/passwd", "file:///etc/passwd", "file://localhost/etc/shadow", "~/.ssh/id_rsa",
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:54322/", "https://localhost/", "http://[::1]/",
    "gopher://127.0.0.1/", "data:audio/wav;base64,AAAA", "\\\\server\\share\\a.wav", "/proc/self/environ",
]) | st.text(min_size=1, max_size=60)  # "" means no uri: a text-only document


@fuzz
@given(hostile_uris)
def test_uris_are_refused_unless_allow_listed(uri):
    """Checks the verdict: every uri is refused when no source is allow-listed."""
    with pytest.raises(InvalidRequest) as refused:
        load_audio(SpeechImageDoc(uri=uri), AudioSources(), limits_small)
    assert isinstance(refused.value, (ForbiddenSource, AudioError))


@fuzz
@given(st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=64).map(lambda v: np.array(v, np.float32)),
    st.lists(st.integers(-5, 5), max_size=16).map(np.array),
    st.lists(st.lists(st.floats(-1, 1), min_size=2, max_size=2), max_size=8).map(np.array),
))
def test_waveforms_are_used_or_refused_with_audio_error(array):
    """Checks more than crashes: a waveform used is one-dimensional and finite."""
    try:
        waveform = load_audio(SpeechImageDoc(waveform=array), AudioSources(), limits_small)
    except AudioError:
        return
    assert waveform.ndim == 1 and np.isfinite(waveform).all()


@fuzz
@given(st.binary(max_size=512))
def test_audio_blobs_of_any_bytes_are_handled(data):
    """Crash check only: nothing but AudioError is raised; what decodes is not looked at."""
    try:
        load_audio(SpeechImageDoc(audio=to_blob(data)), AudioSources(), limits_small)
    except AudioError:
        pass
