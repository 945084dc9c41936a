"""A real Prometheus on loopback that scrapes a running Flow and serves its console dashboard.

`app.py --prometheus` starts one; tests and the benchmark use :func:`start` directly.
The binary is Debian's `prometheus` package (installed with apt-get when missing and
run as root), or any `prometheus` on PATH.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import yaml

from .dashboard import CONSOLE_PAGE
from .errors import Speech2ImageError

SCRAPE_INTERVAL_SECONDS = 1


class PrometheusError(Speech2ImageError):
    """Prometheus is not installed and cannot be, or did not start."""


def binary() -> str:
    """The prometheus binary, installing Debian's package when it is missing and apt-get can."""
    found = shutil.which("prometheus")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "prometheus"]):
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = shutil.which("prometheus")
        if found:
            return found
    raise PrometheusError(
        "prometheus is not installed: apt-get install prometheus (as root, on Debian or Ubuntu), "
        "or put a prometheus binary on PATH"
    )


def config(targets: dict[str, list[str]]) -> dict:
    """A scrape config: one job per Flow part (gateway, whisper, diffusion), from the metrics
    URLs app.py prints (http://HOST:PORT/metrics)."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s", "evaluation_interval": "5s"},
        "scrape_configs": [{"job_name": name, "static_configs": [{"targets": [urlsplit(url).netloc for url in urls]}]}
                           for name, urls in targets.items()],
    }


class Prometheus:
    """A running Prometheus process; stop it with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, targets: dict[str, list[str]], port: int = 9090):
        self.port = port
        self.url = f"http://localhost:{port}"
        self.directory = Path(tempfile.mkdtemp(prefix="speech2image-prometheus-"))
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config(targets)))
        consoles = str(CONSOLE_PAGE.parent)
        self.log = open(self.directory / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary(), f"--config.file={self.directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             f"--web.console.templates={consoles}", f"--web.console.libraries={consoles}"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                last = (self.directory / "prometheus.log").read_text(errors="replace").strip().splitlines()[-1:]
                self.stop()
                raise PrometheusError(f"prometheus did not start on port {port}: {' '.join(last) or 'no output'}")
            time.sleep(0.2)

    @property
    def dashboard(self) -> str:
        return f"{self.url}/consoles/{CONSOLE_PAGE.name}"

    def _ready(self) -> bool:
        try:
            with urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return answer.status == 200
        except (URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()
