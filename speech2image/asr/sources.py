"""Audio a document names by `uri`: read only where the operator allowed (:class:`AudioSources`).

A file must be a regular file inside an allowed directory once symlinks are resolved. A URL
must match an allowed one by scheme, host, port and path prefix; its host must resolve to
public addresses (or into a network the operator listed), and the connection goes to the
address that was checked, so a name cannot be re-pointed between check and fetch. The
download has one time limit from connection to last byte, follows no redirect and reads no
proxy or .netrc setting. Messages never repeat a URL's query string (signed URLs are secrets).
"""

import http.client
import ipaddress
import os
import socket
import ssl
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import AudioError, ForbiddenSource
from ..limits import AudioLimits
from .options import AudioSources

REFUSED = "send the audio bytes in the document instead"


def shown(uri: str) -> str:
    """A uri as messages show it: without user info, query or fragment."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        return repr(uri.split("?")[0])
    return repr(f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}")


def read_source(uri: str, sources: AudioSources, limits: AudioLimits = AudioLimits()) -> bytes:
    """The bytes a `uri` names, if `sources` allow them."""
    if "\x00" in uri:
        raise ForbiddenSource(f"uri refused: it holds a NUL byte; {REFUSED}")
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
    except ValueError as e:  # e.g. an invalid IPv6 literal
        raise ForbiddenSource(f"uri refused: it is not a valid path or URL; {REFUSED}") from e
    if scheme in ("http", "https"):
        return _fetch(uri, sources, limits)
    if scheme not in ("", "file"):
        raise ForbiddenSource(f"uri refused: scheme {scheme!r} is not supported; {REFUSED}")
    return _read_file(uri, Path(parts.path if scheme == "file" else uri), sources, limits)


def _read_file(uri: str, path: Path, sources: AudioSources, limits: AudioLimits) -> bytes:
    resolved = Path(os.path.realpath(path))
    allowed = [Path(os.path.realpath(d)) for d in sources.allowed_audio_dirs]
    if not any(resolved.is_relative_to(d) for d in allowed):
        raise ForbiddenSource(f"uri refused: {shown(uri)} is not inside an allowed directory (allowed_audio_dirs); "
                              f"{REFUSED}")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: nor may a link swapped in since
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise AudioError(f"cannot read {shown(uri)}: {e.strerror}") from e
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise AudioError(f"cannot read {shown(uri)}: not a regular file (a FIFO, device or directory); {REFUSED}")
        if status.st_size > limits.max_audio_bytes:
            raise AudioError(f"audio too large: {status.st_size} bytes > max_audio_bytes={limits.max_audio_bytes}")
        data = file.read(limits.max_audio_bytes + 1)
    if len(data) > limits.max_audio_bytes:  # it grew since
        raise AudioError(f"audio too large: {shown(uri)} is over max_audio_bytes={limits.max_audio_bytes}")
    return data


def _allowed_url(uri: str, sources: AudioSources) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of a uri an allowed URL covers; ForbiddenSource otherwise."""
    refused = ForbiddenSource(f"uri refused: {shown(uri)} is not under an allowed URL (allowed_audio_urls); {REFUSED}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise refused from e
    path = unquote(parts.path) or "/"
    if "@" in parts.netloc or "\\" in uri or not parts.hostname or {".", ".."} & set(path.split("/")):
        raise refused
    scheme, host = parts.scheme.lower(), parts.hostname.rstrip(".")
    port = port or (443 if scheme == "https" else 80)
    for allowed_url in sources.allowed_audio_urls:
        allowed = urlsplit(allowed_url)
        prefix = allowed.path if allowed.path.endswith("/") else f"{allowed.path}/"
        if (scheme, host, port) == (allowed.scheme, allowed.hostname.rstrip("."),
                                    allowed.port or (443 if allowed.scheme == "https" else 80)) and \
                (path.startswith(prefix) or path == allowed.path):
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            return scheme, host, port, target
    raise refused


def _address(uri: str, host: str, port: int, sources: AudioSources) -> str:
    """The one address of `host` the fetch connects to: each address it resolves to must be public or
    in a network the operator listed."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except socket.gaierror as e:
        raise AudioError(f"cannot fetch {shown(uri)}: its host does not resolve ({e.strerror})") from e
    networks = [ipaddress.ip_network(n) for n in sources.allowed_audio_networks]
    for address in sorted(addresses):
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        kind = next((k for k, flag in (("a loopback", ip.is_loopback), ("a link-local", ip.is_link_local),
                                       ("a private", ip.is_private), ("a reserved", ip.is_reserved),
                                       ("a multicast", ip.is_multicast), ("an unspecified", ip.is_unspecified))
                     if flag), None)
        if kind and not any(ip in network for network in networks if network.version == ip.version):
            raise ForbiddenSource(f"uri refused: {shown(uri)}: {host} resolves to {ip}, {kind} address; an operator "
                                  f"may allow its network (allowed_audio_networks); {REFUSED}")
    return sorted(addresses)[0]


def _fetch(uri: str, sources: AudioSources, limits: AudioLimits) -> bytes:
    scheme, host, port, target = _allowed_url(uri, sources)
    address = _address(uri, host, port, sources)
    deadline = time.monotonic() + sources.url_timeout_seconds
    too_slow = AudioError(f"cannot fetch {shown(uri)}: it took longer than "
                          f"url_timeout_seconds={sources.url_timeout_seconds:g}")

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise too_slow
        return left

    try:
        sock = socket.create_connection((address, port), timeout=remaining())
        if scheme == "https":  # the certificate is checked against the host name, on the checked address
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port)
        connection.sock = sock
        try:
            connection.request("GET", target, headers={"Host": host if port in (80, 443) else f"{host}:{port}",
                                                       "User-Agent": "speech2image"})
            response = connection.getresponse()
            if response.status != 200:  # a redirect's body is not the audio: redirects are not followed
                raise AudioError(f"cannot fetch {shown(uri)}: HTTP {response.status} {response.reason} "
                                 "(redirects are not followed); allow-list the final URL")
            declared = response.length or 0  # Content-Length, when the server sent one
            if declared > limits.max_audio_bytes:
                raise AudioError(f"audio too large: {declared} bytes > max_audio_bytes={limits.max_audio_bytes}")
            body = bytearray()
            while True:
                sock.settimeout(remaining())
                chunk = response.read1(64 * 1024)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limits.max_audio_bytes:
                    raise AudioError(f"audio too large: {shown(uri)} is over max_audio_bytes={limits.max_audio_bytes}")
        finally:
            connection.close()
    except socket.timeout as e:
        raise too_slow from e
    except ssl.SSLCertVerificationError as e:
        raise AudioError(f"cannot fetch {shown(uri)}: its certificate is not valid for {host} "
                         f"({e.verify_message})") from e
    except (OSError, http.client.HTTPException) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise AudioError(f"cannot fetch {shown(uri)}: {reason}") from e
