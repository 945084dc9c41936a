"""No traffic leaves the machine that the user did not ask for: every connection attempt and name
lookup of app.py (its gateway and executors), client.py and ui.py, recorded by an audit hook in
each Python process, stays on loopback; and so does every socket app.py's processes open from
native code (the model libraries: ONNX Runtime, CTranslate2, PyTorch), which strace sees."""

import ast
import os
import re
import shutil

import pytest

from tests.support.app import App, Page, run_client
from tests.support.speech import ROOT, SPEECH

pytestmark = pytest.mark.flow

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}


def local(event: str, target) -> bool:
    if event == "socket.getaddrinfo":
        return target is None or str(target).lower() in LOCAL_NAMES or str(target).startswith("127.")
    if isinstance(target, (str, bytes)):  # a Unix socket path
        return True
    host = str(target[0])
    return host in LOCAL_NAMES or host.startswith("127.")


def native_outside(strace_log) -> list[str]:
    """The non-loopback internet addresses of the connect/sendto calls strace recorded."""
    addresses = re.findall(r'(?:inet_addr|inet_pton\(AF_INET6, )\("([^"]+)"', strace_log.read_text())
    return sorted({a for a in addresses if not (a.startswith("127.") or a in ("::1", "0.0.0.0", "::"))})


def test_nothing_but_loopback_from_the_server_the_client_and_the_page(tmp_path):
    log, native = tmp_path / "network.log", tmp_path / "strace.log"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests" / "support" / "network_audit"),
                                                       os.environ.get("PYTHONPATH")])),
           "SPEECH2IMAGE_NETWORK_LOG": str(log)}
    strace = shutil.which("strace")  # only these calls stop the processes (seccomp), so it runs near full speed
    wrapper = (strace, "--seccomp-bpf", "-f", "-e", "trace=connect,sendto,sendmsg", "-o", str(native)) if strace else ()
    with App(env=env, wrapper=wrapper) as app:
        done = run_client(SPEECH / "prompt4.wav", "--host", f"localhost:{app.port}", "--width", 32, "--steps", 1,
                          "--out", tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        with Page(f"localhost:{app.port}", env=env):
            pass
        app.terminate()
    events = [line.split("\t") for line in log.read_text().splitlines()]
    started = {pid for pid, _, target in events if target == "'start'"}
    assert len(started) >= 6  # app.py, its gateway, two executors, client.py, ui.py (and their helpers)
    outside = sorted({f"{event} {target}" for _, event, target in events
                      if target != "'start'" and not local(event, ast.literal_eval(target))})
    assert outside == [], outside
    if strace:  # (Debian's strace; without it, the audit hook above only)
        assert native_outside(native) == []  # e.g. ONNX Runtime's telemetry: DNS to the resolver, then HTTPS
