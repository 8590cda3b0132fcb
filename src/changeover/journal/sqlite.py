"""The default journal store: one SQLite file in WAL mode, safe for several processes at once.

Appends run in ``BEGIN IMMEDIATE`` transactions, which take SQLite's single write lock before the
head is read, so two processes can never both extend the same tip. ``busy_timeout`` makes SQLite
wait for that lock; whatever still comes back as "database is locked" is retried until a deadline.
Writes are fully synchronous: an event that ``append`` returned survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from changeover.errors import JournalCorrupt, JournalError
from changeover.journal.chain import GENESIS_HASH, Head, StoredRow
from changeover.journal.store import (
    COLUMNS,
    EVENTS_TABLE,
    HEAD_TABLE,
    Clock,
    MakeRow,
    SqlJournal,
)

T = TypeVar("T")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
    seq INTEGER PRIMARY KEY,  -- unique: a second line of defence behind the write lock
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {EVENTS_TABLE}_kind ON {EVENTS_TABLE} (kind, seq);
CREATE TABLE IF NOT EXISTS {HEAD_TABLE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
-- Only for a new journal: re-creating a deleted head over existing events would hide that.
INSERT OR IGNORE INTO {HEAD_TABLE} (id, seq, hash)
    SELECT 1, 0, '{GENESIS_HASH}' WHERE NOT EXISTS (SELECT 1 FROM {EVENTS_TABLE});
"""

# Primary result codes (the low byte of sqlite3.Error.sqlite_errorcode).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


class SqliteJournal(SqlJournal):
    """A journal in one SQLite file (created with its directory if missing)."""

    placeholder = "?"

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        lock_deadline: float = 60.0,
        clock: Clock | None = None,
        actor: str | None = None,
    ) -> None:
        super().__init__(str(path), clock=clock, actor=actor)
        self.path = path
        self._lock_deadline = lock_deadline
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise JournalError(
                f"cannot open journal {path}: {path.parent} exists and is not a directory"
            ) from exc
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {_os_reason(exc)}") from exc
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc
        try:
            self._retrying("open", self._prepare)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- primitives ---------------------------------------------------------------------------

    def _write(self, make: MakeRow) -> StoredRow:
        def transaction(conn: sqlite3.Connection) -> StoredRow:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                head = _head(conn)
                last = conn.execute(
                    f"SELECT seq, hash FROM {EVENTS_TABLE} ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                row = make(head, Head(last[0], last[1]) if last else None)
                conn.execute(
                    f"INSERT INTO {EVENTS_TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row.seq, row.ts, row.kind, row.actor, row.payload, row.prev_hash, row.hash),
                )
                conn.execute(
                    f"UPDATE {HEAD_TABLE} SET seq = ?, hash = ? WHERE id = 1", (row.seq, row.hash)
                )
                return row

        return self._retrying("write to", transaction)

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._retrying("read", lambda conn: conn.execute(sql, params).fetchall())

    def _snapshot(self) -> tuple[list[StoredRow], Head | None]:
        def read(conn: sqlite3.Connection) -> tuple[list[StoredRow], Head | None]:
            # In WAL mode a read transaction sees one snapshot: rows and head agree.
            with _transaction(conn, "BEGIN"):
                rows = conn.execute(f"SELECT {COLUMNS} FROM {EVENTS_TABLE} ORDER BY seq")
                return [StoredRow(*row) for row in rows], _head(conn)

        return self._retrying("read", read)

    # --- plumbing -----------------------------------------------------------------------------

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        with _transaction(conn, "BEGIN IMMEDIATE"):
            _run_script(conn, SCHEMA)

    def _retrying(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the connection, retrying while another process holds the lock."""
        deadline = time.monotonic() + self._lock_deadline
        delay = 0.002
        while True:
            try:
                with self._lock:
                    return work(self._conn)
            except sqlite3.OperationalError as exc:
                if _code(exc) in (_BUSY, _LOCKED) and time.monotonic() < deadline:
                    # Jitter, so that waiting writers do not retry in lockstep.
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 0.1)
                    continue
                raise self._translate(exc, doing) from exc
            except sqlite3.Error as exc:
                raise self._translate(exc, doing) from exc

    def _translate(self, exc: sqlite3.Error, doing: str) -> JournalError:
        """A plain message for a sqlite3 error; damage becomes ``JournalCorrupt``."""
        code = _code(exc)
        where = f"journal {self.path}"
        if code in (_CORRUPT, _NOTADB):
            return JournalCorrupt(
                f"{where} is damaged or is not a SQLite database ({exc}); "
                "restore it from a copy or export"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return JournalError(f"{where} is already closed")
        if "no such table" in str(exc) or "no such column" in str(exc):
            return JournalCorrupt(f"{where} has lost part of its schema ({exc})")
        reasons = {
            _BUSY: f"another process held its lock for more than {self._lock_deadline:g} s",
            _LOCKED: f"another process held its lock for more than {self._lock_deadline:g} s",
            _READONLY: "the file or its directory is read-only",
            _FULL: "the disk is full",
            _IOERR: f"input/output error ({exc})",
        }
        reason = self._why_cannot_open() if code == _CANTOPEN else reasons.get(code or 0, str(exc))
        return JournalError(f"cannot {doing} {where}: {reason}")

    def _why_cannot_open(self) -> str:
        directory = self.path.parent
        if not os.access(directory, os.W_OK | os.X_OK):
            return "permission denied"
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            return "permission denied"
        if self.path.is_dir():
            return "it is a directory"
        return "unable to open the database file"


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed: leave no transaction open for the retry.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _head(conn: sqlite3.Connection) -> Head | None:
    found = conn.execute(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1").fetchone()
    return Head(found[0], found[1]) if found else None


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    return int(code) & 0xFF


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
