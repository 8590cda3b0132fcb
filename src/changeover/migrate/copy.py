"""Bulk copy SQLite → PostgreSQL: create the tables, COPY every row, then indexes and constraints.

Tables load in parallel (``jobs`` threads, each with its own read-only SQLite connection and its
own PostgreSQL connection; one transaction per table). Values convert through ``values`` (pure).
A row that cannot be represented stops the copy (``UnrepresentableRow``: table, key, column,
reason) or, with ``on_error="quarantine"``, goes to ``_changeover_rejects`` instead (the whole row
is withheld; one reject per bad value); per table the summary reconciles source rows = copied +
rejected, and a mismatch is an error. Post-load statements PostgreSQL refuses (e.g. a foreign key
whose parent row was quarantined) are listed in ``CopySummary.failed_statements``, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.queues
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import (
    FIRST_EXCEPTION,
    Executor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psycopg

from changeover.errors import ChangeoverError
from changeover.migrate import fastlane
from changeover.migrate.schema import ROWID_COLUMN, PgPlan, PgTable, quote
from changeover.migrate.sqlite import connect_readonly
from changeover.migrate.values import RawText, Unrepresentable, converter
from changeover.secrets import REDACTOR

REJECTS_TABLE = "_changeover_rejects"
BATCH_ROWS = 2000
# Flush the COPY buffer at about this many bytes (the 10 MB blob is one row, sent alone).
BATCH_BYTES = 4 * 1024 * 1024
# The fast lane's lines are built by SQLite: larger batches, fewer Python round trips.
FAST_BATCH_ROWS = 10_000

OnError = Literal["stop", "quarantine"]
# progress(table, rows so far, bytes so far)
Progress = Callable[[str, int, int], None]
COPY_STATE = "_changeover_copy"

REJECTS_DDL = f"""CREATE TABLE IF NOT EXISTS {quote(REJECTS_TABLE)} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "table" text NOT NULL,
    key jsonb NOT NULL,
    "column" text NOT NULL,
    reason text NOT NULL,
    raw_value text,
    rejected_at timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(ChangeoverError):
    """The copy could not complete; the message names the table and what to do."""


class UnrepresentableRow(MigrationError):
    """A source value does not fit its column (``on_error="stop"``); names the exact row."""

    def __init__(self, table: str, key: dict[str, object], column: str, reason: str) -> None:
        self.table, self.key, self.column, self.reason = table, key, column, reason
        super().__init__(
            f"{table}: row {json.dumps(key, ensure_ascii=False)}: column {column!r}: {reason}. "
            "Fix the row, add a cast rule, or copy with --on-error quarantine"
        )

    def __reduce__(
        self,
    ) -> tuple[type[UnrepresentableRow], tuple[str, dict[str, object], str, str]]:
        # Raised in a worker process; pickle rebuilds it from the fields, not the message.
        return (UnrepresentableRow, (self.table, self.key, self.column, self.reason))


class _Cancelled(MigrationError):
    """This table stopped because another one failed; never the error reported to the user."""


@dataclass(frozen=True)
class TableCopy:
    """One table's load; ``source_rows == copied + rejected`` always holds for a finished table."""

    table: str
    source_rows: int
    copied: int
    rejected: int
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CopySummary:
    tables: tuple[TableCopy, ...]
    seconds: float
    # Post-load statements (indexes, constraints, foreign keys) PostgreSQL refused, with its reason.
    failed_statements: tuple[tuple[str, str], ...]

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0

    def table(self, name: str) -> TableCopy:
        for entry in self.tables:
            if entry.table == name:
                return entry
        raise KeyError(name)


@dataclass(frozen=True)
class _Reject:
    key: dict[str, object]
    column: str
    reason: str
    raw: str | None


def copy_database(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    *,
    schema: str = "public",
    on_error: OnError = "stop",
    jobs: int = 2,
    progress: Progress | None = None,
    capture: bool = False,
) -> CopySummary:
    """Load every table of ``plan`` from ``sqlite_path`` into ``schema`` at ``pg_url``.

    ``progress(table, rows_so_far, bytes_so_far)`` is called after each batch, from a helper
    thread of this process (never concurrently for two tables with ``jobs=1``).

    ``capture=True`` installs change capture in the SQLite file *before* any table's snapshot
    and records the changelog head read then as where sync starts: every change after it is
    either in the snapshot or applied later (applying it twice is harmless).

    Resumable: each table commits with its entry in ``_changeover_copy``; running the copy again
    after a crash (even kill -9) loads only the tables that did not commit, then finishes.
    """
    if on_error not in ("stop", "quarantine"):
        raise MigrationError(f"on_error must be 'stop' or 'quarantine', not {on_error!r}")
    connect_readonly(sqlite_path).close()  # a missing or non-SQLite file fails here, plainly
    started = time.monotonic()
    done = _begin(sqlite_path, pg_url, schema, plan, on_error, capture)
    todo = PgPlan(
        tables=tuple(t for t in plan.tables if f"table:{t.name}" not in done),
        indexes=(),
        unique_constraints=(),
        foreign_keys=(),
        sequence_resets=(),
        warnings=(),
    )
    results = _copy_tables(sqlite_path, pg_url, schema, todo, on_error, jobs, progress)
    for table in plan.tables:
        if table.name not in results:  # committed by an earlier, interrupted run
            rows, rejected = json.loads(done[f"table:{table.name}"])
            results[table.name] = TableCopy(table.name, rows + rejected, rows, rejected, 0, 0.0)
    failed_statements = _finish(pg_url, schema, plan, done)
    if capture:
        from changeover.migrate.apply import start_position

        start_position(pg_url, schema, int(done["capture_head"]))
    return CopySummary(
        tables=tuple(results[t.name] for t in plan.tables),
        seconds=time.monotonic() - started,
        failed_statements=tuple(failed_statements),
    )


def count_rows(sqlite_path: str | Path, plan: PgPlan) -> dict[str, int]:
    """Rows per table now (for progress and ETA; the copy itself counts in its snapshot)."""
    source = connect_readonly(sqlite_path)
    try:
        return {
            t.name: int(source.execute(f"SELECT count(*) FROM {quote(t.source)}").fetchone()[0])
            for t in plan.tables
        }
    finally:
        source.close()


def _begin(
    sqlite_path: str | Path,
    pg_url: str,
    schema: str,
    plan: PgPlan,
    on_error: OnError,
    capture: bool,
) -> dict[str, str]:
    """Create the schema (first run) or read what an interrupted run finished (resume)."""
    with connect_target(pg_url) as conn, conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        conn.execute(f"SET search_path TO {quote(schema)}")
        state = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (quote(COPY_STATE),)).fetchone()
        if state and state[0]:
            rows = conn.execute(f"SELECT item, value FROM {quote(COPY_STATE)}").fetchall()
            done = {str(item): str(value) for item, value in rows}
            if "finished" in done:
                raise MigrationError(
                    f"schema {schema!r} already holds a finished copy; verify it with "
                    "'changeover migrate verify', or drop it to copy again"
                )
            if on_error == "quarantine":
                _execute(conn, REJECTS_DDL, f"create {REJECTS_TABLE}")
            if capture and "capture_head" not in done:
                raise MigrationError(
                    "the interrupted copy ran without capture; run it the same way"
                )
            return {str(k): str(v) for k, v in done.items()}
        for table in plan.tables:
            _execute(conn, table.create_sql, f"create table {table.name}")
        if on_error == "quarantine":
            _execute(conn, REJECTS_DDL, f"create {REJECTS_TABLE}")
        conn.execute(
            f"CREATE TABLE {quote(COPY_STATE)} (item text PRIMARY KEY, value text NOT NULL, "
            "done_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {"started": str(time.time())}
        if capture:
            from changeover.migrate.capture import changelog_head, install_capture

            install_capture(sqlite_path, plan)
            source = connect_readonly(sqlite_path)
            try:
                done["capture_head"] = str(changelog_head(source))
            finally:
                source.close()
        conn.cursor().executemany(
            f"INSERT INTO {quote(COPY_STATE)} (item, value) VALUES (%s, %s)", list(done.items())
        )
        return done


def _copy_tables(
    sqlite_path: str | Path,
    pg_url: str,
    schema: str,
    plan: PgPlan,
    on_error: OnError,
    jobs: int,
    progress: Progress | None,
) -> dict[str, TableCopy]:
    """Run one ``_copy_table`` per table: in this process for ``jobs=1``, else in processes.

    Value conversion is pure Python and holds the GIL, so threads would not load two tables
    at once; worker processes do. They get the cancel flag and the progress queue at start.
    """
    pool: Executor
    drain: threading.Thread | None = None
    reports: multiprocessing.queues.Queue[tuple[str, int, int] | None] | None = None
    if jobs <= 1:
        cancel: _Flag = threading.Event()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy")
        submit_progress = progress
    else:
        context = multiprocessing.get_context("spawn")
        cancel = context.Event()
        reports = context.Queue()
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(cancel, reports if progress is not None else None),
        )
        submit_progress = None
        if progress is not None:
            drain = threading.Thread(target=_drain, args=(reports, progress), daemon=True)
            drain.start()
    try:
        with pool:
            futures = {
                pool.submit(
                    _copy_table_task,
                    sqlite_path,
                    pg_url,
                    schema,
                    table,
                    on_error,
                    submit_progress,
                    cancel if jobs <= 1 else None,
                ): table.name
                for table in plan.tables
            }
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in futures):
                cancel.set()
                wait(futures)
                # Report the first real failure in plan order (deterministic with jobs=1);
                # tables cancelled because of it are not the cause.
                failed = [f for f in futures if f.exception() is not None]
                real = [f for f in failed if not isinstance(f.exception(), _Cancelled)] or failed
                order = {t.name: i for i, t in enumerate(plan.tables)}
                exc = min(real, key=lambda f: order[futures[f]]).exception()
                assert exc is not None
                raise exc
            return {name: future.result() for future, name in futures.items()}
    except BrokenProcessPool as exc:
        raise MigrationError(f"a copy worker process died: {exc}; run the copy again") from exc
    finally:
        if drain is not None and reports is not None:
            reports.put(None)
            drain.join()


class _Flag(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...


_worker_cancel: _Flag | None = None
_worker_reports: multiprocessing.queues.Queue[tuple[str, int, int] | None] | None = None


def _init_worker(
    cancel: _Flag, reports: multiprocessing.queues.Queue[tuple[str, int, int] | None] | None
) -> None:
    global _worker_cancel, _worker_reports
    _worker_cancel, _worker_reports = cancel, reports


def _report(table: str, rows: int, size: int) -> None:
    if _worker_reports is not None:
        _worker_reports.put((table, rows, size))


def _copy_table_task(
    sqlite_path: str | Path,
    pg_url: str,
    schema: str,
    table: PgTable,
    on_error: OnError,
    progress: Progress | None,
    cancel: _Flag | None,
) -> TableCopy:
    if cancel is None:
        # In a worker process: the cancel flag and the progress queue came with the process.
        assert _worker_cancel is not None
        cancel = _worker_cancel
        progress = _report if _worker_reports is not None else None
    return _copy_table(sqlite_path, pg_url, schema, table, on_error, progress, cancel)


def _drain(
    reports: multiprocessing.queues.Queue[tuple[str, int, int] | None], progress: Progress
) -> None:
    while (item := reports.get()) is not None:
        progress(*item)


def connect_target(
    pg_url: str, *, autocommit: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the PostgreSQL target; failing is a ``MigrationError`` without secrets."""
    try:
        conn = psycopg.connect(pg_url, autocommit=autocommit)
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot connect to the PostgreSQL target: {REDACTOR.scrub(str(exc))}"
        ) from exc
    return conn


def _execute(conn: psycopg.Connection[tuple[object, ...]], sql: str, what: str) -> None:
    try:
        conn.execute(sql)
    except psycopg.errors.DuplicateTable as exc:
        raise MigrationError(
            f"{what}: it already exists in the target schema; copy needs an empty target: "
            "drop the tables first, or copy into another schema"
        ) from exc
    except psycopg.Error as exc:
        raise MigrationError(f"{what}: PostgreSQL refused it: {REDACTOR.scrub(str(exc))}") from exc


def _copy_table(
    sqlite_path: str | Path,
    pg_url: str,
    schema: str,
    table: PgTable,
    on_error: OnError,
    progress: Progress | None,
    cancel: _Flag,
) -> TableCopy:
    if cancel.is_set():
        raise _Cancelled(f"{table.name}: not copied because another table failed")
    started = time.monotonic()
    source = connect_readonly(sqlite_path)
    source.text_factory = RawText
    try:
        with connect_target(pg_url) as conn:
            conn.execute(f"SET search_path TO {quote(schema)}")
            with conn.transaction():
                result = _load(source, conn, table, on_error, progress, cancel)
    except sqlite3.Error as exc:
        raise MigrationError(f"{table.name}: reading SQLite failed: {exc}") from exc
    except psycopg.Error as exc:
        raise MigrationError(
            f"{table.name}: PostgreSQL refused the data: {REDACTOR.scrub(str(exc))}"
        ) from exc
    finally:
        source.close()
    copied, rejected, size, source_rows = result
    if copied + rejected != source_rows:
        raise MigrationError(
            f"{table.name}: {source_rows} source rows but {copied} copied + {rejected} rejected; "
            "the source changed during the copy or rows were lost: run the copy again"
        )
    return TableCopy(table.name, source_rows, copied, rejected, size, time.monotonic() - started)


def _load(
    source: sqlite3.Connection,
    conn: psycopg.Connection[tuple[object, ...]],
    table: PgTable,
    on_error: OnError,
    progress: Progress | None,
    cancel: _Flag,
) -> tuple[int, int, int, int]:
    columns = table.columns
    has_rowid = any(c.name == ROWID_COLUMN for c in columns)
    select = ", ".join("rowid" if c.name == ROWID_COLUMN else quote(c.name) for c in columns)
    order = "rowid" if has_rowid else ", ".join(map(quote, table.primary_key))
    # One read transaction: the count and both passes see the same snapshot.
    source.execute("BEGIN")
    source_rows = source.execute(f"SELECT count(*) FROM {quote(table.source)}").fetchone()[0]
    lane = fastlane.fast_lane(source, table) if fastlane.enabled() else None
    target = ", ".join(quote(c.name) for c in columns)
    counts = _Counts()
    with conn.cursor() as pg, pg.copy(f"COPY {quote(table.name)} ({target}) FROM STDIN") as copy:
        slow = f"SELECT {select} FROM {quote(table.source)}"
        if lane is not None:
            # Pass 1: SQLite writes the lines; pass 2 (Python) takes the rows it left, in order.
            pending = _load_fast(source, copy, lane, table, order, counts, progress, cancel)
            slow = f"{slow} WHERE {lane.slow_condition()}" if pending else ""
        if slow and not cancel.is_set():
            rows = source.execute(f"{slow} ORDER BY {order}")
            _load_rows(rows, copy, table, on_error, counts, progress, cancel)
    source.execute("COMMIT")
    if cancel.is_set():
        raise _Cancelled(f"{table.name}: cancelled because another table failed")
    if counts.rejects:
        insert_rejects(
            conn, table.name, [(r.key, r.column, r.reason, r.raw) for r in counts.rejects]
        )
    # Committed with the rows: a rerun after a crash skips exactly the tables that are loaded.
    conn.execute(
        f"INSERT INTO {quote(COPY_STATE)} (item, value) VALUES (%s, %s)",
        (f"table:{table.name}", json.dumps([counts.copied, counts.rejected])),
    )
    return counts.copied, counts.rejected, counts.size, source_rows


@dataclass
class _Counts:
    copied: int = 0
    rejected: int = 0
    size: int = 0
    rejects: list[_Reject] = field(default_factory=list)


def _load_fast(
    source: sqlite3.Connection,
    copy: psycopg.Copy,
    lane: fastlane.FastLane,
    table: PgTable,
    order: str,
    counts: _Counts,
    progress: Progress | None,
    cancel: _Flag,
) -> int:
    """Send the clean lines SQLite wrote; returns how many rows are left to Python."""
    cursor = source.execute(lane.query(quote(table.source), order))
    pending = 0
    while True:
        rows = cursor.fetchmany(FAST_BATCH_ROWS)
        if not rows or cancel.is_set():
            break
        data = b"".join([row[0] for row in rows])
        if not fastlane.clean(data):
            # A row left to Python, a NUL or invalid UTF-8 in the batch: the clean lines only.
            data = b"".join([row[0] for row in rows if fastlane.clean(row[0])])
        # Text newlines are escaped, so each newline ends one line.
        lines = data.count(b"\n")
        pending += len(rows) - lines
        if data:
            copy.write(data)
        counts.copied += lines
        counts.size += len(data)
        if progress is not None:
            progress(table.name, counts.copied, counts.size)
    return pending


def _load_rows(
    rows: sqlite3.Cursor,
    copy: psycopg.Copy,
    table: PgTable,
    on_error: OnError,
    counts: _Counts,
    progress: Progress | None,
    cancel: _Flag,
) -> None:
    """Convert rows value by value in Python (``values.converter``); refuse or quarantine."""
    columns = table.columns
    converters = [converter(c) for c in columns]
    key_names = table.primary_key
    key_positions = [next(i for i, c in enumerate(columns) if c.name == k) for k in key_names]
    buffer: list[str] = []
    buffered = 0
    while True:
        batch = rows.fetchmany(BATCH_ROWS)
        if not batch or cancel.is_set():
            break
        for row in batch:
            fields: list[str] = []
            bad: list[_Reject] = []
            for value, column, convert in zip(row, columns, converters, strict=True):
                try:
                    fields.append(convert(value))
                except Unrepresentable as exc:
                    key = _key(row, key_names, key_positions)
                    if on_error == "stop":
                        raise UnrepresentableRow(table.name, key, column.name, exc.reason) from None
                    bad.append(_Reject(key, column.name, exc.reason, raw_text(value)))
            if bad:
                counts.rejects.extend(bad)
                counts.rejected += 1
                continue
            line = "\t".join(fields) + "\n"
            buffer.append(line)
            buffered += len(line)
            counts.copied += 1
            if buffered >= BATCH_BYTES:
                counts.size += _flush(copy, buffer)
                buffered = 0
        counts.size += _flush(copy, buffer)
        buffered = 0
        if progress is not None:
            progress(table.name, counts.copied + counts.rejected, counts.size)


def insert_rejects(
    conn: psycopg.Connection[tuple[object, ...]],
    table: str,
    rejects: Sequence[tuple[dict[str, object], str, str, str | None]],
) -> None:
    """Record (key, column, reason, raw value) rows in ``_changeover_rejects`` (must exist)."""
    with conn.cursor() as pg:
        pg.executemany(
            f'INSERT INTO {quote(REJECTS_TABLE)} ("table", key, "column", reason, raw_value) '
            "VALUES (%s, %s, %s, %s, %s)",
            [(table, json.dumps(k, ensure_ascii=False), c, r, raw) for k, c, r, raw in rejects],
        )


def _flush(copy: psycopg.Copy, buffer: list[str]) -> int:
    if not buffer:
        return 0
    data = "".join(buffer).encode("utf-8")
    copy.write(data)
    buffer.clear()
    return len(data)


def _key(
    row: Sequence[object], names: Sequence[str], positions: Sequence[int]
) -> dict[str, object]:
    return json_key([row[p] for p in positions], names)


def json_key(values: Sequence[object], names: Sequence[str]) -> dict[str, object]:
    """A row's key as JSON-safe values (text decoded with replacement, blobs as hex)."""
    key: dict[str, object] = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, RawText):
            value = value.decode("utf-8", errors="backslashreplace")
        elif isinstance(value, bytes):
            value = "\\x" + value.hex()
        key["rowid" if name == ROWID_COLUMN else name] = value
    return key


def raw_text(value: object) -> str | None:
    """The rejected value as stored: valid UTF-8 text without NUL as is, anything else as hex."""
    if value is None:
        return None
    if isinstance(value, bytes):
        if isinstance(value, RawText):
            try:
                text = value.decode("utf-8")
                if "\x00" not in text:
                    return text
            except UnicodeDecodeError:
                pass
        return "\\x" + bytes(value).hex()
    if isinstance(value, str):
        return value if "\x00" not in value else "\\x" + value.encode().hex()
    return repr(value)


def _finish(pg_url: str, schema: str, plan: PgPlan, done: dict[str, str]) -> list[tuple[str, str]]:
    """Indexes, unique constraints, foreign keys, identity resets; each refusal is reported.

    Each statement commits with its entry in the copy state, so a resumed copy skips it.
    """
    failed: list[tuple[str, str]] = []
    with connect_target(pg_url) as conn:
        conn.execute(f"SET search_path TO {quote(schema)}")
        statements = [
            *plan.indexes,
            *plan.unique_constraints,
            *plan.foreign_keys,
        ]
        for statement in statements:
            item = "statement:" + hashlib.sha256(statement.encode()).hexdigest()[:16]
            if item in done:
                continue
            try:
                with conn.transaction():
                    conn.execute(statement)
                    conn.execute(
                        f"INSERT INTO {quote(COPY_STATE)} (item, value) VALUES (%s, %s)",
                        (item, statement),
                    )
            except psycopg.Error as exc:
                failed.append((statement, REDACTOR.scrub(str(exc)).strip()))
        for statement in plan.sequence_resets:
            _execute(conn, statement, "identity reset")
        conn.execute(
            f"INSERT INTO {quote(COPY_STATE)} (item, value) VALUES ('finished', %s)",
            (json.dumps([s for s, _ in failed]),),
        )
    return failed
