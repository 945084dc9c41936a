"""Reading app.py's Prometheus endpoints the way Prometheus does: over HTTP, in its text format."""

import re
import time
import urllib.request
from typing import Callable


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric's samples."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.M)}


def by_replica(urls: list[str], name: str, executor: str) -> dict[str, float]:
    """{replica: value} of metric `name` over every endpoint, for one executor's replicas."""
    found = {}
    for url in urls:
        for labels, value in samples(scrape(url), name).items():
            if f'executor="{executor}"' in labels:
                found[re.search(r'runtime_name="([^"]+)"', labels).group(1)] = value
    return found


def total(urls: list[str], name: str, executor: str) -> float:
    return sum(by_replica(urls, name, executor).values())


def wait_until(condition: Callable[[], bool], seconds: float = 60, what="the condition") -> None:
    """Poll `condition` (a scrape is cheap) until it holds; AssertionError after `seconds`, saying
    `what` (a string, or a function that describes the state then)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what} did not hold within {seconds:.0f} s")
        time.sleep(0.1)
