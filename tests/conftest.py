"""Shared fixtures: the speech clips and their texts (tests/support has the helpers)."""

import os

import pytest

from speech2image.serving.processes import start_flow_processes_from_a_forkserver
from tests.support.speech import SPEECH, manifest, texts

start_flow_processes_from_a_forkserver()  # before jina's import: the tests' Flows start as app.py's do
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")
# Two workers, each with its apps' replicas, share the cores: OpenMP threads that spin while they
# wait (the default) take the CPU the other processes need (admission and flow tests: 144 -> 126 s)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_addoption(parser):
    parser.addoption("--refresh-docs", action="store_true",
                     help="write the screenshots the tests take into docs/ (default: build/screenshots/)")


@pytest.fixture(scope="session")
def float32_app():
    """`python app.py --offline --whisper-compute-type float32`, shared by the modules that need no
    other flags (test_edits, test_end_to_end, test_ui): each app.py start costs tens of seconds on 2 cores
    (with two workers, it starts in each worker that runs one of them).
    Tests on it read counters as differences, never as totals."""
    from tests.support.app import App

    with App("--whisper-compute-type", "float32") as app:
        yield app


@pytest.fixture(scope="session")
def screenshots(request):
    """Where tests save screenshots: build/screenshots/, or docs/ with --refresh-docs."""
    from tests.support.speech import ROOT

    directory = ROOT / ("docs" if request.config.getoption("--refresh-docs") else "build/screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def clips() -> dict[str, str]:
    """file name → spoken text, of the English clips."""
    return texts()


@pytest.fixture(scope="session")
def jfk_bytes() -> bytes:
    return (SPEECH / "jfk.flac").read_bytes()


@pytest.fixture(scope="session")
def jfk_text(clips) -> str:
    return clips["jfk.flac"]


@pytest.fixture(scope="session")
def foreign_clips() -> dict[str, dict]:
    """file name → its manifest entry (language, text)."""
    return manifest()


OPT_IN = ("slow", "container", "gpu")  # run only when -m names them


def pytest_collection_modifyitems(config, items):
    """Leave out the tests marked slow, container or gpu unless the -m expression names that mark,
    so that `-m "not flow"` (the fast lane) still leaves them out."""
    named = config.getoption("markexpr") or ""
    left_out = [item for item in items if any(item.get_closest_marker(mark) and mark not in named for mark in OPT_IN)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]
