"""The journal interface, the core both stores share, and ``open_journal`` to pick a store.

A store only provides four primitives (a locked append transaction, a read query, a consistent
snapshot for ``verify``, close); everything else — validation, redaction, hashing, batching,
export — lives once in ``SqlJournal``. ``sqlite.py`` and ``postgres.py`` hold the dialects.

Both stores use the same two tables: ``changeover_events`` (one row per event, ``seq`` unique)
and ``changeover_head`` (a single row: the last seq and hash, updated with every append).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TextIO

from changeover.errors import JournalCorrupt, JournalError, UsageError
from changeover.journal.chain import (
    GENESIS_HASH,
    Head,
    StoredRow,
    VerifyResult,
    event_hash,
    verify_chain,
)
from changeover.journal.events import (
    Event,
    check_kind,
    default_actor,
    encode_payload,
    utc_timestamp,
)
from changeover.secrets import REDACTOR, mask_url

EVENTS_TABLE = "changeover_events"
HEAD_TABLE = "changeover_head"
COLUMNS = "seq, ts, kind, actor, payload, prev_hash, hash"
BATCH = 500  # rows per read query: bounded memory, and no read transaction held while iterating

Clock = Callable[[], datetime]
MakeRow = Callable[[Head | None, Head | None], StoredRow]


class Journal(Protocol):
    """The append-only, hash-chained event log; every store implements exactly this."""

    @property
    def location(self) -> str:
        """Where the journal lives, fit to print (a file path, or a URL without its password)."""
        ...

    def append(self, kind: str, payload: Mapping[str, Any], actor: str | None = None) -> Event:
        """Write one event (payload redacted) after the current last one, and return it."""
        ...

    def events(self, since_seq: int = 0, kinds: Iterable[str] | None = None) -> Iterator[Event]:
        """Events with ``seq > since_seq`` in order, optionally only of the given kinds."""
        ...

    def latest(self, kind: str, /, **payload_filters: Any) -> Event | None:
        """The newest event of ``kind`` whose payload has every ``key=value`` given."""
        ...

    def head(self) -> Head:
        """The last event's seq and hash as the head record has them (0 and genesis if empty)."""
        ...

    def verify(self) -> VerifyResult:
        """Check the whole chain and the head record; names the first bad event."""
        ...

    def export(self, fp: TextIO) -> int:
        """Write every event as one JSON line (all fields); returns the number written."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SqlJournal(ABC):
    """The shared core of the SQL stores; subclasses supply the dialect's four primitives."""

    placeholder: ClassVar[str]  # "?" for sqlite3, "%s" for psycopg

    def __init__(self, location: str, *, clock: Clock | None = None, actor: str | None = None):
        self._location = location
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._actor = actor or default_actor()
        # One connection per journal object; the lock lets threads share it safely.
        self._lock = threading.RLock()

    @property
    def location(self) -> str:
        return self._location

    # --- the dialect's primitives -------------------------------------------------------------

    @abstractmethod
    def _write(self, make: MakeRow) -> StoredRow:
        """One transaction holding the journal's write lock: read the head record and the last
        event's (seq, hash), ``row = make(head, last)``, insert the row, set the head to it."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return its rows."""

    @abstractmethod
    def _snapshot(self) -> tuple[list[StoredRow], Head | None]:
        """Every event row (by seq) and the head record, read from one consistent snapshot."""

    @abstractmethod
    def close(self) -> None: ...

    # --- the Journal interface ----------------------------------------------------------------

    def append(self, kind: str, payload: Mapping[str, Any], actor: str | None = None) -> Event:
        check_kind(kind)
        clean, text = encode_payload(kind, payload)
        who = REDACTOR.scrub(actor or self._actor)

        def make(head: Head | None, last: Head | None) -> StoredRow:
            tip = self._checked_tip(head, last)
            seq = tip.seq + 1
            # Stamped under the write lock, so timestamps never go backwards along the chain
            # (short of the clock itself stepping back).
            ts = utc_timestamp(self._clock())
            digest = event_hash(tip.hash, seq, ts, kind, who, clean)
            return StoredRow(seq, ts, kind, who, text, tip.hash, digest)

        row = self._write(make)
        return Event(row.seq, row.ts, kind, who, clean, row.prev_hash, row.hash)

    def events(self, since_seq: int = 0, kinds: Iterable[str] | None = None) -> Iterator[Event]:
        wanted = [kinds] if isinstance(kinds, str) else None if kinds is None else list(kinds)
        if wanted == []:
            return
        after = since_seq
        while True:
            rows = self._select(after=after, kinds=wanted)
            for row in rows:
                yield Event.from_row(row)
            if len(rows) < BATCH:
                return
            after = rows[-1].seq

    def latest(self, kind: str, /, **payload_filters: Any) -> Event | None:
        before: int | None = None
        while True:
            rows = self._select(kinds=[kind], before=before, newest_first=True)
            for row in rows:
                event = Event.from_row(row)
                if all(
                    key in event.payload and event.payload[key] == value
                    for key, value in payload_filters.items()
                ):
                    return event
            if len(rows) < BATCH:
                return None
            before = rows[-1].seq

    def head(self) -> Head:
        found = self._query(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1", [])
        if not found:
            raise JournalCorrupt(
                f"journal {self.location} has lost its head record "
                "(run `changeover journal verify`)"
            )
        return Head(int(found[0][0]), str(found[0][1]))

    def verify(self) -> VerifyResult:
        rows, head = self._snapshot()
        return verify_chain(rows, head)

    def export(self, fp: TextIO) -> int:
        written = 0
        for event in self.events():
            try:
                fp.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
            except OSError as exc:
                raise JournalError(
                    f"cannot write the journal export: {exc.strerror or exc}"
                ) from exc
            written += 1
        return written

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- shared helpers -----------------------------------------------------------------------

    def _select(
        self,
        *,
        after: int = 0,
        before: int | None = None,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
    ) -> list[StoredRow]:
        p = self.placeholder
        where = [f"seq > {p}"]
        params: list[Any] = [after]
        if before is not None:
            where.append(f"seq < {p}")
            params.append(before)
        if kinds is not None:
            where.append(f"kind IN ({', '.join([p] * len(kinds))})")
            params.extend(check_kind(kind) for kind in kinds)
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT {COLUMNS} FROM {EVENTS_TABLE} WHERE {' AND '.join(where)} "
            f"ORDER BY seq {order} LIMIT {BATCH}"
        )
        return [StoredRow(*row) for row in self._query(sql, params)]

    def _checked_tip(self, head: Head | None, last: Head | None) -> Head:
        """Where the next event goes; refuses to extend a chain whose end was tampered with."""
        if head is None:
            raise JournalCorrupt(
                f"journal {self.location} has lost its head record; nothing was appended "
                "(run `changeover journal verify`)"
            )
        tip = last or Head(0, GENESIS_HASH)
        if tip != head:
            raise JournalCorrupt(
                f"journal {self.location} does not end where its head record says (head: event "
                f"{head.seq}, last stored: event {tip.seq}); nothing was appended "
                "(run `changeover journal verify`)"
            )
        return tip


def open_journal(spec: str | None, plan_dir: Path) -> Journal:
    """Open (creating if needed) the journal a plan names.

    ``None`` → SQLite at ``<plan_dir>/.changeover/journal.db``; ``sqlite:///abs/path.db`` or
    ``sqlite:relative/path.db`` (relative to the plan) → that SQLite file;
    ``postgresql://…`` → a PostgreSQL database (tables are created on first use).
    """
    if spec is None or not spec.strip():
        from changeover.journal.sqlite import SqliteJournal

        return SqliteJournal(plan_dir / ".changeover" / "journal.db")
    spec = spec.strip()
    if spec.startswith(("postgresql://", "postgres://")):
        from changeover.journal.postgres import PostgresJournal

        return PostgresJournal(spec)
    if spec.startswith("sqlite:"):
        from changeover.journal.sqlite import SqliteJournal

        rest = spec.removeprefix("sqlite:")
        rest = rest.removeprefix("//")  # sqlite:///abs → /abs, sqlite://rel → rel
        if not rest:
            raise UsageError("journal: 'sqlite:' needs a file path, like sqlite:///srv/journal.db")
        path = Path(rest).expanduser()
        return SqliteJournal(path if path.is_absolute() else plan_dir / path)
    raise UsageError(
        f"journal: expected a postgresql:// URL or sqlite:///path/to/journal.db, "
        f"got {mask_url(spec)!r}"
    )
