"""Reverse sync after the write handoff: PostgreSQL triggers → changelog → the legacy SQLite file.

Each migrated table gets one trigger function that records the changed row's key (as a jsonb
array) with the writing transaction's id in ``_changeover_changelog`` in the target schema. The
applier reads the *current* PostgreSQL rows of those keys and upserts them into SQLite (or
deletes them), storing its position in the SQLite file in the same SQLite transaction.

Position is a transaction-id boundary, not a sequence number: PostgreSQL hands out sequence values
at insert time, so a slow transaction can commit entry 10 after entry 11 is visible. Every
transaction with an id below the snapshot's ``xmin`` has ended, so applying all entries with
``position <= xid < xmin`` and then moving the position to ``xmin`` never skips a late commit.
Values convert with ``values_back.to_sqlite``, a right inverse of the forward conversion.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from changeover.migrate.apply import Lag
from changeover.migrate.capture import META, connect_writable, our_triggers
from changeover.migrate.copy import MigrationError
from changeover.migrate.schema import ROWID_COLUMN, PgColumn, PgPlan, PgTable, quote
from changeover.migrate.sqlite import quote_ident
from changeover.migrate.values import Unrepresentable
from changeover.migrate.values_back import SqliteOut, select_list, to_sqlite
from changeover.secrets import REDACTOR

PG_CHANGELOG = "_changeover_changelog"
BATCH = 5000
Key = tuple[SqliteOut, ...]
_RANGE = "xid >= %s::text::xid8 AND xid < %s::text::xid8"


def capture_sql(plan: PgPlan, schema: str) -> list[str]:
    """The changelog table and one trigger per table (pure; every statement idempotent)."""
    log = f"{quote(schema)}.{quote(PG_CHANGELOG)}"
    statements = [
        f"CREATE TABLE IF NOT EXISTS {log} ("
        "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
        "tbl text NOT NULL, key jsonb NOT NULL, "
        "at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))",
        f"CREATE INDEX IF NOT EXISTS {quote(PG_CHANGELOG + '_xid')} ON {log} (xid)",
    ]
    for index, table in enumerate(plan.tables):
        function = f"{quote(schema)}.{quote(f'_changeover_capture_{index}')}"
        literal = "'" + table.name.replace("'", "''") + "'"

        def key(row: str, table: PgTable = table) -> str:
            return (
                "jsonb_build_array("
                + ", ".join(f"{row}.{quote(k)}" for k in table.primary_key)
                + ")"
            )

        changed = " OR ".join(
            f"OLD.{quote(k)} IS DISTINCT FROM NEW.{quote(k)}" for k in table.primary_key
        )
        statements.append(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
            "BEGIN\n"
            "  IF TG_OP <> 'DELETE' THEN\n"
            f"    INSERT INTO {log} (tbl, key) VALUES ({literal}, {key('NEW')});\n"
            "  END IF;\n"
            f"  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({changed})) THEN\n"
            f"    INSERT INTO {log} (tbl, key) VALUES ({literal}, {key('OLD')});\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END $f$"
        )
        statements.append(
            f"CREATE OR REPLACE TRIGGER _changeover_capture AFTER INSERT OR UPDATE OR DELETE "
            f"ON {quote(schema)}.{quote(table.name)} FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    return statements


def install_reverse_capture(
    conn: psycopg.Connection[tuple[object, ...]], plan: PgPlan, schema: str
) -> int:
    """Install the triggers (in the caller's transaction); returns the starting position.

    Changes by transactions that start after this commits are captured; the starting position
    is the snapshot's xmin, so nothing committed later with a smaller id is skipped.
    """
    for statement in capture_sql(plan, schema):
        conn.execute(statement)
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(str(row[0]))


def remove_reverse_capture(
    conn: psycopg.Connection[tuple[object, ...]],
    plan: PgPlan,
    schema: str,
    *,
    keep_log: bool = True,
) -> None:
    """Drop the triggers and functions (in the caller's transaction); the log too if asked."""
    for index, table in enumerate(plan.tables):
        conn.execute(
            f"DROP TRIGGER IF EXISTS _changeover_capture ON {quote(schema)}.{quote(table.name)}"
        )
        conn.execute(
            f"DROP FUNCTION IF EXISTS {quote(schema)}.{quote(f'_changeover_capture_{index}')}()"
        )
    if not keep_log:
        conn.execute(f"DROP TABLE IF EXISTS {quote(schema)}.{quote(PG_CHANGELOG)}")


def read_reverse_position(path: str | Path) -> int | None:
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = conn.execute(f"SELECT value FROM {META} WHERE key = 'reverse_position'").fetchone()
        return int(row[0]) if row else None
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def set_reverse_position(path: str | Path, position: int) -> None:
    conn = connect_writable(path)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            f"INSERT OR REPLACE INTO {META} VALUES ('reverse_position', ?)", (str(position),)
        )
    finally:
        conn.close()


@dataclass(frozen=True)
class ReverseBatch:
    entries: int
    upserted: int
    deleted: int
    position: int


class ReverseApplier:
    """Applies the PostgreSQL changelog to the SQLite file; not thread-safe (see ForwardApplier)."""

    def __init__(
        self,
        sqlite_path: str | Path,
        pg_url: str,
        plan: PgPlan,
        *,
        schema: str = "public",
        batch: int = BATCH,
    ) -> None:
        self.sqlite_path = Path(sqlite_path)
        self.schema = schema
        self.batch = batch
        self.tables = {t.name: t for t in plan.tables}
        if read_reverse_position(self.sqlite_path) is None:
            raise MigrationError(
                "reverse sync has not started: it starts at the write handoff "
                "('changeover migrate handoff')"
            )
        self._sqlite = connect_writable(self.sqlite_path)
        try:
            self._pg = psycopg.connect(pg_url, autocommit=False)
        except psycopg.Error as exc:
            self._sqlite.close()
            raise MigrationError(
                f"cannot connect to the PostgreSQL target: {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
        self._pg.execute(f"SET search_path TO {quote(schema)}")
        self._pg.commit()

    def close(self) -> None:
        self._sqlite.close()
        self._pg.close()

    def __enter__(self) -> ReverseApplier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply_batch(self) -> ReverseBatch:
        try:
            return self._apply_batch()
        except psycopg.Error as exc:
            raise MigrationError(
                f"reverse sync: reading PostgreSQL failed: {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
        except sqlite3.Error as exc:
            raise MigrationError(f"reverse sync: writing SQLite failed: {exc}") from exc
        finally:
            self._pg.rollback()
            if self._sqlite.in_transaction:
                self._sqlite.execute("ROLLBACK")

    def _apply_batch(self) -> ReverseBatch:
        # The SQLite write lock first: a second applier waits here, then sees our position.
        self._sqlite.execute("BEGIN IMMEDIATE")
        if our_triggers(self._sqlite):
            # Forward capture is back: legacy owns writes again (a handoff back finished while
            # this process slept). Writing PostgreSQL's rows now could undo a legacy write.
            raise MigrationError(
                "reverse sync stopped: legacy owns writes again (forward capture is installed)"
            )
        row = self._sqlite.execute(
            f"SELECT value FROM {META} WHERE key = 'reverse_position'"
        ).fetchone()
        position = int(row[0])
        pg = self._pg
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        xmin_row = pg.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        assert xmin_row is not None
        upper = int(str(xmin_row[0]))
        # Whole transactions only: cap the batch at the xid of its N-th entry (inclusive).
        nth = pg.execute(
            f"SELECT xid::text FROM {quote(PG_CHANGELOG)} WHERE {_RANGE} "
            "ORDER BY xid OFFSET %s LIMIT 1",
            (str(position), str(upper), self.batch),
        ).fetchone()
        if nth is not None:
            upper = int(str(nth[0])) + 1
        entries = pg.execute(
            f"SELECT tbl, key FROM {quote(PG_CHANGELOG)} WHERE {_RANGE}",
            (str(position), str(upper)),
        ).fetchall()
        upserted = deleted = 0
        by_table: dict[str, dict[str, list[object]]] = {}
        for tbl, key in entries:
            assert isinstance(tbl, str) and isinstance(key, list)
            by_table.setdefault(tbl, {})[repr(key)] = key
        for name, keys in by_table.items():
            table = self.tables.get(name)
            if table is None:
                continue
            u, d = self._apply_table(table, list(keys.values()))
            upserted, deleted = upserted + u, deleted + d
        self._sqlite.execute(
            f"INSERT OR REPLACE INTO {META} VALUES ('reverse_position', ?)", (str(upper),)
        )
        self._sqlite.execute("COMMIT")
        return ReverseBatch(len(entries), upserted, deleted, upper)

    def _apply_table(self, table: PgTable, keys: list[object]) -> tuple[int, int]:
        key_columns = [_column(table, k) for k in table.primary_key]
        typed = ", ".join(
            f"(k->>{i})::{c.pg_type} AS {quote(c.name)}" for i, c in enumerate(key_columns)
        )
        join = " AND ".join(f"t.{quote(k)} = c.{quote(k)}" for k in table.primary_key)
        rows = self._pg.execute(
            f"SELECT {select_list(table)} FROM (SELECT t.* FROM {quote(table.name)} t JOIN "
            f"(SELECT {typed} FROM jsonb_array_elements(%s::jsonb) AS k) AS c ON {join}) AS t",
            (json.dumps(keys),),
        ).fetchall()
        positions = [table.columns.index(c) for c in key_columns]
        present: dict[Key, tuple[SqliteOut, ...]] = {}
        for row in rows:
            values = tuple(_convert(v, c, table) for v, c in zip(row, table.columns, strict=True))
            present[tuple(values[p] for p in positions)] = values
        gone = [k for k in self._typed_keys(table, keys) if k not in present]
        for key in gone:
            where = " AND ".join(f"{_ident(k)} IS ?" for k in table.primary_key)
            self._sqlite.execute(f"DELETE FROM {quote_ident(table.source)} WHERE {where}", key)
        if present:
            names = [_ident(c.name) for c in table.columns]
            marks = ", ".join("?" * len(names))
            target = quote_ident(table.source)
            if ROWID_COLUMN in table.primary_key:
                sql = f"INSERT OR REPLACE INTO {target} ({', '.join(names)}) VALUES ({marks})"
            else:
                others = [
                    n
                    for c, n in zip(table.columns, names, strict=True)
                    if c.name not in table.primary_key
                ]
                update = (
                    "DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in others)
                    if others
                    else "DO NOTHING"
                )
                conflict = ", ".join(map(_ident, table.primary_key))
                sql = (
                    f"INSERT INTO {target} ({', '.join(names)}) VALUES ({marks}) "
                    f"ON CONFLICT ({conflict}) {update}"
                )
            self._sqlite.executemany(sql, list(present.values()))
        return len(present), len(gone)

    def changed_keys(self, since: int = 0) -> dict[str, list[Key]]:
        """Keys written in PostgreSQL by transactions with id >= ``since`` (0: every one since
        reverse capture started), as SQLite values."""
        found: dict[str, list[Key]] = {}
        try:
            for table in self.tables.values():
                keys = self._pg.execute(
                    f"SELECT DISTINCT key FROM {quote(PG_CHANGELOG)} "
                    "WHERE tbl = %s AND xid >= %s::text::xid8",
                    (table.name, str(since)),
                ).fetchall()
                if keys:
                    found[table.name] = self._typed_keys(table, [k for (k,) in keys])
        finally:
            self._pg.rollback()
        return found

    def _typed_keys(self, table: PgTable, keys: list[object]) -> list[Key]:
        """jsonb key arrays → the SQLite values of those keys (as this applier writes them)."""
        key_columns = [_column(table, k) for k in table.primary_key]
        key_table = PgTable(table.name, table.source, tuple(key_columns), table.primary_key, "")
        typed = ", ".join(
            f"(k->>{i})::{c.pg_type} AS {quote(c.name)}" for i, c in enumerate(key_columns)
        )
        rows = self._pg.execute(
            f"SELECT {select_list(key_table)} FROM "
            f"(SELECT {typed} FROM jsonb_array_elements(%s::jsonb) AS k) AS changed",
            (json.dumps(keys),),
        ).fetchall()
        return [
            tuple(_convert(v, c, table) for v, c in zip(row, key_columns, strict=True))
            for row in rows
        ]

    def catch_up(self, *, deadline: float | None = None) -> int:
        total = 0
        while True:
            done = self.apply_batch()
            total += done.entries
            if done.entries == 0:
                return total
            if deadline is not None and time.monotonic() > deadline:
                return total

    def lag(self) -> Lag:
        return read_reverse_lag(self.sqlite_path, self._pg)

    @property
    def position(self) -> int:
        """The applied boundary (a transaction id) as stored in the SQLite file."""
        return read_reverse_position(self.sqlite_path) or 0


def read_reverse_lag(path: str | Path, pg: psycopg.Connection[tuple[object, ...]]) -> Lag:
    """Entries not applied to SQLite yet, and the age of the oldest one."""
    position = read_reverse_position(path) or 0
    row = pg.execute(
        f"SELECT count(*), min(at), max(seq) FROM {quote(PG_CHANGELOG)} "
        "WHERE xid >= %s::text::xid8",
        (str(position),),
    ).fetchone()
    pg.rollback()
    assert row is not None
    count, oldest, head = row
    seconds = max(0.0, time.time() - float(oldest)) if oldest is not None else 0.0  # type: ignore[arg-type]
    return Lag(position=position, head=int(head or 0), rows=int(count), seconds=seconds)  # type: ignore[call-overload]


def _convert(value: object, column: PgColumn, table: PgTable) -> SqliteOut:
    try:
        return to_sqlite(value, column)
    except Unrepresentable as exc:
        raise MigrationError(
            f"reverse sync: {table.name}.{column.name}: {exc.reason}; the legacy database cannot "
            "hold this value — fix the row in PostgreSQL (the handoff back is blocked until then)"
        ) from None


def _column(table: PgTable, name: str) -> PgColumn:
    return next(c for c in table.columns if c.name == name)


def _ident(name: str) -> str:
    return "rowid" if name == ROWID_COLUMN else quote_ident(name)
