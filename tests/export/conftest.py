"""Plans to export (the default plan as ``changeover init`` writes it, the demo's plan), the
CLI as a function, and promtool."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from changeover.cli import main
from changeover.demo.plan import Ports, write_demo_plan
from support.binaries import require_binary


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


Run = Callable[..., Ran]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``changeover ARGS...`` in-process: exit code, stdout, stderr."""

    def run(*args: str) -> Ran:
        code = main(list(args))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def default_plan_file(tmp_path: Path, run: Run) -> Path:
    assert run("init", str(tmp_path / "default")).code == 0
    return tmp_path / "default" / "changeover.yaml"


@pytest.fixture
def demo_plan_file(tmp_path: Path) -> Path:
    workdir = tmp_path / "demo"
    workdir.mkdir()
    return write_demo_plan(workdir, Ports(18000, (18001, 18002, 18003), 18080, 19901))


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool", "prometheus")


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
