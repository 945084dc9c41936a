"""A private certificate authority, made with openssl for a test, and a certificate it signed."""

import subprocess
from pathlib import Path


def private_ca(directory: Path) -> Path:
    """`directory` with ca.pem (the authority) and server.pem/server.key (localhost and 127.0.0.1)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=speech2image test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "names.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "names.ext", "-out", "server.pem")
    return directory
