"""Memory (RSS, MB) and CPU (%) of local processes: by pid, name, command line or listening port.

Each system (``of``) maps to one ``ProcessMatch`` or several (one per instance); every matching
process of every instance counts, so an app with workers or several instances is summed. A port
match is the process listening on that TCP port plus its children (prefork workers share the
socket). CPU is measured between two reads (100 % is one core busy); the first read of a process
takes a 0.2 s sample. Memory is a gauge: the controller keeps the series for the leak trend.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from changeover.metrics._common import Failed, missing, wall_clock
from changeover.metrics.base import Observation

MEMORY = frozenset({"memory", "memory_leak", "memory_stable"})
SERVED = MEMORY | {"cpu"}
FIRST_SAMPLE_S = 0.2
#: a port scan reads /proc for every process and the controller reads cpu/memory every second
PORT_SCAN_MAX_AGE_S = 2.0
_SELF = psutil.Process().pid  # our own command line may hold the text we look for


@dataclass(frozen=True)
class ProcessMatch:
    """Which processes are the system: a pid, a listening TCP port, and/or a name and a text in
    the command line (all given must hold)."""

    pid: int | None = None
    name: str | None = None
    cmdline: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if self.pid is None and self.name is None and self.cmdline is None and self.port is None:
            raise ValueError("a process match needs a pid, a name, a command-line text or a port")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"a TCP port is between 1 and 65535, not {self.port}")

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts)

    def matches(self, process: psutil.Process) -> bool:
        if self.pid is not None and process.pid != self.pid:
            return False
        if self.name is not None and process.name() != self.name:
            return False
        return self.cmdline is None or self.cmdline in " ".join(process.cmdline())

    def not_found(self) -> str:
        """Why nothing matched, in plain words."""
        if self.port is not None and self.pid is None and self.name is None and not self.cmdline:
            return f"nothing listens on TCP port {self.port} on this machine"
        return f"no running process matches {self.describe()}"


@dataclass(frozen=True)
class Listeners:
    """Who listens on which TCP port: pids by port, and ports whose process this user cannot
    see (Linux shows another user's sockets without their pid)."""

    pids: Mapping[int, frozenset[int]]
    hidden: frozenset[int]


def listeners(connections: Iterable[Any]) -> Listeners:
    """The LISTEN sockets of ``psutil.net_connections(kind="tcp")`` by port (pure)."""
    pids: dict[int, set[int]] = {}
    hidden: set[int] = set()
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        port = conn.laddr.port
        if conn.pid is None:
            hidden.add(port)
        else:
            pids.setdefault(port, set()).add(conn.pid)
    return Listeners({port: frozenset(found) for port, found in pids.items()}, frozenset(hidden))


def _scan() -> Listeners:
    try:
        return listeners(psutil.net_connections(kind="tcp"))
    except psutil.AccessDenied as exc:  # macOS and some hardened kernels: root only
        raise Failed(
            "this user may not list which process listens on which port (run changeover as "
            "the apps' user or as root, or read memory and cpu from Prometheus)"
        ) from exc


class PortTable:
    """port → the processes listening on it and their children, scanned at most every
    ``max_age`` seconds; thread-safe (reads run in worker threads at the same time).

    A cached process that has ended (or whose pid was reused: psutil compares the start time)
    makes the next lookup rescan at once, so an instance restarted behind its port is found again.
    """

    def __init__(
        self,
        *,
        max_age: float = PORT_SCAN_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
        scan: Callable[[], Listeners] = _scan,
    ) -> None:
        self.max_age = max_age
        self._clock = clock
        self._scan = scan
        self._lock = threading.Lock()
        self._at = -math.inf
        self._listeners = Listeners({}, frozenset())
        self._processes: dict[int, list[psutil.Process]] = {}

    def processes(self, port: int) -> list[psutil.Process]:
        """The live processes behind ``port`` (blocking: run it in a thread)."""
        with self._lock:
            if self._clock() - self._at >= self.max_age:
                self._refresh()
            found = self._expand(port)
            if found is None:  # a cached process ended or its pid was reused: look again now
                self._refresh()
                found = self._expand(port) or []
            if not found and port in self._listeners.hidden:
                raise Failed(
                    f"a process of another user listens on TCP port {port}; this user cannot "
                    "read it (run changeover as that user or as root)"
                )
            return found

    def _refresh(self) -> None:
        self._listeners = self._scan()
        self._at = self._clock()
        self._processes = {}  # filled per port on demand: most ports are not ours to watch

    def _expand(self, port: int) -> list[psutil.Process] | None:
        """The port's listeners and their children; None when one of them has ended."""
        cached = self._processes.get(port)
        if cached is not None:
            return list(cached) if all(p.is_running() for p in cached) else None
        found: dict[int, psutil.Process] = {}
        try:
            for pid in sorted(self._listeners.pids.get(port, ())):
                process = psutil.Process(pid)
                found.setdefault(pid, process)
                # psutil names one process per socket; forked workers sharing it are children
                for child in process.children(recursive=True):
                    found.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        self._processes[port] = list(found.values())
        return list(found.values())


def find(match: ProcessMatch, ports: PortTable | None = None) -> list[psutil.Process]:
    """The live processes matching (blocking: run it in a thread)."""
    if match.port is not None:
        candidates = (ports or PortTable()).processes(match.port)
        return [p for p in candidates if _matches(match, p)]
    if match.pid is not None:
        try:
            process = psutil.Process(match.pid)
            return [process] if match.matches(process) else []
        except psutil.NoSuchProcess:
            return []
    found = []
    for process in psutil.process_iter():
        if process.pid != _SELF and _matches(match, process):
            found.append(process)
    return found


def _matches(match: ProcessMatch, process: psutil.Process) -> bool:
    try:
        return match.matches(process)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False  # gone meanwhile, or not ours to look at: not a match


class ProcessSource:
    """Local processes by system name: ``ProcessSource({"new": ProcessMatch(name="app")})``, or
    one match per instance: ``{"new": [ProcessMatch(port=8101), ProcessMatch(port=8102)]}``.

    A system mapped to no match has no instance on this machine: reading it says so and points
    to ``prometheus`` (the name of the plan's Prometheus source, None when it has none).
    """

    def __init__(
        self,
        targets: Mapping[str, ProcessMatch | Sequence[ProcessMatch]],
        *,
        name: str = "process",
        prometheus: str | None = None,
        ports: PortTable | None = None,
    ) -> None:
        self.name = name
        self.targets = {
            system: (match,) if isinstance(match, ProcessMatch) else tuple(match)
            for system, match in targets.items()
        }
        self.prometheus = prometheus
        self.ports = ports or PortTable()
        # (pid, create_time) → (cpu seconds, monotonic time) at the last read
        self._cpu: dict[tuple[int, float], tuple[float, float]] = {}

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the process source does not serve {metric!r}")
        try:
            matches = self._target(metric, of)
            processes = await asyncio.to_thread(self._find_all, matches)
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

    def _target(self, metric: str, of: str | None) -> tuple[ProcessMatch, ...]:
        if of is None and len(self.targets) == 1:
            matches = next(iter(self.targets.values()))
        elif of is None or of not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise Failed(f"no process target for {of!r} (targets: {known})")
        else:
            matches = self.targets[of]
        if not matches:
            what = "memory" if metric in MEMORY else metric
            where = (
                f"source: {self.prometheus}"
                if self.prometheus
                else "add a prometheus system to the plan"
            )
            raise Failed(
                f"{of} has no instance on this machine; read {what} from Prometheus ({where})"
            )
        return matches

    def _find_all(self, matches: tuple[ProcessMatch, ...]) -> list[psutil.Process]:
        # Instances not running (yet: the plan may deploy them stage by stage) add nothing; the
        # reading is unavailable only when none of them runs.
        found: dict[int, psutil.Process] = {}
        reasons = []
        for match in matches:
            processes = find(match, self.ports)
            if not processes:
                reasons.append(match.not_found())
            for process in processes:
                found.setdefault(process.pid, process)
        if not found:
            raise Failed("; ".join(reasons))
        return list(found.values())

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
