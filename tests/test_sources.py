"""Where the server may read audio a document names (`uri`), and the executor arguments that say so:
closed unless the operator opens it, and exactly as wide as the operator wrote."""

import http.server
import os
import ssl
import subprocess
import threading
import time

import pytest

from speech2image.asr.audio import read_source
from speech2image.asr.options import AudioSources
from speech2image.errors import ConfigurationError, ForbiddenSource, InvalidRequest
from speech2image.options import configure

# --- executor arguments: a string is not a list, a bool is not a number, a typo is not ignored

@pytest.mark.parametrize("arguments,message", [
    ({"allowed_audio_dirs": "/srv/audio"}, "allowed_audio_dirs='/srv/audio' must be a list of strings"),
    ({"allowed_audio_urls": "https://media.example.com/"}, "allowed_audio_urls='https://media.example.com/' must be a list"),
    ({"allowed_audio_dirs": ["/srv/audio", 7]}, "allowed_audio_dirs=['/srv/audio', 7] must be a list of strings"),
    ({"max_documents": True}, "max_documents=True must be an integer"),
    ({"max_audio_seconds": "600"}, "max_audio_seconds='600' must be a number"),
    ({"vad_filter": 1}, "vad_filter=1 must be true or false"),
    ({"backend": ["faster-whisper"]}, "backend=['faster-whisper'] must be a string"),
    ({"alowed_audio_dirs": ["/srv/audio"]}, "unknown executor argument 'alowed_audio_dirs'"),
    ({"max_documents": 0}, "invalid max_documents=0: allowed 1..10000"),
    ({"allowed_audio_urls": ["https://user:secret@media.example.com/"]}, "allowed_audio_urls"),
    ({"allowed_audio_urls": ["ftp://media.example.com/"]}, "allowed_audio_urls"),
    ({"allowed_audio_networks": ["10.0.0.0/33"]}, "allowed_audio_networks"),
])
def test_executor_arguments_of_the_wrong_type_stop_start_up_with_one_line(arguments, message):
    from speech2image.asr.options import WhisperArguments

    with pytest.raises(ConfigurationError) as refused:
        configure(arguments, WhisperArguments)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_string_for_allowed_dirs_never_opens_the_root():
    """The case: `allowed_audio_dirs: /srv/audio` became a tuple of characters, `/` among them."""
    from speech2image.asr.options import WhisperArguments

    with pytest.raises(ConfigurationError):
        sources = configure({"allowed_audio_dirs": "/srv/audio"}, WhisperArguments)[0].sources
        read_source("/etc/hostname", sources)


def test_lists_from_yaml_become_tuples_and_jina_arguments_pass_through():
    from speech2image.asr.options import WhisperArguments

    arguments, rest = configure(
        {"allowed_audio_dirs": ["/srv/audio"], "max_audio_seconds": 60, "beam_size": 2, "metas": {"name": "x"}},
        WhisperArguments)
    assert arguments.sources.allowed_audio_dirs == ("/srv/audio",) and arguments.audio.max_audio_seconds == 60.0
    assert arguments.defaults.beam_size == 2 and rest == {"metas": {"name": "x"}}


# --- allowed directories: regular files only

def test_a_fifo_in_an_allowed_directory_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "stream.wav")  # opening it for reading would wait for a writer forever
    outcome = []

    def read():
        try:
            read_source(str(tmp_path / "stream.wav"), AudioSources(allowed_audio_dirs=(str(tmp_path),)))
        except InvalidRequest as e:
            outcome.append(str(e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert outcome and "not a regular file" in outcome[0]


def test_devices_in_an_allowed_directory_are_refused(tmp_path):
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    with pytest.raises(ForbiddenSource):  # the link resolves out of the directory
        read_source(str(tmp_path / "zero.wav"), AudioSources(allowed_audio_dirs=(str(tmp_path),)))
    with pytest.raises(InvalidRequest, match="not a regular file"):
        read_source("/dev/zero", AudioSources(allowed_audio_dirs=("/dev",)))


# --- allowed URLs: scheme, host, port and path prefix, parsed; private addresses only when listed

class Recorder(http.server.BaseHTTPRequestHandler):
    """Serves b"RIFF…" audio bytes at /audio/*, redirects /redirect, drips /slow; records every request."""

    requests: list = []

    def do_GET(self):
        type(self).requests.append((self.path, dict(self.headers)))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/audio/a.wav")
            self.end_headers()
        elif self.path.startswith("/slow"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(0.2)
        else:
            body = b"RIFF" + b"\0" * 60
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture
def web(tmp_path):
    Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


def sources(*urls, networks=(), timeout=30.0):
    return AudioSources(allowed_audio_urls=tuple(urls), allowed_audio_networks=tuple(networks),
                        url_timeout_seconds=timeout)


@pytest.mark.parametrize("uri", [
    "https://media.example.com.evil.net/a.wav",  # a longer host
    "https://media.example.com@169.254.169.254/a.wav",  # user info: the host is the metadata address
    "https://media.example.com:8443/audio/a.wav",  # another port
    "http://media.example.com/audio/a.wav",  # another scheme
    "https://media.example.com/audiobook/a.wav",  # outside the path prefix
    "https://media.example.com/audio/../private/a.wav",  # out of it again
    "https://media.example.com/audio/%2e%2e/private/a.wav",
    "https://MEDIA.example.com.:443\\@evil/a.wav",
])
def test_urls_are_matched_by_scheme_host_port_and_path_not_by_prefix(uri):
    with pytest.raises(ForbiddenSource, match="uri refused"):
        read_source(uri, sources("https://media.example.com/audio/"))



@pytest.mark.parametrize("allowed", [(), ("https://media.example.com/audio/",)])
def test_messages_never_repeat_a_urls_secrets(web, allowed):
    """A signed URL's query (and any user info) is a secret: refused, or failed while fetched, the
    message shows the URL without them."""
    url, _ = web
    for uri, open_to in (("https://user:pa55word@media.example.com/private/a.wav?X-Signature=s3cr3t#t", allowed),
                         (f"{url}/redirect/a.wav?X-Signature=s3cr3t", (f"{url}/",))):  # fetched, then refused (302)
        with pytest.raises(InvalidRequest) as refused:
            read_source(uri, sources(*open_to, networks=["127.0.0.0/8"]))
        message = str(refused.value)
        assert "s3cr3t" not in message and "pa55word" not in message and "/a.wav" in message, message

def test_a_host_on_a_private_address_is_refused_unless_its_network_is_listed(web):
    url, _ = web
    with pytest.raises(ForbiddenSource, match="127.0.0.1 resolves to 127.0.0.1, a loopback address"):
        read_source(f"{url}/audio/a.wav", sources(f"{url}/audio/"))
    port = url.rsplit(":", 1)[1]
    with pytest.raises(ForbiddenSource, match="loopback address"):  # a name that resolves to it is no different
        read_source(f"http://localhost:{port}/audio/a.wav", sources(f"http://localhost:{port}/audio/"))
    assert Recorder.requests == []
    assert read_source(f"{url}/audio/a.wav", sources(f"{url}/audio/", networks=["127.0.0.0/8"])).startswith(b"RIFF")


def test_redirects_are_refused_not_decoded(web):
    url, _ = web
    with pytest.raises(InvalidRequest, match="HTTP 302"):
        read_source(f"{url}/redirect/a.wav", sources(f"{url}/", networks=["127.0.0.0/8"]))


def test_one_time_limit_covers_the_whole_download(web):
    url, _ = web
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="url_timeout_seconds=1"):  # 10 bytes every 0.2 s: each read is quick
        read_source(f"{url}/slow/a.wav", sources(f"{url}/", networks=["127.0.0.0/8"], timeout=1))
    assert time.monotonic() - started < 10  # the whole body takes 20 s: a limit per read would wait for all of it


def test_no_proxy_or_netrc_from_the_environment(web, tmp_path, monkeypatch):
    url, _ = web
    host = url.split("//")[1].split(":")[0]
    (tmp_path / ".netrc").write_text(f"machine {host} login operator password hunter2\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: a proxied fetch fails
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert read_source(f"{url}/audio/a.wav", sources(f"{url}/audio/", networks=["127.0.0.0/8"])).startswith(b"RIFF")
    [(_, headers)] = Recorder.requests
    assert "Authorization" not in headers


def test_https_checks_the_certificate_of_the_host_named(tmp_path, monkeypatch):
    """TLS to a pinned address still verifies the certificate against the host name."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        allowed = sources(f"https://localhost:{port}/audio/", networks=["127.0.0.0/8", "::1/128"])
        with pytest.raises(InvalidRequest, match="certificate"):  # not a root this machine trusts
            read_source(f"https://localhost:{port}/audio/a.wav", allowed)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # now it is
        assert read_source(f"https://localhost:{port}/audio/a.wav", allowed).startswith(b"RIFF")
    finally:
        server.shutdown()


def test_request_limits_are_configured_like_every_other_argument():
    from speech2image.imaging.options import DiffusionArguments

    arguments, rest = configure({"max_documents": 2, "request_timeout_seconds": 5}, DiffusionArguments)
    assert (arguments.request.max_documents, arguments.request.request_timeout_seconds) == (2, 5.0) and rest == {}
