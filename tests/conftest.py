"""Shared fixtures: the speech clips and their texts (tests/support has the helpers)."""

import os

# Flows start their executors with spawn: a forked child of a process that already
# loaded CTranslate2 or PyTorch thread pools can deadlock.
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")

import pytest

from tests.support.speech import FOREIGN_SPEECH, SPEECH, manifest, texts


def pytest_addoption(parser):
    parser.addoption("--refresh-docs", action="store_true",
                     help="write the screenshots the tests take into docs/ (default: build/screenshots/)")


@pytest.fixture(scope="session")
def screenshots(request):
    """Where tests save screenshots: build/screenshots/, or docs/ with --refresh-docs."""
    from tests.support.speech import ROOT

    directory = ROOT / ("docs" if request.config.getoption("--refresh-docs") else "build/screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def clips() -> dict[str, str]:
    """file name → spoken text, from the shared manifest."""
    return texts(SPEECH)


@pytest.fixture(scope="session")
def jfk_bytes() -> bytes:
    return (SPEECH / "jfk.flac").read_bytes()


@pytest.fixture(scope="session")
def jfk_text(clips) -> str:
    return clips["jfk.flac"]


@pytest.fixture(scope="session")
def foreign_clips() -> dict[str, dict]:
    """file name → its manifest entry (language, text), for tests/data."""
    return manifest(FOREIGN_SPEECH)
