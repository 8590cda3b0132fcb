"""The team journal store: the same two tables in a PostgreSQL database.

Every append is one transaction that first takes ``pg_advisory_xact_lock(APPEND_LOCK)``, so
appends from every process and machine are serialised and the head read inside it is the true
tip; the lock is released by COMMIT/ROLLBACK, even if the client dies. ``verify`` reads from one
REPEATABLE READ snapshot. Connection failures name host and port, never the password; a lost
connection is re-opened by the next call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from changeover.errors import JournalCorrupt, JournalError, UsageError
from changeover.journal.chain import GENESIS_HASH, Head, StoredRow
from changeover.journal.store import (
    COLUMNS,
    EVENTS_TABLE,
    HEAD_TABLE,
    Clock,
    MakeRow,
    SqlJournal,
)
from changeover.secrets import REDACTOR

T = TypeVar("T")

APPEND_LOCK = int.from_bytes(b"changeov", "big")
"""The advisory lock key every journal writer takes (a constant: one journal per database)."""

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
        seq bigint PRIMARY KEY,  -- unique: a second line of defence behind the advisory lock
        ts text NOT NULL,
        kind text NOT NULL,
        actor text NOT NULL,
        payload text NOT NULL,  -- text, not jsonb: the hash covers these exact bytes
        prev_hash text NOT NULL,
        hash text NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {EVENTS_TABLE}_kind ON {EVENTS_TABLE} (kind, seq)",
    f"""CREATE TABLE IF NOT EXISTS {HEAD_TABLE} (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL
    )""",
    # Only for a new journal: re-creating a deleted head over existing events would hide that.
    f"""INSERT INTO {HEAD_TABLE} (id, seq, hash)
        SELECT 1, 0, '{GENESIS_HASH}' WHERE NOT EXISTS (SELECT 1 FROM {EVENTS_TABLE})
        ON CONFLICT (id) DO NOTHING""",
)


class PostgresJournal(SqlJournal):
    """A journal in a PostgreSQL database given by URL (tables created on first use)."""

    placeholder = "%s"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        lock_timeout: float = 60.0,
        clock: Clock | None = None,
        actor: str | None = None,
    ) -> None:
        try:
            info = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise UsageError("journal: the PostgreSQL URL is not valid") from exc
        password = info.get("password")
        if password:
            REDACTOR.register(str(password))
        host = str(info.get("host") or os.environ.get("PGHOST") or "localhost")
        port = str(info.get("port") or os.environ.get("PGPORT") or "5432")
        dbname = str(info.get("dbname") or info.get("user") or "")
        self.server = f"{host}:{port}"
        super().__init__(f"postgresql://{self.server}/{dbname}", clock=clock, actor=actor)
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock_timeout = lock_timeout
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._run("open", self._prepare)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()

    # --- primitives ---------------------------------------------------------------------------

    def _write(self, make: MakeRow) -> StoredRow:
        def transaction(conn: psycopg.Connection[Any]) -> StoredRow:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                # READ COMMITTED: these statements see every append committed before the lock.
                head = _head(conn)
                last = conn.execute(
                    f"SELECT seq, hash FROM {EVENTS_TABLE} ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                row = make(head, Head(last[0], last[1]) if last else None)
                conn.execute(
                    f"INSERT INTO {EVENTS_TABLE} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (row.seq, row.ts, row.kind, row.actor, row.payload, row.prev_hash, row.hash),
                )
                conn.execute(
                    f"UPDATE {HEAD_TABLE} SET seq = %s, hash = %s WHERE id = 1",
                    (row.seq, row.hash),
                )
                return row

        return self._run("write to", transaction)

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._run("read", lambda conn: conn.execute(sql, params).fetchall())

    def _snapshot(self) -> tuple[list[StoredRow], Head | None]:
        def read(conn: psycopg.Connection[Any]) -> tuple[list[StoredRow], Head | None]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                rows = conn.execute(f"SELECT {COLUMNS} FROM {EVENTS_TABLE} ORDER BY seq")
                return [StoredRow(*row) for row in rows.fetchall()], _head(conn)

        return self._run("read", read)

    # --- plumbing -----------------------------------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Two first-time writers must not race on CREATE TABLE IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            for statement in SCHEMA:
                conn.execute(statement)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        except psycopg.Error as exc:
            network, reason = _connect_reason(exc)
            verb = "reach" if network else "log in to"
            raise JournalError(
                f"cannot {verb} journal database at {self.server}: {reason}"
            ) from exc
        # A writer stuck inside its transaction must not block every other writer forever.
        conn.execute(f"SET lock_timeout = {round(self._lock_timeout * 1000)}")
        return conn

    def _run(self, doing: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        with self._lock:
            if self._closed:
                raise JournalError(f"journal {self.location} is already closed")
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            try:
                return work(self._conn)
            except psycopg.Error as exc:
                raise self._translate(exc, doing) from exc

    def _translate(self, exc: psycopg.Error, doing: str) -> JournalError:
        primary = REDACTOR.scrub(
            (exc.diag.message_primary if exc.diag else None) or str(exc).strip().splitlines()[0]
        )
        where = f"journal {self.location}"
        if isinstance(exc, pg_errors.UniqueViolation):
            return JournalCorrupt(
                f"cannot {doing} {where}: an event with that seq already exists — something "
                "wrote to it without taking its lock; nothing was appended"
            )
        if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedColumn):
            return JournalCorrupt(f"{where} has lost part of its schema ({primary})")
        if isinstance(exc, pg_errors.LockNotAvailable):
            return JournalError(
                f"cannot {doing} {where}: another writer held its lock for more than "
                f"{self._lock_timeout:g} s"
            )
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return JournalError(f"cannot {doing} {where}: {primary}")
        if isinstance(exc, psycopg.OperationalError):
            return JournalError(
                f"lost the connection to journal database at {self.server} ({primary}); "
                "if this was an append, check with `changeover journal verify` whether it landed"
            )
        return JournalError(f"cannot {doing} {where}: {primary}")


def _head(conn: psycopg.Connection[Any]) -> Head | None:
    found = conn.execute(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1").fetchone()
    return Head(int(found[0]), str(found[1])) if found else None


# (pattern, plain reason or None to quote the match, is it a network problem?)
_REASONS: tuple[tuple[re.Pattern[str], str | None, bool], ...] = (
    (
        re.compile(r"connection refused", re.I),
        "connection refused (is PostgreSQL running there?)",
        True,
    ),
    (re.compile(r"timeout expired|timed out", re.I), "timed out", True),
    (
        re.compile(r"failed to resolve host|could not translate host name", re.I),
        "unknown host",
        True,
    ),
    (re.compile(r'password authentication failed for user "[^"]*"', re.I), None, False),
    (re.compile(r'database "[^"]*" does not exist', re.I), None, False),
    (re.compile(r'role "[^"]*" does not exist', re.I), None, False),
    (re.compile(r"no pg_hba\.conf entry", re.I), "the server does not accept this client", False),
    (
        re.compile(r"no password supplied", re.I),
        "the server wants a password, none was given",
        False,
    ),
)


def _connect_reason(exc: psycopg.Error) -> tuple[bool, str]:
    """Why a connection failed, in one plain clause (libpq is verbose and nested)."""
    message = str(exc)
    for pattern, reason, network in _REASONS:
        match = pattern.search(message)
        if match:
            return network, reason or match.group(0)
    # Otherwise the last "...failed: <reason>" clause, first line only, without secrets.
    tail = message.rsplit("failed:", 1)[-1].strip().splitlines()
    return True, REDACTOR.scrub(tail[0] if tail else type(exc).__name__)
