"""API keys: who may call the service.

A keys file holds one key per line (at least 16 characters, no spaces), or `sha256:HEX` (the
key's SHA-256, so the file need not hold secrets); a line starting with `#`, or text after
` #`, is a comment (a `#` inside a key is part of it). Keys are compared as their SHA-256 digests, in constant
time, against every known one; a key is never logged, traced or exported: a key id (the
first 8 hex digits of its digest) may label what it did.
"""

import hashlib
import hmac
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from ..errors import ConfigurationError

HEX_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
COMMENT = re.compile(r"(^|\s)#.*$")
MIN_KEY_CHARS = 16
MIN_PASSWORD_CHARS = 12


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key_digest: bytes) -> str:
    """What may name a key in logs and metrics: the first 8 hex digits of its digest."""
    return key_digest.hex()[:8]


def entries(path: str, what: str) -> Iterator[tuple[int, str]]:
    """The entries of a keys or users file (`what`), with their line numbers: comments and blank
    lines left out."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigurationError(f"cannot read the {what} file {path}: {e.strerror}") from e
    for number, line in enumerate(lines, 1):
        entry = COMMENT.sub("", line).strip()
        if entry:
            yield number, entry


def secret_digest(secret: str, where: str) -> bytes:
    """The digest a secret is compared as: `sha256:HEX` as written, else the secret's SHA-256."""
    if not secret.startswith("sha256:"):
        return digest(secret)
    match = HEX_DIGEST.fullmatch(secret.lower())
    if not match:
        raise ConfigurationError(f"{where}: sha256: needs 64 hex digits")
    return bytes.fromhex(match.group(1))


class ApiKeys:
    """The digests of the keys that may call the service."""

    def __init__(self, digests: list[bytes]):
        if not digests:
            raise ConfigurationError("the API keys file holds no key; one key (or sha256:HEX) per line")
        self._digests = digests

    @classmethod
    def load(cls, path: str) -> "ApiKeys":
        digests = []
        for number, entry in entries(path, "API keys"):
            where = f"line {number} of the API keys file"
            if not entry.startswith("sha256:") and (len(entry) < MIN_KEY_CHARS or any(c.isspace() for c in entry)):
                raise ConfigurationError(f"{where}: a key needs {MIN_KEY_CHARS} characters or more and no spaces; "
                                         "make one with: openssl rand -hex 32")
            digests.append(secret_digest(entry, where))
        return cls(digests)

    def check(self, authorization: Optional[str]) -> Optional[str]:
        """The key id of an `Authorization: Bearer KEY` value that holds a known key, else None."""
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = digest(key.strip())
        known = False
        for candidate in self._digests:  # every one, so the time taken tells nothing
            known |= hmac.compare_digest(presented, candidate)
        return key_id(presented) if known else None


class Users:
    """Who may open the page (ui.py --users): `user:password` or `user:sha256:HEX` lines, read as
    the keys file is (`entries`, `secret_digest`: a `#` inside a password is part of it); a password
    needs 12 characters or more (a digest's password cannot be measured); passwords compared as
    SHA-256 digests in constant time, never kept in the clear."""

    def __init__(self, digests: dict[str, bytes]):
        if not digests:
            raise ConfigurationError("the users file holds no user; write user:password lines")
        self._digests = digests

    @classmethod
    def load(cls, path: str) -> "Users":
        digests = {}
        for number, entry in entries(path, "users"):
            where = f"line {number} of the users file"
            user, _, secret = entry.partition(":")
            if not user or not secret:
                raise ConfigurationError(f"{where}: write user:password (or user:sha256:HEX); a user without a "
                                         "password is refused")
            if not secret.startswith("sha256:") and len(secret) < MIN_PASSWORD_CHARS:
                raise ConfigurationError(f"{where}: a password needs {MIN_PASSWORD_CHARS} characters or more (or "
                                         "write user:sha256:HEX, the SHA-256 of a password whose length is then "
                                         "yours to check)")
            digests[user] = secret_digest(secret, where)
        return cls(digests)

    def check(self, user: str, password: str) -> bool:
        """gradio's login check: a known user with its password."""
        expected = self._digests.get(user, b"\0" * 32)
        return hmac.compare_digest(digest(password), expected) and user in self._digests

