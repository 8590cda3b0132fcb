"""The open-model engine: a pool of keep-alive connections that sends each request on schedule.

Connections are asyncio Protocols (``connection.py``), on uvloop where it is installed. A tick
(the loop's timer, ~1 ms resolution) counts how many requests are due and hands each to an idle
connection; a request that finds none waits, its clock already running, while another
connection opens (up to ``connections``). Latency runs from the scheduled time, so a stalled
server shows as latency instead of quietly lowering the load (no coordinated omission). Sent
more than 10 ms late: ``late``; never sent: ``missed``. One process; ``workers.py`` runs
several, ``run_load`` is the in-process API.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from changeover.loadgen.connection import Connection, Flight, Recorder
from changeover.loadgen.mix import Mix
from changeover.loadgen.result import (
    LoadResult,
    Progress,
    Tally,
    new_histogram,
    progress,
    record_seconds,
)
from changeover.loadgen.schedule import Schedule, Share
from changeover.loadgen.target import Target, TargetUnreachable

LATE_AFTER = 0.010  # a request sent later than this after its due time is late
TICK = 0.001  # the loop's timers have millisecond resolution; shorter waits would spin
# A connection idle longer than this is closed instead of reused: servers close idle keep-alive
# connections (uvicorn after 5 s, the built-in proxy after 15 s), and a request sent just as they
# do fails for nothing. Below the shortest common keep-alive timeout, like httpx's 5 s expiry.
IDLE_REUSE_S = 4.0
CONNECT_TIMEOUT = 3.0
HOUSEKEEPING = 0.1  # seconds between timeout and stop checks

Clock = Callable[[], float]
Interval = Callable[[float, Tally, HdrHistogram], None]  # elapsed, totals, last second's latency


def _connect_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def cpu_wait() -> float:
    """Seconds this process's main thread has been runnable but without a CPU (Linux'
    schedstat; 0 elsewhere): tells an overloaded machine apart from a slow generator."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Run:
    """What ``Engine.run`` returns: the tally, the window it covers, whether it was stopped."""

    tally: Tally
    window: float
    interrupted: bool


class Engine:
    """Sends one share of a schedule over a pool of keep-alive connections."""

    def __init__(
        self,
        target: Target,
        schedule: Schedule,
        mix: Mix,
        *,
        share: Share | None = None,
        connections: int = 256,
        timeout: float = 10.0,
        seed: int = 0,
        recorder: Recorder | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.target = target
        self.schedule = schedule
        self.share = share or schedule.share(0, 1)
        self.cap = max(1, connections)
        self.timeout = timeout
        self.recorder = recorder
        self.clock = clock
        self.requests = mix.requests
        self.sequence = mix.sequence(seed)
        self.wires = [None if r.templated else r.wire(target.host_header) for r in mix.requests]
        self.tally = Tally()
        # Answers are recorded here and folded into the tally's histogram once a second (and at
        # the end): one HDR record per answer instead of two, the progress line gets the second.
        self.interval = new_histogram()
        self.idle: list[Connection] = []  # LIFO: a few hot connections, the rest stay idle
        self.busy: set[Connection] = set()
        self.open = 0  # connected or connecting
        self.connecting = 0
        self.next = 0  # this share's next request to send
        self.due_count = 0  # this share's requests due by the last tick
        self.t0 = 0.0
        self.sending = False
        self.stopped = False
        self.send_end = 0.0
        self.last_answer = 0.0
        self.finished = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- before the start ------------------------------------------------------------------

    async def prepare(self) -> None:
        """Open the first connections; none at all means the target is unreachable."""
        share_rate = self.schedule.rate / self.share.count
        initial = min(self.cap, max(2, math.ceil(share_rate * 0.004)))
        outcomes = await asyncio.gather(*(self._open() for _ in range(initial)))
        failures = [reason for reason in outcomes if reason is not None]
        if len(failures) == initial:
            raise TargetUnreachable(
                f"cannot connect to {self.target.address}:{self.target.port} "
                f"({failures[0]}): is the server running? Nothing was sent"
            )

    async def _open(self) -> str | None:
        """One new connection (it joins the pool itself); the reason when it failed."""
        self.open += 1
        self.connecting += 1
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(self), self.target.address, self.target.port
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            self.open -= 1
            self.connecting -= 1
            return _connect_reason(exc)
        return None

    # --- connection events -----------------------------------------------------------------

    def connected(self, conn: Connection) -> None:
        self.connecting -= 1
        self.tally.connections += 1
        self._free(conn, self.clock())

    def answered(self, conn: Connection, flight: Flight) -> None:
        now = self.clock()
        self.busy.discard(conn)
        tally = self.tally
        tally.answered += 1
        status = flight.status or 0
        tally.statuses[status] += 1
        record_seconds(self.interval, now - flight.due)
        self.last_answer = now
        if flight.record:
            self._record(flight, now, None)
        if flight.keep_alive and conn.transport is not None:
            self._free(conn, now)
        else:
            conn.abort()  # the server asked to close; ``lost`` follows
            self._check_done()

    def failed(self, conn: Connection, flight: Flight, reason: str) -> None:
        self.busy.discard(conn)
        self.tally.failures[reason] += 1
        if flight.record:
            self._record(flight, self.clock(), reason)
        self._check_done()

    def lost(self, conn: Connection) -> None:
        self.open -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self.busy.discard(conn)
        if self.sending:
            self._pump(self.clock())  # a waiting request may need a new connection
        self._check_done()

    def _record(self, flight: Flight, now: float, error: str | None) -> None:
        assert self.recorder is not None
        self.recorder.write(
            {
                "n": flight.number,
                "method": flight.method,
                "path": flight.path,
                "status": flight.status if error is None else None,
                "body": bytes(flight.body).decode("utf-8", errors="replace"),
                "body_truncated": flight.truncated,
                "error": error,
                "latency_ms": round((now - flight.due) * 1000, 3),
            }
        )

    # --- scheduling --------------------------------------------------------------------------

    def _free(self, conn: Connection, now: float) -> None:
        if self.sending and self.next < self.due_count:
            self._send(conn, now, waited=True)
        else:
            conn.idle_since = now
            self.idle.append(conn)
            self._check_done()

    def _send(self, conn: Connection, now: float, *, waited: bool = False) -> None:
        """Send this share's next request; ``waited``: it waited for this connection."""
        j = self.next
        self.next += 1
        number = self.share.global_index(j)
        due = self.t0 + self.share.due(j)
        lag = now - due
        tally = self.tally
        if lag > LATE_AFTER:
            tally.late += 1
            # Only a wait at the cap says more connections would help: below it, a request
            # waited just for the connection it made open (after a stall that made it late).
            tally.late_at_cap += waited and self.open >= self.cap
        record_seconds(tally.send_lag, lag)
        k = self.sequence[number % len(self.sequence)]
        request = self.requests[k]
        data = self.wires[k] or request.wire(self.target.host_header, number)
        record = self.recorder is not None and request.recorded
        path = request.path.replace("{i}", str(number)) if record else ""
        tally.sent += 1
        self.busy.add(conn)
        conn.send(Flight(number, due, now, request.method, path, record), data)
        if self.next >= self.share.size:
            self._end_sending(now)

    def _pump(self, now: float) -> None:
        """Hand due requests to idle connections; open more for the ones left waiting."""
        while self.next < self.due_count and self.idle and self.sending:
            conn = self.idle.pop()
            if conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > IDLE_REUSE_S:
                # The server may be closing it right now (its keep-alive timeout): a request
                # sent there would fail though nothing is wrong. Retire it, as HTTP clients do.
                conn.transport.close()
                continue
            self._send(conn, now)
        if not self.sending:
            return
        wanted = min(self.due_count - self.next - self.connecting, self.cap - self.open)
        for _ in range(wanted):
            task = asyncio.get_running_loop().create_task(self._open_for_waiting())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open_for_waiting(self) -> None:
        reason = await self._open()
        if reason is not None and self.sending and self.next < self.due_count:
            # The oldest waiting request fails with the reason instead of waiting forever
            # (a server that went away shows as errors, not as a slow generator).
            now = self.clock()
            j = self.next
            self.next += 1
            self.tally.sent += 1
            record_seconds(self.tally.send_lag, now - self.t0 - self.share.due(j))
            self.tally.failures[f"connect: {reason}"] += 1
            if self.next >= self.share.size:
                self._end_sending(now)

    def _tick(self) -> None:
        self._timer = None
        if not self.sending:
            return
        now = self.clock()
        elapsed = now - self.t0
        if elapsed >= self.schedule.duration + LATE_AFTER or self.next >= self.share.size:
            self._end_sending(now)
            return
        self.due_count = self.share.due_by(elapsed)
        self._pump(now)
        if not self.sending:
            return
        if self.due_count < self.share.size:
            wake = self.share.due(self.due_count)
        else:
            wake = self.schedule.duration + LATE_AFTER
        delay = max(TICK, self.t0 + wake - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _end_sending(self, now: float, *, stopped: bool = False) -> None:
        if not self.sending:
            return
        self.sending = False
        self.stopped = stopped
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elapsed = now - self.t0
        due = self.share.due_by(elapsed) if stopped else self.share.size
        self.tally.scheduled = max(due, self.next)
        self.tally.missed = self.tally.scheduled - self.next
        # The schedule spans its whole duration even when the last request left early.
        self.send_end = now if stopped else self.t0 + self.schedule.duration
        self._check_done()

    def _check_done(self) -> None:
        if not self.sending and not self.busy and self.t0:
            self.finished.set()

    # --- the run ----------------------------------------------------------------------------

    async def run(
        self,
        start_at: float | None = None,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_interval: Interval | None = None,
    ) -> Run:
        """Send the share on schedule from ``start_at`` (this clock); wait for the answers."""
        loop = asyncio.get_running_loop()
        waited_before = cpu_wait()
        self.t0 = start_at if start_at is not None else self.clock() + 0.005
        self.sending = True
        self._timer = loop.call_later(max(0.0, self.t0 - self.clock()), self._tick)
        keeper = loop.create_task(self._housekeeping(should_stop, on_interval))
        try:
            await self.finished.wait()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._close()
        self._fold()
        self.tally.cpu_wait = max(0.0, cpu_wait() - waited_before)
        end = max(self.send_end, self.last_answer)
        return Run(self.tally, max(end - self.t0, 1e-9), self.stopped)

    async def _housekeeping(
        self, should_stop: Callable[[], bool], on_interval: Interval | None
    ) -> None:
        last_report = self.t0
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            now = self.clock()
            if self.sending and should_stop():
                self._end_sending(now, stopped=True)
            for conn in list(self.busy):
                flight = conn.flight
                if flight is not None and now - flight.sent_at > self.timeout:
                    conn.fail(f"no answer within {self.timeout:g} s")
            if now - last_report >= 1.0 and now > self.t0:
                interval = self._fold()
                if on_interval is not None:
                    on_interval(now - self.t0, self.tally, interval)
                last_report = now
            if self.recorder is not None:
                self.recorder.flush()

    def _fold(self) -> HdrHistogram:
        """Move the answers since the last fold into the tally; that interval's histogram."""
        interval, self.interval = self.interval, new_histogram()
        self.tally.latency.add(interval)
        return interval

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in [*self.idle, *self.busy]:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


async def run_load(
    target: Target,
    schedule: Schedule,
    mix: Mix,
    *,
    connections: int = 256,
    timeout: float = 10.0,
    seed: int = 0,
    record: Path | None = None,
    stop: asyncio.Event | None = None,
    progress_to: Callable[[Progress], Awaitable[None] | None] | None = None,
) -> LoadResult:
    """Run ``schedule`` against ``target`` in this process and loop; the demo's entry point.

    ``stop`` ends the sending early (what was due and unsent counts as missed; the result says
    interrupted); ``progress_to`` receives a ``Progress`` about once a second.
    Raises ``TargetUnreachable`` before sending anything when no connection can be opened.
    """
    recorder = Recorder(record) if record is not None else None
    engine = Engine(
        target,
        schedule,
        mix,
        connections=connections,
        timeout=timeout,
        seed=seed,
        recorder=recorder,
    )
    answered_before, elapsed_before = 0, 0.0

    def report(elapsed: float, tally: Tally, interval: HdrHistogram) -> None:
        nonlocal answered_before, elapsed_before
        if progress_to is None:
            return
        shown = progress(elapsed, elapsed - elapsed_before, tally, answered_before, interval)
        answered_before, elapsed_before = tally.answered, elapsed
        outcome = progress_to(shown)
        if asyncio.iscoroutine(outcome):
            task = asyncio.get_running_loop().create_task(outcome)
            engine._tasks.add(task)
            task.add_done_callback(engine._tasks.discard)

    try:
        await engine.prepare()
        run = await engine.run(
            should_stop=stop.is_set if stop is not None else (lambda: False),
            on_interval=report if progress_to is not None else None,
        )
    finally:
        if recorder is not None:
            recorder.close()
    return LoadResult(
        url=target.url,
        rate=schedule.rate,
        duration=schedule.duration,
        window=run.window,
        processes=1,
        tally=run.tally,
        mix=mix.source,
        notes=mix.notes,
        interrupted=run.interrupted,
    )
