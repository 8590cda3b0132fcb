"""Find a server binary a test needs, or skip (laptop) / fail (CI) naming the package to install.

Under ``CHANGEOVER_REQUIRE_ALL=1`` (set by ``.ci/run``) a missing binary fails the test instead of
skipping it, so CI can never pass by skipping the real-server tests.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_all() -> bool:
    return os.environ.get("CHANGEOVER_REQUIRE_ALL") == "1"


def missing(what: str, package: str) -> None:
    """Skip (or fail under CHANGEOVER_REQUIRE_ALL=1) because ``what`` is not available."""
    message = (
        f"{what} not found: install the Debian package '{package}' (apt-get install {package})"
    )
    if require_all():
        pytest.fail(f"CHANGEOVER_REQUIRE_ALL=1 and {message}", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, package: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """The absolute path of ``name`` on PATH (or in ``extra_dirs``), else skip/fail."""
    found = shutil.which(name)
    if found is None:
        for directory in extra_dirs:
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
        missing(name, package)
    assert found is not None
    return found
