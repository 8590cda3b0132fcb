"""One poller for every open page: the journal's new events every half second, folded and pushed.

``Feed.run`` reads the events after the last seq it saw (in a worker thread: SQLite and psycopg
block), folds them into the ``Board`` and puts the resulting ``Update`` on every subscriber's
queue. A page that falls behind (its queue full) is dropped; its EventSource reconnects and
starts over from a snapshot. A journal that cannot be read is shown on the page and retried:
it never ends the dashboard. Sync lag is read live every few seconds when the plan migrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from changeover.dashboard.board import Board, Update
from changeover.errors import ChangeoverError
from changeover.journal import Journal
from changeover.journal.events import Event
from changeover.secrets import REDACTOR

log = logging.getLogger(__name__)

POLL_S = 0.5
LAG_S = 5.0
QUEUE = 256  # updates a page may fall behind by (two minutes of polls) before it is dropped
READ_LIMIT = 5000  # events folded per poll: a long journal is caught up in steps, not one stall

Clock = Callable[[], datetime]
LagReader = Callable[[], Awaitable[dict[str, Any]]]


class Feed:
    def __init__(
        self,
        journal: Journal,
        board: Board,
        *,
        poll_s: float = POLL_S,
        lag: LagReader | None = None,
        lag_s: float = LAG_S,
        clock: Clock | None = None,
    ) -> None:
        self.journal = journal
        self.board = board
        self.poll_s = poll_s
        self.lag = lag
        self.lag_s = lag_s
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._queues: set[asyncio.Queue[Update | None]] = set()
        self._lag_at = -LAG_S
        self._lock = asyncio.Lock()  # one poll at a time: run() and a snapshot's catch-up

    # --- subscribers -----------------------------------------------------------------------

    async def subscribe(self) -> tuple[asyncio.Queue[Update | None], Update]:
        """A queue of the updates to come and, consistent with it, the snapshot to start from."""
        async with self._lock:
            queue: asyncio.Queue[Update | None] = asyncio.Queue(QUEUE)
            self._queues.add(queue)
            return queue, self.board.snapshot(self.clock())

    def unsubscribe(self, queue: asyncio.Queue[Update | None]) -> None:
        self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self._queues):
            _end(queue)
        self._queues.clear()

    async def snapshot(self) -> Update:
        async with self._lock:
            return self.board.snapshot(self.clock())

    # --- polling ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception as exc:
                # The page must never freeze on one bad poll: say so on it and poll again.
                self.board.journal_error = f"the dashboard could not update: {exc!r}"
                log.warning("%s", self.board.journal_error)
                log.debug("dashboard poll failed", exc_info=True)
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))

    async def catch_up(self) -> None:
        """Poll until the board has every event the journal had when this started, so a
        dashboard started late in a long cutover never serves a page from the past."""
        head = (await asyncio.to_thread(self.journal.head)).seq
        while self.board.seq < head:
            before = self.board.seq
            await self.poll()
            if self.board.seq == before:
                return  # nothing more to read (an unreadable journal says so on the page)

    async def poll(self) -> Update:
        """Read and fold new events, read the lag when due, push what changed."""
        async with self._lock:
            try:
                events = await asyncio.to_thread(self._read, self.board.seq)
                self.board.journal_error = None
            except ChangeoverError as exc:
                events = []
                self.board.journal_error = f"cannot read the journal: {exc}"
                log.warning("%s", self.board.journal_error)
            self.board.fold(events)
            if self.lag is not None and time.monotonic() - self._lag_at >= self.lag_s:
                self._lag_at = time.monotonic()
                self.board.live_lag = await self.lag()
            update = self.board.update(self.clock())
            if not update.empty:
                self._push(update)
            return update

    def _read(self, after: int) -> list[Event]:
        events = []
        for event in self.journal.events(since_seq=after):
            events.append(event)
            if len(events) >= READ_LIMIT:
                break
        return events

    def _push(self, update: Update) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:
                # Too slow (a phone on a bad link): drop it; its EventSource reconnects and
                # starts over from a snapshot rather than from a gap.
                self._queues.discard(queue)
                _end(queue)


def _end(queue: asyncio.Queue[Update | None]) -> None:
    while not queue.empty():
        queue.get_nowait()
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(None)


def live_lag(runbook: Any) -> LagReader | None:
    """A reader of the forward sync lag (rows and seconds PostgreSQL is behind the SQLite
    changelog), or None when the plan has no ``migrate:``. Every failure becomes a plain
    ``{"error": ...}`` on the page."""
    migration = runbook.plan.migrate
    if migration is None:
        return None

    def read() -> dict[str, Any]:
        from changeover.migrate.apply import pending_forward
        from changeover.migrate.planning import sqlite_path
        from changeover.plan.systems import PostgresSystem
        from changeover.probes.base import ProbeContext

        at = datetime.now(UTC).isoformat()
        try:
            base = runbook.loaded.base_dir
            path = sqlite_path(migration.source)
            source = path if path.is_absolute() else base / path
            system = runbook.plan.systems[migration.target]
            assert isinstance(system, PostgresSystem)  # the plan validated the target's kind
            ctx = ProbeContext(runbook.plan.systems, base_dir=base)
            url = ctx.secret(system.url, what=f"systems.{migration.target}.url")
            lag = pending_forward(source, url, "public")
        except (ChangeoverError, psycopg.Error, sqlite3.Error, OSError) as exc:
            return {"error": REDACTOR.scrub(str(exc)).strip(), "at": at}
        if lag is None:
            return {"error": "no change capture in the SQLite file yet (migrate copy)", "at": at}
        return {**lag.to_json(), "at": at}

    async def read_async() -> dict[str, Any]:
        return await asyncio.to_thread(read)

    return read_async
