"""A real Prometheus on loopback that scrapes a running Flow and serves its console dashboard.

`app.py --prometheus` starts one; tests and the benchmark use :func:`start` directly.
The binary is Debian's `prometheus` package (installed with apt-get when missing and
run as root), or any `prometheus` on PATH.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import yaml

from speech2image.errors import PrometheusError
from tools.dashboard import CONSOLE_PAGE

SCRAPE_INTERVAL_SECONDS = 1


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

    def wait_for_scrape(self, seconds: float = 30) -> None:
        """Wait until every target has been scraped after now (PrometheusError after `seconds`)."""
        moment, deadline = time.time(), time.monotonic() + seconds
        while not self._scraped_since(moment):
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus did not scrape every target within {seconds:.0f} s")
            time.sleep(0.1)

    def _scraped_since(self, moment: float) -> bool:
        with urlopen(f"{self.url}/api/v1/targets", timeout=5) as answer:
            targets = json.load(answer)["data"]["activeTargets"]
        # lastScrape: RFC 3339 with nanoseconds; datetime reads microseconds
        scraped = [re.sub(r"(\.\d{6})\d*", r"\1", t["lastScrape"]).replace("Z", "+00:00") for t in targets]
        return bool(targets) and all(datetime.fromisoformat(when).timestamp() >= moment for when in scraped)

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
