"""Headless Chromium (Debian's ``chromium``) driven by Playwright, for the dashboard and report.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (or whatever
``chromium`` is on PATH) with the flags this machine's closed network needs. Screenshots go
under the git-ignored ``.ci/artifacts/`` so a CI run leaves them to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.binaries import missing, require_binary

ARTIFACTS = Path(__file__).resolve().parents[2] / ".ci" / "artifacts"
FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home: refused by this machine's network
    "--disable-component-update",
    "--disable-sync",
]


def artifact(name: str) -> Path:
    """Where a test writes a screenshot or page dump (created, git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


@pytest.fixture
def browser() -> Iterator[object]:
    """A Playwright ``Browser`` on headless Chromium, for one test.

    Not shared by the session: Playwright's sync API keeps an event loop running in the thread
    while it is open, and every later ``asyncio.run()`` in that pytest worker would fail.
    """
    executable = require_binary("chromium", "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the Python package playwright", "python3-playwright or pip install playwright")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()
