"""An open-model HTTP/1.1 load generator: requests leave on a fixed schedule (wrk2's idea).

Request i is due at ``start + i / rate`` whatever happened to earlier ones; its latency is
measured from that scheduled time, so a stalled server shows as latency instead of silently
lowering the offered load (no coordinated omission). A request that finds no idle keep-alive
connection waits in a backlog (its clock already running) while more connections open, up to a
cap. Sends that leave late, requests never answered and errors are counted, never dropped.

Run as a script (``python benchmarks/pacer.py URL --rate 5000 --seconds 10``) it prints one
JSON object with percentiles and the encoded HDR histograms; ``proxy_bench.py`` pins it to a
core and reads that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3  # 1 µs .. 60 s, 3 significant digits
PR_SET_TIMERSLACK = 29
LATE_US = 1_000  # a send leaving more than 1 ms after its schedule counts as late


def _tight_timer_slack() -> None:
    """Let this thread's sleeps end within ~1 µs of their deadline (Linux default: 50 µs)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


@dataclass
class Tally:
    """What one run saw; every scheduled request ends in exactly one of the counters."""

    scheduled: int = 0
    answered: int = 0  # recorded latencies (after warm-up) plus warm-up answers
    errors: int = 0  # non-2xx, malformed answer, or the connection lost mid-request
    unanswered: int = 0  # still waiting when the run's grace period ended
    late_sends: int = 0
    max_backlog: int = 0
    connections_opened: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)
    send_lag: HdrHistogram = field(default_factory=new_histogram)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # scheduled time of the request in flight
        self.record = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.pacer.connection_ready(self)

    def send(self, due: float, record: bool) -> None:
        assert self.transport is not None
        self.due, self.record = due, record
        self.transport.write(self.pacer.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.due is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:  # every target here answers with a length; anything else is an error
                self._fail()
                return
            eol = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : eol if eol > 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            ok = head[9:10] == b"2"
            del self.buffer[:total]
            due, record = self.due, self.record
            self.due = None
            self.pacer.answered(self, due, record, ok)

    def _fail(self) -> None:
        self.pacer.lost(self)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pacer.lost(self)


class Pacer:
    """Sends ``rate`` requests per second for ``seconds`` (after ``warmup`` unrecorded ones)."""

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        seconds: float,
        warmup: float = 1.0,
        connections: int = 32,
        max_connections: int = 512,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        self.rate, self.seconds, self.warmup = rate, seconds, warmup
        self.connections, self.max_connections = connections, max_connections
        self.tally = Tally()
        self.idle: deque[_Connection] = deque()
        self.backlog: deque[tuple[float, bool]] = deque()
        self.open = 0  # connected or connecting
        self.in_flight = 0
        self.done = asyncio.Event()
        self.finished_sending = False
        self.stopping = False

    # --- connection callbacks ------------------------------------------------------------

    def connection_ready(self, conn: _Connection) -> None:
        self._next(conn)

    def answered(self, conn: _Connection, due: float, record: bool, ok: bool) -> None:
        self.in_flight -= 1
        if ok:
            self.tally.answered += 1
            if record:
                latency_us = (time.perf_counter() - due) * 1e6
                self.tally.latency.record_value(max(LOWEST_US, min(HIGHEST_US, int(latency_us))))
        else:
            self.tally.errors += 1
        self._next(conn)

    def lost(self, conn: _Connection) -> None:
        if conn.due is not None:  # the request in flight is lost with its connection
            conn.due = None
            self.in_flight -= 1
            self.tally.errors += 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()
        conn.transport = None
        self.open -= 1
        self._check_done()

    # --- scheduling ----------------------------------------------------------------------

    def _next(self, conn: _Connection) -> None:
        if self.backlog:
            due, record = self.backlog.popleft()
            self._send(conn, due, record)
        else:
            self.idle.append(conn)
            self._check_done()

    def _send(self, conn: _Connection, due: float, record: bool) -> None:
        lag_us = (time.perf_counter() - due) * 1e6
        if lag_us > LATE_US:
            self.tally.late_sends += 1
        if record:
            self.tally.send_lag.record_value(max(LOWEST_US, min(HIGHEST_US, int(lag_us))))
        self.in_flight += 1
        conn.send(due, record)

    def _dispatch(self, due: float, record: bool) -> None:
        self.tally.scheduled += 1
        while self.idle:
            conn = self.idle.popleft()
            if conn.transport is not None:
                self._send(conn, due, record)
                return
        self.backlog.append((due, record))
        self.tally.max_backlog = max(self.tally.max_backlog, len(self.backlog))
        if self.open < self.max_connections:
            self._connect()

    def _connect(self) -> None:
        self.open += 1
        self.tally.connections_opened += 1
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_connection(lambda: _Connection(self), self.host, self.port)
        )
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.open -= 1  # refused: the backlog waits for another connection
            self._check_done()

    def _check_done(self) -> None:
        if self.finished_sending and self.in_flight == 0 and not self.backlog:
            self.done.set()

    async def run(self, grace: float = 5.0) -> Tally:
        for _ in range(self.connections):
            self._connect()
        deadline = time.perf_counter() + 5
        while len(self.idle) < self.connections and self.open > 0:
            if time.perf_counter() > deadline:
                raise ConnectionError(f"{self.host}:{self.port} did not take connections in 5 s")
            await asyncio.sleep(0.01)
        if self.open == 0:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}")
        warm = int(self.warmup * self.rate)
        total = warm + int(self.seconds * self.rate)
        start = time.perf_counter() + 0.01
        loop = asyncio.get_running_loop()
        all_sent = asyncio.Event()
        sent = 0

        def send_due(upto: int) -> None:  # in the loop's thread
            nonlocal sent
            while sent < upto:
                self._dispatch(start + sent / self.rate, record=sent >= warm)
                sent += 1
            if sent >= total:
                all_sent.set()

        def clock() -> None:
            # The loop's own timers have 1 ms resolution (a 0.2 ms sleep spins instead):
            # a thread sleeping to each due time and waking the loop keeps sends on time
            # without burning the core the backend shares.
            _tight_timer_slack()
            due = 0
            while due < total and not self.stopping:
                delay = start + due / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                due = min(total, int((time.perf_counter() - start) * self.rate) + 1)
                loop.call_soon_threadsafe(send_due, due)

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-4)  # the clock thread gets the GIL within 0.1 ms
        thread = threading.Thread(target=clock, daemon=True)
        thread.start()
        try:
            await all_sent.wait()
        finally:
            self.stopping = True
            thread.join()
            sys.setswitchinterval(switch)
        self.finished_sending = True
        self._check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), grace)
        self.tally.unanswered = self.in_flight + len(self.backlog)
        for conn in list(self.idle):
            if conn.transport is not None:
                conn.transport.close()
        return self.tally


def summary(tally: Tally, rate: float, seconds: float) -> dict[str, Any]:
    latency, lag = tally.latency, tally.send_lag
    recorded = latency.get_total_count()
    return {
        "rate": rate,
        "seconds": seconds,
        "scheduled": tally.scheduled,
        "answered": tally.answered,
        "recorded": recorded,
        "achieved_rate": recorded / seconds if seconds else 0.0,
        "errors": tally.errors,
        "unanswered": tally.unanswered,
        "late_sends": tally.late_sends,
        "max_backlog": tally.max_backlog,
        "connections_opened": tally.connections_opened,
        "latency_us": {
            "p50": latency.get_value_at_percentile(50),
            "p99": latency.get_value_at_percentile(99),
            "p999": latency.get_value_at_percentile(99.9),
            "max": latency.get_max_value(),
        },
        "send_lag_us": {
            "p50": lag.get_value_at_percentile(50),
            "p99": lag.get_value_at_percentile(99),
            "max": lag.get_max_value(),
        },
        "histogram": latency.encode().decode("ascii") if recorded else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    import uvloop

    pacer = Pacer(
        args.url,
        rate=args.rate,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
    )
    tally = uvloop.run(pacer.run())
    print(json.dumps(summary(tally, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
