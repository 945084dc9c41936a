"""Audio decoding and the uri allow-lists: pure functions, no model."""


import numpy as np
import pytest

from speech2image.asr.audio import check_waveform, decode_audio, load_audio
from speech2image.asr.options import AudioSources
from speech2image.asr.sources import read_source
from speech2image.errors import AudioError, ForbiddenSource, InvalidRequest
from speech2image.limits import AudioLimits
from speech2image.schema import SpeechImageDoc, from_blob, to_blob
from tests.support.audio_files import FORMATS, encode


@pytest.fixture(scope="module")
def jfk_waveform(jfk_bytes):
    return decode_audio(jfk_bytes)


def test_jfk_decodes_to_11_seconds_of_16khz_mono(jfk_waveform):
    assert jfk_waveform.dtype == np.float32 and jfk_waveform.ndim == 1
    assert jfk_waveform.size == 11 * 16_000
    assert 0.05 < np.abs(jfk_waveform).max() < 1.5  # resampling may overshoot 1.0 a little


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("rate,layout", [(8_000, "mono"), (48_000, "stereo")])
def test_every_format_rate_and_layout_decodes_to_the_same_audio(jfk_waveform, name, rate, layout):
    decoded = decode_audio(encode(jfk_waveform, rate, name, layout))
    assert abs(decoded.size / 16_000 - 11.0) < 0.2  # aac pads a few frames
    n = min(decoded.size, jfk_waveform.size)
    if name != "m4a":  # aac delays the signal; its transcript is checked in the executor tests
        corr = np.corrcoef(decoded[:n], jfk_waveform[:n])[0, 1]
        assert corr > (0.6 if rate == 8_000 else 0.8)


def test_blob_round_trip():
    data = bytes(range(256)) * 3
    assert from_blob(to_blob(data)) == data
    assert from_blob(list(data)) == data  # what JSON brings
    with pytest.raises(ValueError):
        from_blob([1, 300])


@pytest.mark.parametrize("data,message", [
    (b"", "empty audio"),
    (b"this is not audio at all" * 10, "not audio"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio"),
])
def test_bad_bytes_are_one_line_audio_errors(data, message):
    with pytest.raises(AudioError) as raised:
        decode_audio(data)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_limits_on_bytes_and_duration(jfk_bytes):
    with pytest.raises(AudioError, match="audio too large: .* max_audio_bytes=1000"):
        decode_audio(jfk_bytes, AudioLimits(max_audio_bytes=1000))
    with pytest.raises(AudioError, match="audio too long: .* max_audio_seconds=5"):
        decode_audio(jfk_bytes, AudioLimits(max_audio_seconds=5))
    assert decode_audio(jfk_bytes, AudioLimits(max_audio_seconds=12)).size == 176_000


def test_truncated_file_is_rejected_or_shorter(jfk_bytes):
    try:
        waveform = decode_audio(jfk_bytes[: len(jfk_bytes) // 2])
    except AudioError as e:
        assert "audio" in str(e)
    else:
        assert waveform.size < 11 * 16_000


def test_waveform_checks():
    assert check_waveform(np.zeros(16_000, np.float64)).dtype == np.float32
    for bad in (np.zeros((2, 100), np.float32), np.zeros(10, np.int16), np.zeros(0, np.float32),
                np.array([0.0, np.nan], np.float32)):
        with pytest.raises(AudioError):
            check_waveform(bad)
    with pytest.raises(AudioError, match="too long"):
        check_waveform(np.zeros(16_000 * 3, np.float32), AudioLimits(max_audio_seconds=2))


@pytest.mark.parametrize("uri", [
    "/etc/passwd", "../../etc/passwd", "file:///etc/passwd", "http://127.0.0.1:54322/x.wav",
    "http://169.254.169.254/latest/meta-data", "https://example.com/a.wav", "ftp://example.com/a.wav",
])
def test_uris_are_refused_by_default(uri):
    with pytest.raises(ForbiddenSource, match="uri refused"):
        read_source(uri, AudioSources())


def test_allowed_directory_is_read_and_symlinks_out_of_it_are_refused(tmp_path, jfk_bytes):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "jfk.flac").write_bytes(jfk_bytes)
    (allowed / "escape.flac").symlink_to("/etc/passwd")
    sources = AudioSources(allowed_audio_dirs=(str(allowed),))
    assert read_source(str(allowed / "jfk.flac"), sources) == jfk_bytes
    assert read_source(f"file://{allowed}/jfk.flac", sources) == jfk_bytes
    for uri in (str(allowed / "escape.flac"), f"{allowed}/../allowed/../../etc/passwd"):
        with pytest.raises(ForbiddenSource):
            read_source(uri, sources)


def test_allowed_url_prefix_is_the_only_one_fetched():
    sources = AudioSources(allowed_audio_urls=("https://media.example.com/",))
    with pytest.raises(ForbiddenSource):
        read_source("https://media.example.com.evil.test/a.wav", sources)


def test_load_audio_prefers_bytes_then_waveform_and_passes_text_only(jfk_bytes):
    limits, sources = AudioLimits(), AudioSources()
    assert load_audio(SpeechImageDoc(audio=to_blob(jfk_bytes)), sources, limits).size == 176_000
    assert load_audio(SpeechImageDoc(waveform=np.zeros(800, np.float32)), sources, limits).size == 800
    assert load_audio(SpeechImageDoc(prompt="a cat"), sources, limits) is None
    with pytest.raises(InvalidRequest):
        load_audio(SpeechImageDoc(uri="/etc/passwd"), sources, limits)


# Demuxers that open other files, URLs or sockets, sent as "audio". FFmpeg picks a demuxer from
# the bytes: a concat or HLS playlist names files to read, an SDP description opens RTP sockets.
# They must be refused as "not audio", whether what they name exists or not (the same message:
# the answer must not tell which files exist), and nothing named may be opened.

def concat(path) -> bytes:
    return f"ffconcat version 1.0\nfile {path}\n".encode()


def hls(entry) -> bytes:
    return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\n{entry}\n#EXT-X-ENDLIST\n".encode()


SDP = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 45004 RTP/AVP 0\n"


@pytest.fixture
def private_recording(tmp_path, monkeypatch, jfk_bytes):
    """A recording the server holds (private/meeting.flac under its working directory)."""
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "meeting.flac").write_bytes(jfk_bytes)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "private" / "meeting.flac"


@pytest.fixture
def web_server():
    """A loopback HTTP server that records every request it gets (none may arrive)."""
    import http.server
    import threading

    requested = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()


def refusal(data: bytes) -> str:
    with pytest.raises(AudioError) as raised:
        decode_audio(data)
    return str(raised.value)


@pytest.mark.parametrize("playlist", [
    lambda path: concat(path.relative_to(path.parent.parent)),  # a 45-byte playlist naming a server file
    lambda path: concat(path),
    lambda path: concat(f"file:{path}"),
    lambda path: hls(path),
    lambda path: hls(f"file://{path}"),
], ids=["concat-relative", "concat-absolute", "concat-file-url", "hls-path", "hls-file-url"])
def test_playlists_naming_server_files_are_not_audio_and_tell_nothing(private_recording, playlist):
    existing = refusal(playlist(private_recording))
    missing = refusal(playlist(private_recording.with_name("nothing-here.flac")))
    assert existing.startswith("not audio:") and "\n" not in existing
    assert existing == missing  # the same answer whether the named file exists or not


def test_playlists_naming_urls_fetch_nothing(web_server):
    url, requested = web_server
    for data in (hls(f"{url}/segment.flac"), concat(f"{url}/segment.flac"),
                 b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n" + f"{url}/variant.m3u8\n".encode()):
        assert refusal(data).startswith("not audio:")
    assert requested == []


def test_an_sdp_description_opens_no_socket():
    assert refusal(SDP).startswith("not audio:")


def test_a_playlist_behind_a_wav_name_in_an_allowed_directory_is_not_audio(private_recording):
    (private_recording.parent / "notes.wav").write_bytes(concat("private/meeting.flac"))
    sources = AudioSources(allowed_audio_dirs=(str(private_recording.parent),))
    with pytest.raises(AudioError, match="^not audio:"):
        load_audio(SpeechImageDoc(uri=str(private_recording.parent / "notes.wav")), sources, AudioLimits())


# Files that cost far more to open or decode than their size.
# A 1 Hz FLAC makes the resampler allocate gigabytes per frame; a MOV declaring 84 M samples per
# track makes FFmpeg build gigabytes of sample tables while opening it; a compressed MOV header
# (cmov) is a zlib bomb. Decoding runs in a worker process with a memory cap and a time limit.

MIN_MEM_FLAC = bytes.fromhex(  # 55 bytes: one 16384-sample FLAC frame at 1 Hz, total samples unknown
    "664c6143800000224000400000000d00000d000010f000000000b9d3412fc9b1d098be2db92e7f310ba4fff8ed08"
    "0000014c01207d39ee")


def box(kind: bytes, body: bytes) -> bytes:
    import struct

    return struct.pack(">I4s", 8 + len(body), kind) + body


def cmov_bomb(inflated: int) -> bytes:
    """A QuickTime file whose compressed movie header inflates to `inflated` bytes (zeros after a
    tiny movie header): about 1 KB of deflate per 1 MB."""
    import struct
    import zlib

    inner = box(b"moov", box(b"mvhd", b"\0" * 100))
    zeros = bytes(1 << 20)
    packer = zlib.compressobj(9)
    head = packer.compress(inner) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)  # after a full flush, every MiB of zeros
    end = packer.flush()[:-4]  # packs the same; the stream ends with the checksum of all of it
    count = (inflated - len(inner)) // len(zeros)
    checksum = zlib.adler32(inner)
    for _ in range(count):
        checksum = zlib.adler32(zeros, checksum)
    packed = head + block * count + end + struct.pack(">I", checksum)
    size = len(inner) + count * len(zeros)
    cmov = box(b"cmov", box(b"dcom", b"zlib") + box(b"cmvd", struct.pack(">I", size) + packed))
    return box(b"ftyp", b"qt  \0\0\0\0qt  ") + box(b"moov", cmov)


def sample_table_bomb(tracks: int, samples: int = 84_000_000) -> bytes:
    """An M4A whose tracks each declare `samples` samples of 2 bytes in one chunk."""
    import struct

    waveform = np.zeros(1600, np.float32)
    original = encode(waveform, 16_000, "m4a")

    def parse(data):
        offset, found = 0, []
        while offset + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[offset:offset + 8])
            found.append((kind, data[offset + 8:offset + size]))
            offset += size
        return found

    def rebuild(data, path):
        out = b""
        for kind, body in parse(data):
            if path and kind == path[0]:
                body = rebuild(body, path[1:]) if len(path) > 1 else stbl(body)
            out += box(kind, body)
        return out

    def stbl(body):
        changed = {b"stts": struct.pack(">III", 0, 1, samples) + struct.pack(">I", 2),
                   b"stsc": struct.pack(">II", 0, 1) + struct.pack(">III", 1, samples, 1),
                   b"stsz": struct.pack(">III", 0, 2, samples)}
        return b"".join(box(kind, changed.get(kind, part)) for kind, part in parse(body) if kind != b"stss")

    bombed = rebuild(original, [b"moov", b"trak", b"mdia", b"minf", b"stbl"])
    top = parse(bombed)
    moov = dict(top)[b"moov"]
    trak = next(body for kind, body in parse(moov) if kind == b"trak")
    others = b"".join(box(kind, body) for kind, body in parse(moov) if kind != b"trak")
    return b"".join(box(kind, others + box(b"trak", trak) * tracks if kind == b"moov" else body) for kind, body in top)


@pytest.fixture(scope="module")
def decoder():
    from speech2image.asr.audio import AudioDecoder

    sandboxed = AudioDecoder(AudioLimits())
    yield sandboxed
    sandboxed.close()


def test_a_sample_rate_below_8_khz_is_refused_before_decoding():
    with pytest.raises(AudioError, match=r"sample rate 1 Hz is outside 8000\.\.max_sample_rate=192000"):
        decode_audio(MIN_MEM_FLAC)


@pytest.mark.parametrize("bomb", [lambda: cmov_bomb(2 << 30), lambda: sample_table_bomb(8)], ids=["cmov", "tables"])
def test_decoding_bombs_end_in_one_line_within_the_limits_and_the_decoder_keeps_serving(decoder, bomb, jfk_bytes):
    import time

    data = bomb()
    assert len(data) < 3_000_000
    started = time.monotonic()
    with pytest.raises(AudioError) as refused:
        decoder.decode(data)
    assert time.monotonic() - started < AudioLimits().decode_timeout_seconds + 5
    assert "\n" not in str(refused.value)
    assert decoder.decode(jfk_bytes).size == 11 * 16_000


def test_a_decode_over_its_time_is_stopped():
    from speech2image.asr.audio import AudioDecoder

    noise = (np.random.default_rng(0).standard_normal(16_000 * 590) * 0.1).astype(np.float32)
    long_file = encode(noise, 16_000, "flac")  # 590 s: about a quarter of a second to decode
    slow = AudioDecoder(AudioLimits(decode_timeout_seconds=0.001))
    try:
        with pytest.raises(AudioError, match=r"took longer than decode_timeout_seconds=0.001"):
            slow.decode(long_file)
    finally:
        slow.close()


def matroska_with_streams(count: int) -> bytes:
    """A Matroska file of `count` short silent PCM streams."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        streams = [container.add_stream("pcm_s16le", rate=16000, layout="mono") for _ in range(count)]
        for stream in streams:
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    return buffer.getvalue()


def test_a_file_declaring_more_than_8_streams_is_refused():
    """Every stream a file declares costs FFmpeg memory and work: at most 8 (`max_streams`)."""
    assert decode_audio(matroska_with_streams(8), AudioLimits()).shape == (1600,)
    with pytest.raises(AudioError, match="^not audio"):
        decode_audio(matroska_with_streams(9), AudioLimits())
