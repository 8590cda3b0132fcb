"""Bounded loopback load for a drill: the load generator's engine in this process, in the
background, until the drill says stop.

The rate is bounded (``MAX_RATE``) and the target must be a loopback address: a drill proves
behaviour under traffic, it is not a load test. Writes in the mix are recorded (status and
answer of each), so the rollback drill can look every acknowledged one up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from changeover.drills.result import DrillFailed
from changeover.errors import ChangeoverError
from changeover.loadgen.engine import run_load
from changeover.loadgen.mix import Mix, parse_mix
from changeover.loadgen.result import LoadResult
from changeover.loadgen.schedule import Schedule
from changeover.loadgen.target import parse_target

MAX_RATE = 2000.0
LONGEST_S = 3600.0  # the schedule's length; the drill stops it long before


def drill_mix(read_path: str, write: Mapping[str, Any] | None, write_share: float) -> Mix:
    """Reads of ``read_path`` and, when given, the write request as ``write_share`` of them."""
    entries: list[dict[str, Any]] = [{"method": "GET", "path": read_path, "weight": 1.0}]
    if write is not None:
        entry = {k: write[k] for k in ("method", "path", "body", "headers") if k in write}
        entry["method"] = str(entry.get("method", "POST")).upper()
        entry["weight"] = write_share / (1 - write_share)
        entries.append(entry)
    return parse_mix(json.dumps(entries), "the drill's requests")


class BackgroundLoad:
    """``run_load`` as a task: ``start()``, then ``stop()`` returns the ``LoadResult``."""

    def __init__(self, url: str, rate: float, mix: Mix, record: Path | None = None) -> None:
        if not 0 < rate <= MAX_RATE:
            raise DrillFailed(f"the drill's rate must be between 1 and {MAX_RATE:g} requests/s")
        try:
            self.target = parse_target(url)  # refuses anything but loopback
        except ChangeoverError as exc:
            raise DrillFailed(f"load target: {exc}") from exc
        self.schedule = Schedule(rate, LONGEST_S)
        self.mix = mix
        self.record = record
        self._stop = asyncio.Event()
        self._task: asyncio.Task[LoadResult] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(
            run_load(
                self.target,
                self.schedule,
                self.mix,
                connections=32,
                timeout=10.0,
                record=self.record,
                stop=self._stop,
            )
        )
        await asyncio.sleep(0.2)
        if self._task.done():  # unreachable target: run_load raises before sending
            await self._result()

    async def stop(self) -> LoadResult:
        self._stop.set()
        return await self._result()

    async def _result(self) -> LoadResult:
        assert self._task is not None
        try:
            return await self._task
        except ChangeoverError as exc:
            raise DrillFailed(f"the drill's load could not run: {exc}") from exc

    async def cancel(self) -> None:
        """Stop without a result (the drill failed elsewhere)."""
        if self._task is not None and not self._task.done():
            self._stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 15)


def load_numbers(result: LoadResult) -> dict[str, Any]:
    tally = result.tally
    return {
        "requests": tally.sent,
        "errors": tally.errors,
        "error_rate": round(tally.errors / tally.sent, 6) if tally.sent else 0.0,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures": dict(tally.failures),
    }
