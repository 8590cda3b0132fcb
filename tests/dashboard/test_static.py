"""The page's own files: nothing loaded from elsewhere, and all of them shipped in the wheel."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from changeover.dashboard.app import STATIC

ROOT = Path(__file__).resolve().parents[2]
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


def test_the_page_loads_nothing_from_another_host() -> None:
    for file in STATIC.iterdir():
        text = file.read_text(encoding="utf-8").replace(SVG_NAMESPACE, "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), file.name


def test_every_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["changeover"]
    package = ROOT / "src" / "changeover"
    for file in STATIC.iterdir():
        relative = str(file.relative_to(package))
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
