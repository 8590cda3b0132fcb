"""The README opens with the two commands, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("---", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_demo_and_test_commands() -> None:
    commands = _opening_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "\n" not in demo and "\n" not in tests
    assert demo.endswith("changeover demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_with_require_all() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _opening_commands()[1]
    lines = ci.splitlines()
    assert test_command in lines, "the README's test command must appear verbatim in .ci/run"
    before = lines[: lines.index(test_command)]
    assert "export CHANGEOVER_REQUIRE_ALL=1" in before
    assert any(line.startswith("apt-get update") for line in before)
