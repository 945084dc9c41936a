"""The page's own defences (ui.py): its login, its uploads, the host names and origins it answers,
the routes it does not serve, where it keeps files, where it reads the Flow's key. ui.py runs as a
process with no Flow behind it (none of this needs one), called with requests and httpx."""

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests

from tests.support.app import Page
from tests.support.ports import free_port
from tests.support.speech import ROOT
from tests.support.tls import private_ca

NOWHERE = f"localhost:{free_port()}"  # no Flow: the page starts without one
PASSWORD = "correct-horse-battery"
UPLOAD_BYTES = 1000  # the page's --max-upload-bytes here


def ui_py(*args: str) -> subprocess.CompletedProcess:
    """`python ui.py ARGS` that is expected to stop at once."""
    return subprocess.run([sys.executable, "ui.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return private_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    path = tmp_path_factory.mktemp("users") / "users.txt"
    path.write_text(f"alice:{PASSWORD}\n")
    return path


@pytest.fixture(scope="module")
def open_page(tmp_path_factory):
    """ui.py as it starts by default (loopback, no login), also served as page.example; its
    temporary files in `open_page.temp`."""
    temp = tmp_path_factory.mktemp("tmp")
    with Page(NOWHERE, "--allowed-hosts", "page.example", "--max-upload-bytes", str(UPLOAD_BYTES),
              env={"TMPDIR": str(temp)}) as page:
        page.temp = temp
        yield page


@pytest.fixture(scope="module")
def login_page(users, tls):
    """ui.py with a login, over TLS."""
    with Page(NOWHERE, "--users", str(users), "--tls-cert", str(tls / "server.pem"),
              "--tls-key", str(tls / "server.key")) as page:
        page.url = page.url.replace("http://127.0.0.1", "https://localhost")
        yield page


def log_in(url: str, password: str, client=httpx) -> httpx.Response:
    return client.post(f"{url}/login", data={"username": "alice", "password": password}, timeout=30)


def cookie_header(answer: httpx.Response) -> dict:
    """The Cookie header a browser sends back after `answer`."""
    return {"cookie": "; ".join(line.split(";")[0] for line in answer.headers.get_list("set-cookie"))}


def upload(url: str, files: list, **kwargs) -> requests.Response:
    return requests.post(f"{url}/gradio_api/upload", files=[("files", file) for file in files], timeout=30, **kwargs)


def stored(directory: Path, payload: bytes) -> bool:
    """Whether a file under `directory` holds `payload`."""
    return any(path.is_file() and path.read_bytes() == payload for path in directory.rglob("*"))


# 5. the login


def test_a_short_password_in_the_users_file_stops_the_page_with_one_line(tmp_path):
    from speech2image.api.keys import Users
    from speech2image.errors import ConfigurationError

    users = tmp_path / "users.txt"
    users.write_text(f"alice:{PASSWORD}\nbob:eleven-char\ncarol:sha256:{hashlib.sha256(b'x').hexdigest()}\n")
    with pytest.raises(ConfigurationError, match="^line 2 of the users file: a password needs 12 characters or more"):
        Users.load(str(users))
    done = ui_py("--users", str(users))
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "ui.py: line 2 of the users file: a password needs 12 characters or more (or write user:sha256:HEX, the "
        "SHA-256 of a password whose length is then yours to check)"], done.stderr
    users.write_text(f"alice:{PASSWORD}\ncarol:sha256:{hashlib.sha256(b'x').hexdigest()}\n")  # a digest is taken
    login = Users.load(str(users))
    assert login.check("alice", PASSWORD) and login.check("carol", "x")
