"""`python app.py` and `python ui.py` as their own process groups, the way users run them.

Start-up fails fast: the launcher raises as soon as the program exits, with the end of its
log, and kills it when it is not ready in time; it never blocks on a silent process.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from .ports import free_port, free_port_pair
from .speech import ROOT

READY = "speech2image ready on"


class Service:
    """A program started in its own process group; ready once a stdout line matches `ready`. Its
    stdout lines are kept in `output`, its stderr in the file `log`."""

    name = "the program"

    def __init__(self, command: list[str], ready: Callable[[str], bool], *, env: Optional[dict] = None,
                 ready_seconds: float = 300, wrapped: bool = False):
        self.wrapped = wrapped
        self.log = Path(tempfile.mkstemp(prefix="speech2image-", suffix=".log")[1])
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True,  # what it spawns goes with it (kill)
            )
        self.output: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()  # a full pipe would block the program
        try:
            self.ready_line = self.wait_for_line(ready, ready_seconds)
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)  # the program closed its stdout: it ended

    def wait_for_line(self, matches: Callable[[str], bool], seconds: float) -> str:
        """The next stdout line that `matches`; AssertionError (with the log's end) if the program
        ends first or no such line comes within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.name} printed no such line in {seconds:.0f} s; its log ends:\n"
                                     f"{self.tail()}") from None
            if line is None:
                self.process.wait(timeout=30)
                raise AssertionError(f"{self.name} exited ({self.process.returncode}); its log ends:\n{self.tail()}")
            if matches(line):
                return line.strip()

    def program_pid(self) -> int:
        """The program's pid: the process started, or the one its wrapper (strace …) started."""
        if not self.wrapped:
            return self.process.pid
        import psutil

        return psutil.Process(self.process.pid).children()[0].pid

    def tail(self, lines: int = 20) -> str:
        return "\n".join((self.stderr().splitlines() + self.output)[-lines:])

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, seconds: float = 60) -> int:
        """SIGTERM, as an operator stops it; its exit code (AssertionError if it outlives `seconds`)."""
        os.kill(self.program_pid(), signal.SIGTERM)
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {seconds:.0f} s of SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing it started is left behind."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.kill()
        self.log.unlink(missing_ok=True)


class App(Service):
    """app.py ARGS (--offline unless `offline=False`) on a free port pair: gRPC on `port`, HTTP on
    `port + 1`; ready after its ready line and, with monitoring, its `metrics:` line. `wrapper`:
    a command that runs it (strace …)."""

    name = "app.py"

    def __init__(self, *args: str, offline: bool = True, env: Optional[dict] = None, ready_seconds: float = 300,
                 wrapper: tuple = ()):
        self.port = free_port_pair()
        command = [*wrapper, sys.executable, str(ROOT / "app.py"), *(["--offline"] if offline else []),
                   "--port", str(self.port), *args]
        super().__init__(command, lambda line: line.startswith(READY), env=env, ready_seconds=ready_seconds,
                         wrapped=bool(wrapper))
        self.metrics_urls: list[str] = []
        if "--no-monitoring" not in args:
            try:
                self.metrics_urls = self.wait_for_line(lambda line: line.startswith("metrics:"), 30).split()[1:]
            except BaseException:
                self.kill()
                raise

    def announced_replicas(self, executor: str, count: int, seconds: float = 60) -> list[int]:
        """`replica_pids(executor)` once `count` have announced themselves (each a moment after it
        listens), or when `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while len(pids := self.replica_pids(executor)) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        return pids

    def replica_pids(self, executor: str) -> list[int]:
        """The pids of `executor`'s replicas that announced themselves ("… serving (pid N)") and live."""
        import psutil

        announced = re.findall(rf"{executor} executor \(.*?\) serving \(pid (\d+)\)", self.stderr())
        alive = []
        for pid in sorted({int(p) for p in announced}):
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                continue
        return alive


class Page(Service):
    """ui.py talking to the Flow at `flow` ("HOST:PORT"), on a free port; ready when gradio serves.
    Its temporary files (its own folder for gradio's) go in `temp`, removed with it: killed, ui.py
    cannot remove its folder itself."""

    name = "ui.py"

    def __init__(self, flow: str, *args: str, env: Optional[dict] = None):
        port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="speech2image-page-"))
        try:
            super().__init__([sys.executable, str(ROOT / "ui.py"), "--host", flow, "--port", str(port), *args],
                             lambda line: "Running on local URL" in line, env={"TMPDIR": str(self.temp), **(env or {})},
                             ready_seconds=120)
        except BaseException:
            shutil.rmtree(self.temp, ignore_errors=True)
            raise
        self.url = f"http://127.0.0.1:{port}"

    def __exit__(self, *_):
        super().__exit__()
        shutil.rmtree(self.temp, ignore_errors=True)


def run_client(*args, timeout: float = 300, cwd=None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """`python client.py ARGS` as a process, the way users run it."""
    return subprocess.run([sys.executable, str(ROOT / "client.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})
