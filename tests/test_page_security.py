"""The page's own defences (ui.py): its login, its uploads, the host names and origins it answers,
the routes it does not serve, where it keeps files, where it reads the Flow's key. ui.py runs as a
process with no Flow behind it (none of this needs one), called with requests and httpx."""

import hashlib
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests

from tests.support.app import Page
from tests.support.metrics import wait_until
from tests.support.ports import free_port
from tests.support.speech import ROOT
from tests.support.tls import private_ca

pytestmark = pytest.mark.flow  # starts ui.py

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
def open_page():
    """ui.py as it starts by default (loopback, no login), also served as page.example."""
    with Page(NOWHERE, "--allowed-hosts", "page.example", "--max-upload-bytes", str(UPLOAD_BYTES)) as page:
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


# the login


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


def test_tls_takes_a_certificate_and_its_key(tls):
    done = ui_py("--tls-cert", str(tls / "server.pem"))
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "ui.py: --tls-cert and --tls-key go together: the certificate (PEM) and its private key"], done.stderr


def test_the_login_is_served_over_tls_and_its_cookies_are_secure(login_page, tls):
    ca = ssl.create_default_context(cafile=tls / "ca.pem")
    assert httpx.get(f"{login_page.url}/config", verify=ca).status_code == 401
    answer = log_in(login_page.url, PASSWORD, httpx.Client(verify=ca))
    assert answer.status_code == 200
    cookies = answer.headers.get_list("set-cookie")
    assert len(cookies) == 2, cookies  # gradio's session cookie and its fallback
    for cookie in cookies:
        assert "secure" in [attribute.strip().lower() for attribute in cookie.split(";")], cookie
    assert httpx.get(f"{login_page.url}/config", headers=cookie_header(answer), verify=ca).status_code == 200
    with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
        httpx.get(login_page.url.replace("https://", "http://"), timeout=30)


def test_after_five_failed_logins_an_address_is_refused_without_being_checked(login_page, tls):
    def client(address: str) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(verify=ssl.create_default_context(cafile=tls / "ca.pem"),
                                                       local_address=address))

    guesser = client("127.0.0.2")
    answers = [log_in(login_page.url, f"guess-number-{k:04d}", guesser).status_code for k in range(20)]
    assert answers == [400] * 5 + [429] * 15  # 5 checked and refused, then refused unchecked
    right = log_in(login_page.url, PASSWORD, guesser)  # the right password is not even checked now
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    assert right.text.startswith("too many failed logins from 127.0.0.2: try again in ")
    assert log_in(login_page.url, PASSWORD, client("127.0.0.3")).status_code == 200  # another address is not


def test_a_local_client_cannot_pose_as_other_addresses_to_the_throttle(users):
    """uvicorn takes X-Forwarded-For from 127.0.0.1 unless told otherwise: a guesser there named a
    new address each time and was never throttled."""
    with Page(NOWHERE, "--users", str(users)) as page:
        answers = [httpx.post(f"{page.url}/login", data={"username": "alice", "password": f"guess-number-{k:04d}"},
                              headers={"X-Forwarded-For": f"10.0.{k}.1"}, timeout=30).status_code for k in range(8)]
    assert answers == [400] * 5 + [429] * 3


def test_failed_logins_wait_longer_each_time_one_attempt_at_a_time():
    import ui

    now = [0.0]
    failed = ui.FailedLogins(free=5, first_delay=60, longest_delay=3600, clock=lambda: now[0])
    for _ in range(5):
        assert failed.begin("10.0.0.1") == 0
        failed.end("10.0.0.1", succeeded=False)
    assert failed.begin("10.0.0.1") == 60
    now[0] += 60
    assert failed.begin("10.0.0.1") == 0
    assert failed.begin("10.0.0.1") > 0  # one attempt at a time: a second while the first is checked waits
    failed.end("10.0.0.1", succeeded=False)
    assert failed.begin("10.0.0.1") == 120  # twice as long after the next failure
    for _ in range(20):
        now[0] += 3600
        assert failed.begin("10.0.0.1") == 0
        failed.end("10.0.0.1", succeeded=False)
    assert failed.begin("10.0.0.1") == 3600  # never longer than the longest delay
    assert failed.begin("10.0.0.2") == 0  # per address
    failed.end("10.0.0.2", succeeded=True)
    now[0] += 3600
    assert failed.begin("10.0.0.1") == 0
    failed.end("10.0.0.1", succeeded=True)  # a success forgets the failures
    for _ in range(5):
        assert failed.begin("10.0.0.1") == 0
        failed.end("10.0.0.1", succeeded=False)


def test_session_tokens_are_forgotten_when_their_time_is_up():
    import ui

    now = [0.0]
    tokens = ui.SessionTokens(3600, clock=lambda: now[0])
    tokens["first"] = "alice"
    now[0] = 1800
    tokens["second"] = "bob"
    assert tokens.get("first") == "alice" and "second" in tokens
    now[0] = 3600
    assert tokens.get("first") is None and "first" not in tokens and list(tokens) == ["second"]
    assert tokens.get(None) is None  # gradio asks for the token of a request without a cookie
    del tokens["second"]
    assert len(tokens) == 0


def test_a_session_ends_after_session_hours(users):
    with Page(NOWHERE, "--users", str(users), "--session-hours", "0.0005") as page:  # 1.8 s
        answer = log_in(page.url, PASSWORD)
        assert answer.status_code == 200
        wait_until(lambda: httpx.get(f"{page.url}/config", headers=cookie_header(answer)).status_code == 401, 60,
                   "the session's end")
        assert log_in(page.url, PASSWORD).status_code == 200  # and a new one begins


# uploads


def test_an_upload_of_more_than_one_file_is_refused_and_nothing_of_it_kept(open_page):
    assert upload(open_page.url, [("one.wav", b"1" * 100)]).status_code == 200
    answer = upload(open_page.url, [("first.wav", b"2" * 100), ("second.wav", b"3" * 100)])
    assert answer.status_code == 413 and answer.text == (
        f"an upload holds one file of at most {UPLOAD_BYTES} bytes (ui.py --max-upload-bytes)\n")
    assert not stored(open_page.temp, b"2" * 100) and not stored(open_page.temp, b"3" * 100)


def test_an_upload_is_counted_as_it_arrives_not_by_its_content_length(open_page):
    """A form whose bytes are in a field, not a file (gradio limits files only), sent in chunks
    with no Content-Length."""
    boundary = "speech2image-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"small.wav\"\r\n\r\n"
            f"{'4' * 100}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"padding\"\r\n\r\n"
            f"{'5' * 200_000}\r\n--{boundary}--\r\n").encode()

    def chunks():
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    answer = requests.post(f"{open_page.url}/gradio_api/upload", data=chunks(), timeout=30,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413, answer.text
    assert not stored(open_page.temp, b"4" * 100)


# routes, files and the Flow's key


def test_gradios_monitoring_is_not_served(open_page):
    for path in ("/monitoring", "/monitoring/summary", "/monitoring/anything"):
        assert requests.get(f"{open_page.url}{path}", timeout=30).status_code == 404, path


def test_uploads_are_kept_where_only_this_user_may_look(open_page):
    [kept] = upload(open_page.url, [("private.wav", b"6" * 100)]).json()
    kept = Path(kept)
    assert kept.read_bytes() == b"6" * 100
    for path in (kept, kept.parent, kept.parent.parent):  # the file, its folder, gradio's folder
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path}: {stat.filemode(path.stat().st_mode)}"


def test_the_pages_folder_goes_when_it_stops():
    with Page(NOWHERE) as page:
        [kept] = upload(page.url, [("gone.wav", b"9" * 100)]).json()
        [folder] = page.temp.glob("speech2image-ui-*")
        assert Path(kept).is_relative_to(folder)
        assert page.terminate() == 0  # SIGTERM, as a service manager stops it
        assert not folder.exists()



def test_the_flows_key_is_read_from_the_environment_or_a_file_and_on_the_command_line_it_is_warned_about(
        tmp_path, monkeypatch, capsys):
    import ui
    from speech2image.errors import ConfigurationError

    monkeypatch.setenv("SPEECH2IMAGE_API_KEY", "key-from-the-environment")
    assert ui.flow_api_key(ui.parse_args([])) == "key-from-the-environment"
    key_file = tmp_path / "flow.key"
    key_file.write_text("key-from-a-file\n")
    assert ui.flow_api_key(ui.parse_args(["--api-key-file", str(key_file)])) == "key-from-a-file"
    assert capsys.readouterr().err == ""
    assert ui.flow_api_key(ui.parse_args(["--api-key", "key-in-ps"])) == "key-in-ps"
    assert capsys.readouterr().err.splitlines() == [
        "ui.py: --api-key shows the Flow's key to every local user (ps); use $SPEECH2IMAGE_API_KEY or "
        "--api-key-file FILE"]
    with pytest.raises(ConfigurationError, match="^cannot read the Flow's key file .*nothing.key"):
        ui.flow_api_key(ui.parse_args(["--api-key-file", str(tmp_path / "nothing.key")]))
    key_file.write_text("\n")
    with pytest.raises(ConfigurationError, match="^the Flow's key file .*flow.key is empty"):
        ui.flow_api_key(ui.parse_args(["--api-key-file", str(key_file)]))


# other sites' pages in the user's browser


def test_a_host_name_the_page_is_not_served_under_is_refused(open_page):
    """DNS rebinding: a site whose name comes to resolve to 127.0.0.1 reads the page as its own."""
    port = open_page.url.rsplit(":", 1)[1]
    for host in ("rebind.evil.example", f"rebind.evil.example:{port}", f"localhost.evil.example:{port}", ""):
        answer = requests.get(f"{open_page.url}/config", headers={"Host": host}, timeout=30)
        assert answer.status_code == 421, (host, answer.status_code)
        assert answer.text == "this page is not served under that host name (ui.py --allowed-hosts NAME)\n"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "page.example", f"PAGE.example.:{port}"):
        assert requests.get(f"{open_page.url}/config", headers={"Host": host}, timeout=30).status_code == 200, host


def test_another_sites_page_may_not_post(open_page):
    for origin in ("http://evil.example", "null", f"http://localhost:{free_port()}"):
        answer = upload(open_page.url, [("from-elsewhere.wav", b"7" * 100)], headers={"Origin": origin})
        assert answer.status_code == 403 and answer.text == "requests from another site's page are refused\n", origin
    assert not stored(open_page.temp, b"7" * 100)
    assert upload(open_page.url, [("from-here.wav", b"8" * 100)], headers={"Origin": open_page.url}).status_code == 200
    assert requests.get(f"{open_page.url}/config", headers={"Origin": "http://evil.example"}, timeout=30).ok
