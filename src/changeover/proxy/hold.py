"""The write hold: writes wait in a FIFO queue during the data handoff, then go in arrival order.

The handoff is hold → wait for in-flight writes → drain the changelog → flip the write owner →
release. A held request only waits here; it is routed after `release()` by the balancer, so it
reaches the write owner *of the release moment*. Bounded: a full queue or a wait longer than
``max_hold`` seconds raises `HoldRejected`, which the chooser turns into 503 + Retry-After.
`WritesInFlight` counts the writes routed before the hold that have not ended yet, and waits
for them to reach 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any


class HoldRejected(Exception):
    """A held write cannot wait any longer (queue full or held too long); ``str()`` says why."""


@dataclass
class _Waiter:
    future: asyncio.Future[None]
    since: float
    gone: bool = False  # the waiting task was cancelled (client went away)


@dataclass(frozen=True)
class HoldStats:
    held_now: int
    released: int
    rejected_full: int
    rejected_timeout: int
    longest_wait: float  # seconds, over every waiter that has left the queue so far
    oldest_waiting: float  # seconds the head of the queue has waited, 0 when empty

    def to_json(self) -> dict[str, Any]:
        return {
            "held_now": self.held_now,
            "released": self.released,
            "rejected_full": self.rejected_full,
            "rejected_timeout": self.rejected_timeout,
            "longest_wait": round(self.longest_wait, 6),
            "oldest_waiting": round(self.oldest_waiting, 6),
        }


class WriteHold:
    """A bounded FIFO of waiting writes, released in arrival order.

    Release order: `release()` resolves the waiters' futures in queue order; asyncio runs
    future callbacks in the order they were scheduled, so the waiting tasks resume, and route,
    in arrival order. Time-outs use the injected clock; a timer on the running loop calls
    `expire()` when the head of the queue is due (all waiters share ``max_hold``, so the head
    is always the first due). Tests with a fake clock call `expire()` themselves.
    """

    def __init__(
        self,
        *,
        max_waiters: int = 10_000,
        max_hold: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_waiters = max_waiters
        self.max_hold = max_hold
        self.clock = clock
        self._queue: deque[_Waiter] = deque()
        self._live = 0
        self._released = 0
        self._rejected_full = 0
        self._rejected_timeout = 0
        self._longest = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held_now(self) -> int:
        return self._live

    async def wait(self) -> None:
        """Wait until released; raise `HoldRejected` when the queue is full or time runs out."""
        if self._live >= self.max_waiters:
            self._rejected_full += 1
            raise HoldRejected(
                f"too many writes held ({self._live}, the limit is {self.max_waiters}); "
                "retry in a moment"
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), self.clock())
        self._queue.append(waiter)
        self._live += 1
        self._arm(loop)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if not waiter.future.done() or waiter.future.cancelled():
                waiter.gone = True
                self._live -= 1
            raise

    def release(self) -> int:
        """Let every waiter go, in arrival order; returns how many."""
        now = self.clock()
        count = 0
        while self._queue:
            waiter = self._queue.popleft()
            if waiter.gone or waiter.future.done():
                continue
            self._note_wait(now - waiter.since)
            waiter.future.set_result(None)
            count += 1
        self._live = 0
        self._released += count
        self._disarm()
        return count

    def expire(self) -> int:
        """Reject the waiters held for ``max_hold`` or longer; returns how many."""
        now = self.clock()
        count = 0
        while self._queue:
            waiter = self._queue[0]
            if waiter.gone or waiter.future.done():
                self._queue.popleft()
                continue
            waited = now - waiter.since
            if waited < self.max_hold:
                break
            self._queue.popleft()
            self._live -= 1
            self._note_wait(waited)
            waiter.future.set_exception(
                HoldRejected(
                    f"write held for {waited:.1f}s during a data handoff, longer than the "
                    f"{self.max_hold:g}s limit; retry in a moment"
                )
            )
            count += 1
        self._rejected_timeout += count
        return count

    def stats(self) -> HoldStats:
        now = self.clock()
        oldest = 0.0
        for waiter in self._queue:
            if not (waiter.gone or waiter.future.done()):
                oldest = now - waiter.since
                break
        return HoldStats(
            held_now=self._live,
            released=self._released,
            rejected_full=self._rejected_full,
            rejected_timeout=self._rejected_timeout,
            longest_wait=self._longest,
            oldest_waiting=oldest,
        )

    def _note_wait(self, seconds: float) -> None:
        self._longest = max(self._longest, seconds)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None or not self._queue:
            return
        head = self._queue[0]
        delay = max(0.0, head.since + self.max_hold - self.clock())
        self._timer = loop.call_later(delay, self._on_timer, loop)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self.expire()
        self._arm(loop)


class WritesInFlight:
    """Writes routed to each backend whose exchange has not ended yet.

    The balancer calls `started` when it routes a write and hands the returned callback to the
    core with its choice; the core calls it exactly once when that exchange ends (answered in
    full, failed, or abandoned by the client). The hot path costs two int updates per write and
    nothing per read. `settle` waits, without blocking the loop, until no write is in flight:
    during a hold no new write is routed, so the count can only fall.

    The proxy cannot see past its own connection: a write whose client went away, or whose
    upstream timed out, stops counting when the proxy gives it up, though the backend may still
    be running it.
    """

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._total = 0
        self._finish: dict[str, Callable[[], None]] = {}  # one callback per backend, made once
        self._idle: list[asyncio.Future[None]] = []  # `settle` calls waiting for 0

    @property
    def total(self) -> int:
        return self._total

    def by_backend(self, backends: Iterable[str] = ()) -> dict[str, int]:
        """The count per backend: every name in ``backends`` (0 if none) and any other counted."""
        counts = dict.fromkeys(backends, 0)
        counts.update(self._count)
        return counts

    def started(self, backend: str) -> Callable[[], None]:
        """Count one write routed to ``backend``; call the returned function once when it ends."""
        self._count[backend] = self._count.get(backend, 0) + 1
        self._total += 1
        finish = self._finish.get(backend)
        if finish is None:
            finish = self._finish[backend] = partial(self._finished, backend)
        return finish

    def _finished(self, backend: str) -> None:
        self._count[backend] -= 1
        self._total -= 1
        if self._total == 0 and self._idle:
            idle, self._idle = self._idle, []
            for future in idle:
                if not future.done():
                    future.set_result(None)

    async def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for no write in flight; True if that happened."""
        if self._total == 0:
            return True
        future = asyncio.get_running_loop().create_future()
        self._idle.append(future)
        try:
            await asyncio.wait((future,), timeout=timeout)
        finally:
            if not future.done():
                future.cancel()
                self._idle.remove(future)
        return not future.cancelled()
