"""Memory (RSS, MB) and CPU (%) of local processes, found by pid or by name / command line.

Each target is a ``ProcessMatch``, named by the system it is (``of``); every matching process
counts, so an app with workers is summed. CPU is measured between two reads (100 % is one core
busy); the first read of a process takes a 0.2 s sample. Memory is a gauge: the controller
keeps the series for the leak trend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from changeover.metrics._common import Failed, missing, wall_clock
from changeover.metrics.base import Observation

MEMORY = frozenset({"memory", "memory_leak", "memory_stable"})
SERVED = MEMORY | {"cpu"}
FIRST_SAMPLE_S = 0.2
_SELF = psutil.Process().pid  # our own command line may hold the text we look for


@dataclass(frozen=True)
class ProcessMatch:
    """Which processes are the system: a pid, or a name and/or a text in the command line."""

    pid: int | None = None
    name: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        if self.pid is None and self.name is None and self.cmdline is None:
            raise ValueError("a process match needs a pid, a name or a command-line text")

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts)

    def matches(self, process: psutil.Process) -> bool:
        if self.name is not None and process.name() != self.name:
            return False
        return self.cmdline is None or self.cmdline in " ".join(process.cmdline())


def find(match: ProcessMatch) -> list[psutil.Process]:
    """The live processes matching (blocking: run it in a thread)."""
    if match.pid is not None:
        try:
            process = psutil.Process(match.pid)
            return [process] if match.matches(process) else []
        except psutil.NoSuchProcess:
            return []
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != _SELF and match.matches(process):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone meanwhile, or not ours to look at: not a match
    return found


class ProcessSource:
    """Local processes by system name: ``ProcessSource({"new": ProcessMatch(name="app")})``."""

    def __init__(self, targets: Mapping[str, ProcessMatch], *, name: str = "process") -> None:
        self.name = name
        self.targets = dict(targets)
        # (pid, create_time) → (cpu seconds, monotonic time) at the last read
        self._cpu: dict[tuple[int, float], tuple[float, float]] = {}

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the process source does not serve {metric!r}")
        try:
            match = self._target(of)
            processes = await asyncio.to_thread(find, match)
            if not processes:
                raise Failed(f"no running process matches {match.describe()}")
            at = wall_clock()
            if metric in MEMORY:
                rss = await asyncio.to_thread(_rss, processes)
                return Observation(metric, of, at, value=rss / 1048576, unit="MB")
            return Observation(metric, of, at, value=await self._cpu_percent(processes), unit="%")
        except psutil.AccessDenied:
            return missing(metric, of, "not allowed to read that process (another user's?)")
        except psutil.NoSuchProcess:
            return missing(metric, of, "the process ended while it was being read")
        except Failed as exc:
            return missing(metric, of, exc.reason)

    def _target(self, of: str | None) -> ProcessMatch:
        if of is None and len(self.targets) == 1:
            return next(iter(self.targets.values()))
        if of is None or of not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise Failed(f"no process target for {of!r} (targets: {known})")
        return self.targets[of]

    async def _cpu_percent(self, processes: list[psutil.Process]) -> float:
        now = _cpu_times(processes)
        if any(key not in self._cpu for key in now):
            await asyncio.sleep(FIRST_SAMPLE_S)  # no earlier reading: take a short one
            first, now = now, _cpu_times(processes)
        else:
            first = dict(self._cpu)
        self._cpu.update(now)
        percent = 0.0
        for key, (seconds, at) in now.items():
            before = first.get(key)
            if before is not None and at > before[1]:
                percent += 100 * (seconds - before[0]) / (at - before[1])
        return max(percent, 0.0)

    async def close(self) -> None:
        self._cpu.clear()


def _rss(processes: list[psutil.Process]) -> int:
    return sum(p.memory_info().rss for p in processes)


def _cpu_times(processes: list[psutil.Process]) -> dict[tuple[int, float], tuple[float, float]]:
    out = {}
    for process in processes:
        times = process.cpu_times()
        out[(process.pid, process.create_time())] = (times.user + times.system, time.monotonic())
    return out
