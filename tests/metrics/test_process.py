"""ProcessSource against real child processes: one holding memory, one keeping a core busy."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from changeover.metrics.base import Observation
from changeover.metrics.process import ProcessMatch, ProcessSource

HOLD = (
    "import sys, time; data = bytearray(80 * 1024 * 1024); print('ok', flush=True); time.sleep(30)"
)
SPIN = "import time; print('ok', flush=True); end = time.time() + 30\nwhile time.time() < end: pass"


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A child with 80 MB of touched memory and a marker in its command line."""
    marker = f"marker-{secrets.token_hex(4)}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, marker], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    yield proc, marker
    proc.kill()
    proc.wait()
    proc.stdout.close()


def read(source: ProcessSource, metric: str, of: str | None = "new") -> Observation:
    async def once() -> Observation:
        try:
            return await source.read(metric, of)
        finally:
            await source.close()

    return asyncio.run(once())


def test_memory_of_a_process_found_by_pid(child: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, _ = child
    obs = read(ProcessSource({"new": ProcessMatch(pid=proc.pid)}), "memory_leak")
    assert obs.unit == "MB" and obs.value is not None and obs.value > 80


def test_memory_of_a_process_found_by_command_line(
    child: tuple[subprocess.Popen[bytes], str],
) -> None:
    _, marker = child
    obs = read(ProcessSource({"new": ProcessMatch(cmdline=marker)}), "memory")
    assert obs.value is not None and 80 < obs.value < 200  # one process, not the test as well


def test_cpu_of_a_busy_process_stands_out_from_a_sleeping_one(
    child: tuple[subprocess.Popen[bytes], str],
) -> None:
    sleeping, _ = child
    busy = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE)

    async def scenario() -> tuple[Observation, Observation, Observation]:
        source = ProcessSource(
            {"busy": ProcessMatch(pid=busy.pid), "idle": ProcessMatch(pid=sleeping.pid)}
        )
        try:
            first = await source.read("cpu", "busy")  # takes its own short sample
            await asyncio.sleep(0.5)
            second = await source.read("cpu", "busy")  # since the first read
            idle = await source.read("cpu", "idle")
            return first, second, idle
        finally:
            await source.close()

    try:
        assert busy.stdout is not None and busy.stdout.readline() == b"ok\n"
        first, second, idle = asyncio.run(scenario())
    finally:
        busy.kill()
        busy.wait()
        if busy.stdout is not None:
            busy.stdout.close()
    # Loose bounds: on a loaded 2-core machine the spinner gets only a share of a core.
    for obs in (first, second):
        assert obs.unit == "%" and obs.value is not None and 10 < obs.value <= 110
    assert idle.value is not None and idle.value < 5


def test_an_ended_process_is_unavailable() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    obs = read(ProcessSource({"new": ProcessMatch(pid=proc.pid)}), "memory")
    assert obs.unavailable == f"no running process matches pid={proc.pid!r}"


def test_an_unknown_system_names_the_targets() -> None:
    obs = read(ProcessSource({"new": ProcessMatch(name="app")}), "cpu", of="legacy")
    assert obs.unavailable == "no process target for 'legacy' (targets: new)"


def test_a_match_needs_something_to_match() -> None:
    with pytest.raises(ValueError):
        ProcessMatch()
