"""Several generator processes sharing one schedule, their results merged: what the CLI runs.

Process k of n sends requests k, k+n, … (``Schedule.share``) over its own connections, so
together they keep the one schedule. Each opens its connections, reports ready, starts at the
same monotonic instant, and sends once a second its counters and an HDR histogram of that
second; the parent merges them for the live display and the final result. Processes are
spawned (not forked), ignore Ctrl-C (the parent stops them through an event so they report
what they measured) and write --record to their own part file, joined by the parent.
With one process the engine runs in this process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, TypeVar

from changeover.errors import ChangeoverError
from changeover.loadgen.connection import Recorder
from changeover.loadgen.engine import Engine, run_load
from changeover.loadgen.mix import Mix
from changeover.loadgen.result import (
    LoadResult,
    Progress,
    Tally,
    decode_histogram,
    new_histogram,
    progress,
)
from changeover.loadgen.schedule import Schedule, split
from changeover.loadgen.target import Target, TargetUnreachable

log = logging.getLogger(__name__)

START_MARGIN = 0.05  # seconds between "go" and the first due request: every process is ready
READY_TIMEOUT = 60.0  # spawning imports the package; slow on a loaded machine
JOIN_TIMEOUT = 10.0

T = TypeVar("T")


class GeneratorFailed(ChangeoverError):
    """A generator process failed or died (exit 3); the message says which and why."""


@dataclass(frozen=True)
class Job:
    """What one process sends: its share of the schedule, over its own connections."""

    target: Target
    schedule: Schedule
    mix: Mix
    index: int
    count: int
    connections: int
    timeout: float
    seed: int
    record: Path | None


def run(
    target: Target,
    schedule: Schedule,
    mix: Mix,
    *,
    processes: int = 1,
    connections: int = 256,
    timeout: float = 10.0,
    seed: int = 0,
    record: Path | None = None,
    progress_to: Callable[[Progress], None] | None = None,
) -> LoadResult:
    """Run the load in ``processes`` processes (1: in this one); Ctrl-C stops it gracefully
    (the result says interrupted) and a second Ctrl-C interrupts at once."""
    processes = max(1, min(processes, connections))
    if processes == 1:
        return _run_here(target, schedule, mix, connections, timeout, seed, record, progress_to)
    jobs = [
        Job(target, schedule, mix, k, processes, max(1, n), timeout, seed, _part(record, k))
        for k, n in enumerate(split(connections, processes))
    ]
    result = _Parent(jobs, progress_to).run()
    if record is not None:
        _join_parts(record, [job.record for job in jobs if job.record is not None])
    return result


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    return uvloop.run(main)


def _run_here(
    target: Target,
    schedule: Schedule,
    mix: Mix,
    connections: int,
    timeout: float,
    seed: int,
    record: Path | None,
    progress_to: Callable[[Progress], None] | None,
) -> LoadResult:
    async def main() -> LoadResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def first_interrupt() -> None:
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C interrupts at once

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, first_interrupt)
        try:
            return await run_load(
                target,
                schedule,
                mix,
                connections=connections,
                timeout=timeout,
                seed=seed,
                record=record,
                stop=stop,
                progress_to=progress_to,
            )
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)

    return _run_loop(main())


# --- the parent --------------------------------------------------------------------------------


class _Parent:
    """Starts the processes, relays progress, merges their results."""

    def __init__(self, jobs: list[Job], progress_to: Callable[[Progress], None] | None) -> None:
        self.jobs = jobs
        self.progress_to = progress_to
        context = multiprocessing.get_context("spawn")
        self.messages: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
        self.go = context.Event()
        self.stop = context.Event()
        self.start_at = context.Value("d", 0.0)
        self.processes = [
            context.Process(
                target=_child,
                args=(job, self.messages, self.go, self.stop, self.start_at),
                name=f"changeover-loadgen-{job.index}",
                daemon=True,
            )
            for job in jobs
        ]
        self.interrupted = False

    def run(self) -> LoadResult:
        with self._first_interrupt_stops():
            for process in self.processes:
                process.start()
            try:
                return self._collect()
            finally:
                self.stop.set()
                self.go.set()  # a process still waiting for the start ends at once
                for process in self.processes:
                    process.join(JOIN_TIMEOUT)
                    if process.is_alive():
                        process.kill()
                        process.join()

    @contextlib.contextmanager
    def _first_interrupt_stops(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(_signum: int, _frame: Any) -> None:
            self.interrupted = True
            self.stop.set()
            signal.signal(signal.SIGINT, previous)  # the next Ctrl-C interrupts at once

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _next(self, deadline: float | None = None) -> tuple[str, int, Any] | None:
        """The next message, or None after a short wait; a dead process is an error."""
        try:
            return self.messages.get(timeout=0.2)
        except queue.Empty:
            pass
        for process, job in zip(self.processes, self.jobs, strict=True):
            if process.exitcode is not None and process.exitcode != 0:
                raise GeneratorFailed(
                    f"load generator process {job.index} died (exit code {process.exitcode})"
                )
        if deadline is not None and time.monotonic() > deadline:
            raise GeneratorFailed(
                f"the load generator processes were not ready within {READY_TIMEOUT:g} s"
            )
        return None

    def _collect(self) -> LoadResult:
        count = len(self.jobs)
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT
        while len(ready) < count:
            if self.stop.is_set():
                raise KeyboardInterrupt
            message = self._next(deadline)
            if message is not None:
                kind, index, payload = message
                if kind == "error":
                    _raise(index, payload)
                if kind == "ready":
                    ready.add(index)
        start = time.monotonic() + START_MARGIN
        self.start_at.value = start
        self.go.set()

        latest: dict[int, Tally] = {}
        fresh: set[int] = set()  # processes that reported since the last line
        finals: dict[int, dict[str, Any]] = {}
        interval = new_histogram()
        reported_at, answered_before = start, 0
        while len(finals) < count:
            message = self._next()
            if message is not None:
                kind, index, payload = message
                if kind == "error":
                    _raise(index, payload)
                elif kind == "progress":
                    latest[index] = Tally.from_wire(payload["tally"])
                    interval.add(decode_histogram(payload["interval"]))
                    fresh.add(index)
                elif kind == "done":
                    finals[index] = payload
            now = time.monotonic()
            # One line when every process has reported its second (or a slow one is late).
            due = len(fresh) == count or (fresh and now - reported_at >= 2.0)
            if self.progress_to is not None and due:
                totals = Tally.merge(list(latest.values()))
                shown = progress(now - start, now - reported_at, totals, answered_before, interval)
                self.progress_to(shown)
                interval, reported_at, answered_before = new_histogram(), now, totals.answered
                fresh.clear()
        tallies = [Tally.from_wire(finals[k]["tally"]) for k in range(count)]
        first = self.jobs[0]
        return LoadResult(
            url=first.target.url,
            rate=first.schedule.rate,
            duration=first.schedule.duration,
            window=max(finals[k]["window"] for k in range(count)),
            processes=count,
            tally=Tally.merge(tallies),
            mix=first.mix.source,
            notes=first.mix.notes,
            interrupted=self.interrupted or any(finals[k]["interrupted"] for k in range(count)),
        )


def _raise(index: int, payload: dict[str, Any]) -> None:
    if payload.get("traceback"):
        log.debug("load generator process %d:\n%s", index, payload["traceback"])
    if payload["kind"] == "unreachable":
        raise TargetUnreachable(payload["message"])
    raise GeneratorFailed(f"load generator process {index} failed: {payload['message']}")


def _part(record: Path | None, index: int) -> Path | None:
    return None if record is None else record.with_name(f"{record.name}.part{index}")


def _join_parts(record: Path, parts: list[Path]) -> None:
    with record.open("wb") as out:
        for part in parts:
            with contextlib.suppress(FileNotFoundError):
                out.write(part.read_bytes())
                part.unlink()


# --- a child -----------------------------------------------------------------------------------


def _child(
    job: Job,
    messages: multiprocessing.Queue[tuple[str, int, Any]],
    go: EventType,
    stop: EventType,
    start_at: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        _run_loop(_child_main(job, messages, go, stop, start_at))
    except TargetUnreachable as exc:
        messages.put(("error", job.index, {"kind": "unreachable", "message": str(exc)}))
    except ChangeoverError as exc:
        messages.put(("error", job.index, {"kind": "failed", "message": str(exc)}))
    except Exception as exc:  # everything else is a bug: the parent shows one line
        text = traceback.format_exc()
        message = f"{type(exc).__name__}: {exc}"
        messages.put(("error", job.index, {"kind": "crash", "message": message, "traceback": text}))


async def _child_main(
    job: Job,
    messages: multiprocessing.Queue[tuple[str, int, Any]],
    go: EventType,
    stop: EventType,
    start_at: Any,
) -> None:
    recorder = Recorder(job.record) if job.record is not None else None
    engine = Engine(
        job.target,
        job.schedule,
        job.mix,
        share=job.schedule.share(job.index, job.count),
        connections=job.connections,
        timeout=job.timeout,
        seed=job.seed,
        recorder=recorder,
    )
    try:
        await engine.prepare()
        messages.put(("ready", job.index, None))
        while not go.is_set():
            await asyncio.sleep(0.002)

        def report(_elapsed: float, tally: Tally, interval: Any) -> None:
            encoded = interval.encode() if interval.get_total_count() else b""
            messages.put(("progress", job.index, {"tally": tally.counters(), "interval": encoded}))

        result = await engine.run(start_at.value, should_stop=stop.is_set, on_interval=report)
        done = {"tally": result.tally.to_wire(), "window": result.window}
        messages.put(("done", job.index, done | {"interrupted": result.interrupted}))
    finally:
        if recorder is not None:
            recorder.close()
