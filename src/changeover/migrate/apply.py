"""The forward applier: changelog entries in SQLite → current rows upserted into PostgreSQL.

One batch is one PostgreSQL transaction: lock the position row (so two appliers never
interleave), read the next changelog entries and the *current* rows of their keys in one SQLite
read transaction, delete the keys that no longer exist, upsert the rows that do (COPY into a
temporary staging table, then ``INSERT … ON CONFLICT (key) DO UPDATE``), and store the new
position — all committed together. A crash anywhere leaves the old position and the old rows;
replaying entries is harmless because every entry means "make this key look like SQLite now".
Foreign keys are deferred to commit (they are created DEFERRABLE), so order within a batch does
not matter. Values convert with the bulk copy's converters, so sync and copy agree exactly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from changeover.migrate.capture import CHANGELOG, changelog_head, connect_writable, source_key
from changeover.migrate.copy import (
    REJECTS_DDL,
    MigrationError,
    OnError,
    UnrepresentableRow,
    connect_target,
    insert_rejects,
    json_key,
    raw_text,
)
from changeover.migrate.schema import ROWID_COLUMN, PgPlan, PgTable, quote
from changeover.migrate.sqlite import connect_readonly, quote_ident
from changeover.migrate.values import RawText, SqliteValue, Unrepresentable, converter
from changeover.secrets import REDACTOR

SYNC_TABLE = "_changeover_sync"
BATCH = 5000
_IN_CHUNK = 400  # keys per SQLite IN (...) lookup; well under SQLite's variable limit
Key = tuple[SqliteValue, ...]
Row = Sequence[SqliteValue]


@dataclass(frozen=True)
class Lag:
    """How far PostgreSQL is behind the SQLite changelog."""

    position: int  # last applied changelog sequence number
    head: int  # last written changelog sequence number
    rows: int  # entries written but not applied
    seconds: float  # age of the oldest entry not applied; 0 when caught up

    def to_json(self) -> dict[str, float | int]:
        return {
            "position": self.position,
            "head": self.head,
            "rows": self.rows,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class Batch:
    entries: int
    upserted: int
    deleted: int
    rejected: int
    position: int


def ensure_sync_table(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """The applied position per direction ('forward', 'reverse'), in the target schema."""
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {quote(schema)}.{quote(SYNC_TABLE)} (
            direction text PRIMARY KEY,
            position bigint NOT NULL,
            applied bigint NOT NULL DEFAULT 0,
            verified bigint NOT NULL DEFAULT 0,
            last_at double precision,
            updated_at timestamptz NOT NULL DEFAULT now())"""
    )


def read_position(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, direction: str = "forward"
) -> int | None:
    """The applied position, or None when this direction was never started."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{quote(schema)}.{quote(SYNC_TABLE)}",)
    ).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(
        f"SELECT position FROM {quote(schema)}.{quote(SYNC_TABLE)} WHERE direction = %s",
        (direction,),
    ).fetchone()
    return int(row[0]) if row else None  # type: ignore[call-overload]


def start_position(pg_url: str, schema: str, position: int, direction: str = "forward") -> None:
    """Record where applying starts (the changelog head read before the copy's snapshot)."""
    with connect_target(pg_url, autocommit=True) as conn:
        ensure_sync_table(conn, schema)
        conn.execute(
            f"INSERT INTO {quote(schema)}.{quote(SYNC_TABLE)} (direction, position, verified) "
            "VALUES (%s, %s, %s) ON CONFLICT (direction) DO UPDATE "
            "SET position = EXCLUDED.position, verified = EXCLUDED.verified, updated_at = now()",
            (direction, position, position),
        )


class ForwardApplier:
    """Applies the SQLite changelog to PostgreSQL.

    Not thread-safe: ``run`` in a thread is fine, but call ``lag`` only when it is not running
    (or read lag with ``read_lag`` on connections of your own). Any number of appliers may run
    against one target: the position row lock serialises their batches.
    """

    def __init__(
        self,
        sqlite_path: str | Path,
        pg_url: str,
        plan: PgPlan,
        *,
        schema: str = "public",
        batch: int = BATCH,
        on_error: OnError = "stop",
    ) -> None:
        self.sqlite_path = Path(sqlite_path)
        self.schema = schema
        self.batch = batch
        self.on_error = on_error
        self.tables = {t.source: t for t in plan.tables}
        self._index = {t.source: i for i, t in enumerate(plan.tables)}
        self._staged: set[str] = set()
        self._source = connect_readonly(self.sqlite_path, any_thread=True)
        self._source.isolation_level = None
        self._source.text_factory = RawText
        self._pg = connect_target(pg_url, autocommit=False)
        self._pg.execute(f"SET search_path TO {quote(schema)}")
        self._pg.commit()
        if read_position(self._pg, schema) is None:
            self._pg.rollback()
            self.close()
            raise MigrationError(
                "nothing to sync yet: run 'changeover migrate copy' first (it installs the "
                "capture and records where sync starts)"
            )
        self._pg.rollback()
        self._trimmed = 0.0

    def close(self) -> None:
        self._source.close()
        self._pg.close()

    def __enter__(self) -> ForwardApplier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one batch -------------------------------------------------------------------------

    def apply_batch(self) -> Batch:
        """Apply up to ``batch`` entries in one PostgreSQL transaction; returns what it did."""
        try:
            return self._apply_batch()
        except psycopg.Error as exc:
            self._pg.rollback()
            raise MigrationError(
                f"sync: PostgreSQL refused a batch: {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
        except sqlite3.Error as exc:
            self._pg.rollback()
            raise MigrationError(f"sync: reading SQLite failed: {exc}") from exc
        finally:
            if self._source.in_transaction:
                self._source.execute("COMMIT")

    def _apply_batch(self) -> Batch:
        pg = self._pg
        row = pg.execute(
            f"SELECT position FROM {quote(SYNC_TABLE)} WHERE direction = 'forward' FOR UPDATE"
        ).fetchone()
        assert row is not None
        position = int(row[0])  # type: ignore[call-overload]
        self._source.execute("BEGIN")
        entries = self._source.execute(
            f"SELECT * FROM {CHANGELOG} WHERE seq > ? ORDER BY seq LIMIT ?",
            (position, self.batch),
        ).fetchall()
        if not entries:
            pg.rollback()
            return Batch(0, 0, 0, 0, position)
        keys: dict[str, dict[Key, None]] = defaultdict(dict)
        for entry in entries:
            name = _text(entry[1])
            table = self.tables.get(name)
            if table is None:
                continue  # a table outside the plan (dropped from it): nothing to apply
            keys[name][tuple(entry[2 : 2 + len(table.primary_key)])] = None
        current = {name: self._read_rows(self.tables[name], list(ks)) for name, ks in keys.items()}
        self._source.execute("COMMIT")
        pg.execute("SET CONSTRAINTS ALL DEFERRED")
        upserted = deleted = rejected = 0
        for name, wanted in keys.items():
            table = self.tables[name]
            rows = current[name]
            gone = [k for k in wanted if k not in rows]
            u, d, r = self._write_table(table, list(rows.values()), gone)
            upserted, deleted, rejected = upserted + u, deleted + d, rejected + r
        last = entries[-1]
        new_position = int(last[0])
        pg.execute(
            f"UPDATE {quote(SYNC_TABLE)} SET position = %s, applied = applied + %s, "
            "last_at = %s, updated_at = now() WHERE direction = 'forward'",
            (new_position, len(entries), float(last[-1])),
        )
        pg.commit()
        return Batch(len(entries), upserted, deleted, rejected, new_position)

    def _read_rows(self, table: PgTable, keys: list[Key]) -> dict[Key, Row]:
        """The current SQLite rows for ``keys``, by key; a key with no row was deleted."""
        key = source_key(table)
        select = ", ".join("rowid" if c == "rowid" else quote_ident(c) for c in _columns(table))
        name = quote_ident(table.source)
        positions = [_columns(table).index(k) for k in key]
        found: dict[Key, Row] = {}
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            if len(key) == 1:
                where = f"{_ident(key[0])} IN ({', '.join(_mark(k[0]) for k in chunk)})"
            else:
                row_marks = ", ".join("(" + ", ".join(map(_mark, k)) + ")" for k in chunk)
                where = f"({', '.join(map(_ident, key))}) IN (VALUES {row_marks})"
            params = [_param(v) for k in chunk for v in k]
            for found_row in self._source.execute(
                f"SELECT {select} FROM {name} WHERE {where}", params
            ):
                found[tuple(found_row[p] for p in positions)] = found_row
        return found

    def _write_table(
        self, table: PgTable, rows: list[Row], gone: list[Key]
    ) -> tuple[int, int, int]:
        """Delete ``gone`` keys and upsert ``rows`` (deletes first: a freed unique value)."""
        columns = table.columns
        converters = [converter(c) for c in columns]
        key_positions = [
            next(i for i, c in enumerate(columns) if c.name == k) for k in table.primary_key
        ]
        lines: list[str] = []
        rejects: list[tuple[dict[str, object], str, str, str | None]] = []
        for row in rows:
            try:
                lines.append("\t".join(f(v) for f, v in zip(converters, row, strict=True)) + "\n")
            except Unrepresentable:
                for value, column, convert in zip(row, columns, converters, strict=True):
                    try:
                        convert(value)
                    except Unrepresentable as exc:
                        key = tuple(row[p] for p in key_positions)
                        if self.on_error == "stop":
                            raise UnrepresentableRow(
                                table.name,
                                json_key(key, table.primary_key),
                                column.name,
                                exc.reason,
                            ) from None
                        rejects.append(
                            (
                                json_key(key, table.primary_key),
                                column.name,
                                exc.reason,
                                raw_text(value),
                            )
                        )
                        gone.append(key)
                        break
        key_columns = [c for c in columns if c.name in table.primary_key]
        key_columns.sort(key=lambda c: table.primary_key.index(c.name))
        key_converters = [converter(c) for c in key_columns]
        key_lines = []
        for key in gone:
            try:
                key_lines.append(
                    "\t".join(f(v) for f, v in zip(key_converters, key, strict=True)) + "\n"
                )
            except Unrepresentable:
                continue  # such a key could never have been loaded, so there is nothing to delete
        deleted = self._delete(table, key_lines) if key_lines else 0
        upserted = self._upsert(table, lines) if lines else 0
        if rejects:
            self._pg.execute(REJECTS_DDL)
            insert_rejects(self._pg, table.name, rejects)
        return upserted, deleted, len(rejects)

    def _stage(self, table: PgTable, kind: str, columns: Sequence[str]) -> str:
        name = f"_changeover_{kind}_{self._index[table.source]}"
        if name not in self._staged:
            # Session-lifetime temp table, emptied at each commit; typed like the target.
            cols = ", ".join(quote(c) for c in columns)
            self._pg.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM {quote(self.schema)}.{quote(table.name)} WITH NO DATA"
            )
            self._staged.add(name)
        return name

    def _copy_into(self, stage: str, columns: Sequence[str], lines: list[str]) -> None:
        cols = ", ".join(map(quote, columns))
        with self._pg.cursor() as cur, cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
            copy.write("".join(lines).encode("utf-8"))

    def _upsert(self, table: PgTable, lines: list[str]) -> int:
        names = [c.name for c in table.columns]
        stage = self._stage(table, "up", names)
        self._copy_into(stage, names, lines)
        cols = ", ".join(map(quote, names))
        keys = ", ".join(map(quote, table.primary_key))
        others = [n for n in names if n not in table.primary_key]
        action = (
            "DO UPDATE SET " + ", ".join(f"{quote(n)} = EXCLUDED.{quote(n)}" for n in others)
            if others
            else "DO NOTHING"
        )
        self._pg.execute(
            f"INSERT INTO {quote(table.name)} ({cols}) SELECT {cols} FROM {stage} "
            f"ON CONFLICT ({keys}) {action}"
        )
        return len(lines)

    def _delete(self, table: PgTable, lines: list[str]) -> int:
        stage = self._stage(table, "del", table.primary_key)
        self._copy_into(stage, table.primary_key, lines)
        match = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in table.primary_key)
        cur = self._pg.execute(f"DELETE FROM {quote(table.name)} t USING {stage} s WHERE {match}")
        return cur.rowcount

    # --- loops and lag ---------------------------------------------------------------------

    def catch_up(self, *, deadline: float | None = None) -> int:
        """Apply until a batch finds nothing new; returns the entries applied."""
        total = 0
        while True:
            done = self.apply_batch()
            total += done.entries
            if done.entries == 0:
                return total
            if deadline is not None and time.monotonic() > deadline:
                return total

    def run(
        self,
        stop: threading.Event,
        *,
        idle: float = 0.02,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> None:
        """Apply continuously until ``stop`` is set; sleeps ``idle`` seconds when caught up."""
        while not stop.is_set():
            done = self.apply_batch()
            if on_batch is not None:
                on_batch(done)
            if done.entries == 0:
                self.trim()
                stop.wait(idle)

    def lag(self) -> Lag:
        return read_lag(self._source, self._pg)

    def trim(self, every: float = 5.0) -> int:
        """Delete applied *and* verified changelog entries, at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self._trimmed < every:
            return 0
        self._trimmed = now
        row = self._pg.execute(
            f"SELECT LEAST(position, verified) FROM {quote(SYNC_TABLE)} WHERE direction = 'forward'"
        ).fetchone()
        self._pg.rollback()
        if not row or not row[0]:
            return 0
        conn = connect_writable(self.sqlite_path)
        try:
            cur = conn.execute(f"DELETE FROM {CHANGELOG} WHERE seq <= ?", (row[0],))
            return cur.rowcount
        except sqlite3.OperationalError:
            return 0  # the app holds the write lock: trimming can wait for the next round
        finally:
            conn.close()


def read_lag(
    source: sqlite3.Connection,
    pg: psycopg.Connection[tuple[object, ...]],
    schema: str | None = None,
) -> Lag:
    """Lag from the changelog (SQLite) and the applied position (PostgreSQL), read now."""
    table = f"{quote(schema)}.{quote(SYNC_TABLE)}" if schema else quote(SYNC_TABLE)
    row = pg.execute(f"SELECT position FROM {table} WHERE direction = 'forward'").fetchone()
    pg.rollback()
    position = int(row[0]) if row else 0  # type: ignore[call-overload]
    head = changelog_head(source)
    pending = source.execute(
        f"SELECT count(*), min(at) FROM {CHANGELOG} WHERE seq > ?", (position,)
    ).fetchone()
    rows, oldest = int(pending[0]), pending[1]
    seconds = max(0.0, time.time() - float(oldest)) if oldest is not None else 0.0
    return Lag(position=position, head=head, rows=rows, seconds=seconds)


def pending_forward(sqlite_path: str | Path, pg_url: str, schema: str) -> Lag | None:
    """The forward lag now, or None when there is no changelog in the SQLite file."""
    from changeover.migrate.capture import read_state

    source = connect_readonly(sqlite_path)
    try:
        if not read_state(source).key_width:  # no changelog table: capture was never installed
            return None
        with connect_target(pg_url, autocommit=False) as pg:
            if read_position(pg, schema) is None:
                pg.rollback()
                head = changelog_head(source)
                return Lag(position=0, head=head, rows=head, seconds=0.0)
            return read_lag(source, pg, schema)
    finally:
        source.close()


def _columns(table: PgTable) -> list[str]:
    """The SQLite names of the planned columns, in order (``rowid`` for the added key)."""
    return ["rowid" if c.name == ROWID_COLUMN else c.name for c in table.columns]


def _mark(value: SqliteValue) -> str:
    # Text keys are read as RawText (bytes, to keep invalid UTF-8 visible); bound as bytes they
    # would be BLOBs and match nothing, so they go back to TEXT inside SQLite, byte for byte.
    return "CAST(? AS TEXT)" if isinstance(value, RawText) else "?"


def _param(value: SqliteValue) -> SqliteValue:
    return bytes(value) if isinstance(value, RawText) else value


def _ident(name: str) -> str:
    return "rowid" if name == "rowid" else quote_ident(name)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
