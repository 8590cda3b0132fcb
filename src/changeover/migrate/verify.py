"""Verify the PostgreSQL copy against the SQLite source row by row: exact missing, extra, different.

Both sides are reachable from this process, so one ordered stream of each side (SQLite ``ORDER BY``
the key; PostgreSQL ``COPY (SELECT … ORDER BY key) TO STDOUT``, text keys in ``COLLATE "C"`` =
SQLite's BINARY memcmp order) merged row by row finds every differing row in a single read of each
side: cheaper than per-range checksums plus bisection, which re-read every mismatching range.
Values compare as canonical text (``canonical``: what PostgreSQL prints, under fixed session
settings); a table whose keys SQLite orders differently (mixed-type keys) falls back to a hash
join in memory, and the report says so. Rows in ``_changeover_rejects`` (``copy --on-error
quarantine``) count as *quarantined*, not missing. Every run is recorded in
``_changeover_verify_runs`` in the target schema (``last_verify`` reads the latest).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import psycopg

from changeover.errors import UsageError
from changeover.migrate.canonical import (
    SESSION_SETTINGS,
    base_type,
    display,
    pg_field,
    sqlite_field,
    unescape,
)
from changeover.migrate.copy import REJECTS_TABLE, MigrationError
from changeover.migrate.schema import ROWID_COLUMN, PgColumn, PgPlan, PgTable, quote
from changeover.migrate.sqlite import connect_readonly
from changeover.migrate.values import NULL, RawText, SqliteValue, Unrepresentable, converter
from changeover.secrets import REDACTOR

RUNS_TABLE = "_changeover_verify_runs"
FETCH_ROWS = 2000
# Below this SQLite file size, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024

Mode = Literal["full", "sample", "keys"]
DiffKind = Literal["missing", "extra", "different"]
Key = Any  # an int or str for one-column keys, a tuple of them for composite keys

_INTEGER_TYPES = ("bigint", "integer", "smallint")
_TEXT_ORDER_TYPES = ("text", "varchar")
_RUNS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    mode text NOT NULL,
    equal boolean NOT NULL,
    summary jsonb NOT NULL
)"""


@dataclass(frozen=True)
class ColumnDiff:
    """One differing column: both values as readable text (``None`` is NULL)."""

    column: str
    source: str | None
    target: str | None
    reason: str | None = None  # why the SQLite value cannot be loaded, when it cannot


@dataclass(frozen=True)
class RowDiff:
    kind: DiffKind
    key: dict[str, object]
    columns: tuple[ColumnDiff, ...] = ()
    reason: str | None = None  # for a missing row whose values cannot be loaded

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "key": self.key}
        if self.columns:
            data["columns"] = [
                {"column": c.column, "source": c.source, "target": c.target}
                | ({"reason": c.reason} if c.reason else {})
                for c in self.columns
            ]
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass(frozen=True)
class Quarantined:
    key: dict[str, object]
    reason: str


@dataclass(frozen=True)
class TableVerify:
    """One table's result; counts are exact, ``diffs`` and ``quarantined_rows`` are capped."""

    table: str
    source_rows: int
    target_rows: int
    missing: int
    extra: int
    different: int
    quarantined: int
    seconds: float
    method: str  # "merge", "hash join (…why)", "keys"
    diffs: tuple[RowDiff, ...] = ()
    quarantined_rows: tuple[Quarantined, ...] = ()

    @property
    def equal(self) -> bool:
        return self.missing == self.extra == self.different == 0

    def to_json(self, details: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "table": self.table,
            "equal": self.equal,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "quarantined": self.quarantined,
            "seconds": round(self.seconds, 3),
            "method": self.method,
        }
        if details:
            data["diffs"] = [d.to_json() for d in self.diffs]
            data["quarantined_rows"] = [
                {"key": q.key, "reason": q.reason} for q in self.quarantined_rows
            ]
        return data


@dataclass(frozen=True)
class VerifyReport:
    mode: Mode
    schema: str
    tables: tuple[TableVerify, ...]
    started_at: datetime
    finished_at: datetime

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)

    def table(self, name: str) -> TableVerify:
        for entry in self.tables:
            if entry.table == name:
                return entry
        raise KeyError(name)

    def to_json(self, details: bool = True) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "schema": self.schema,
            "equal": self.equal,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "source_rows": sum(t.source_rows for t in self.tables),
            "target_rows": sum(t.target_rows for t in self.tables),
            "missing": sum(t.missing for t in self.tables),
            "extra": sum(t.extra for t in self.tables),
            "different": sum(t.different for t in self.tables),
            "quarantined": self.quarantined,
            "tables": [t.to_json(details) for t in self.tables],
        }


@dataclass(frozen=True)
class VerifyRun:
    """One row of ``_changeover_verify_runs``."""

    id: int
    started_at: datetime
    finished_at: datetime
    mode: str
    equal: bool
    summary: dict[str, Any]


def verify_database(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    *,
    schema: str = "public",
    tables: Sequence[str] | None = None,
    sample: int | None = None,
    keys: Mapping[str, Sequence[tuple[object, ...]]] | None = None,
    max_diffs: int = 100,
    jobs: int | None = None,
) -> VerifyReport:
    """Compare every row (or ``sample`` random keys, or exactly ``keys``) of the planned tables.

    ``keys`` maps a table to SQLite-side raw key tuples (the rowid for ``_changeover_rowid``
    tables); only those tables are checked, and a key absent from both sides is equal.
    ``jobs`` worker processes check tables in parallel (default: 2 for files over 16 MB, else
    this process).
    """
    if sample is not None and keys is not None:
        raise UsageError("verify: give either sample or keys, not both")
    if sample is not None and sample < 1:
        raise UsageError(f"verify: sample must be at least 1, not {sample}")
    mode: Mode = "keys" if keys is not None else "sample" if sample is not None else "full"
    path = Path(sqlite_path)
    if not path.is_file():
        raise MigrationError(f"SQLite database {str(path)!r} does not exist or is not a file")
    try:
        connect_readonly(path).close()
    except UsageError as exc:
        raise MigrationError(str(exc)) from exc
    chosen = _choose_tables(plan, tables, keys)
    started_at = datetime.now(UTC)
    with _connect(pg_url) as conn:
        _check_tables(conn, schema, chosen)
    if jobs is None:
        jobs = 2 if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
    tasks = [
        _Task(
            str(path),
            pg_url,
            schema,
            table,
            mode,
            list(keys[table.name]) if keys is not None else None,
            sample,
            max_diffs,
        )
        for table in chosen
    ]
    results = _run(tasks, jobs)
    report = VerifyReport(mode, schema, tuple(results), started_at, datetime.now(UTC))
    _record(pg_url, schema, report)
    return report


def last_verify(pg_url: str, schema: str = "public") -> VerifyRun | None:
    """The latest recorded verify run in ``schema``, or ``None`` when none ran yet."""
    with _connect(pg_url) as conn:
        try:
            exists = conn.execute(
                "SELECT to_regclass(%s)", (f"{quote(schema)}.{quote(RUNS_TABLE)}",)
            ).fetchone()
            if not exists or exists[0] is None:
                return None
            row = conn.execute(
                f"SELECT id, started_at, finished_at, mode, equal, summary "
                f"FROM {quote(schema)}.{quote(RUNS_TABLE)} ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot read {RUNS_TABLE}: {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
    if row is None:
        return None
    run_id, started_at, finished_at, mode, equal, summary = row
    return VerifyRun(
        int(run_id),  # type: ignore[call-overload]
        started_at,  # type: ignore[arg-type]
        finished_at,  # type: ignore[arg-type]
        str(mode),
        bool(equal),
        summary,  # type: ignore[arg-type]
    )


def render(report: VerifyReport) -> str:
    """The report as text for an operator: one line per table, then each difference."""
    lines: list[str] = []
    for t in report.tables:
        state = "equal" if t.equal else "DIFFERENT"
        counts = ", ".join(
            f"{n:,} {label}"
            for n, label in (
                (t.missing, "missing"),
                (t.extra, "extra"),
                (t.different, "different"),
                (t.quarantined, "quarantined"),
            )
            if n
        )
        how = "" if t.method in ("merge", "keys") else f" [{t.method}]"
        lines.append(
            f"{t.table}: {state}: {t.source_rows:,} SQLite rows, {t.target_rows:,} PostgreSQL rows"
            f"{'; ' + counts if counts else ''} ({t.seconds:.1f}s){how}"
        )
        for diff in t.diffs:
            key = json.dumps(diff.key, ensure_ascii=False)
            if diff.kind == "missing":
                why = f" ({diff.reason})" if diff.reason else ""
                lines.append(f"  missing in PostgreSQL: {key}{why}")
            elif diff.kind == "extra":
                lines.append(f"  extra in PostgreSQL (not in SQLite): {key}")
            else:
                lines.append(f"  different: {key}")
                for c in diff.columns:
                    source = f"unloadable: {c.reason}" if c.reason else _show(c.source)
                    lines.append(f"    {c.column}: SQLite {source} | PostgreSQL {_show(c.target)}")
        shown = len(t.diffs)
        total = t.missing + t.extra + t.different
        if shown < total:
            lines.append(f"  … and {total - shown:,} more")
        for q in t.quarantined_rows:
            key = json.dumps(q.key, ensure_ascii=False)
            lines.append(f"  quarantined (in {REJECTS_TABLE}): {key}: {q.reason}")
    verdict = "equal" if report.equal else "NOT equal"
    quarantined = f" ({report.quarantined:,} quarantined rows, named above)"
    lines.append(
        f"verify ({report.mode}): {verdict}{quarantined if report.quarantined else ''}"
        f" in {report.seconds:.1f}s"
    )
    return "\n".join(lines)


def _show(value: str | None) -> str:
    return "NULL" if value is None else repr(value)


# --- setup -------------------------------------------------------------------------------------


def _choose_tables(
    plan: PgPlan,
    tables: Sequence[str] | None,
    keys: Mapping[str, Sequence[tuple[object, ...]]] | None,
) -> list[PgTable]:
    wanted = list(tables) if tables is not None else None
    if keys is not None:
        wanted = [name for name in keys if wanted is None or name in wanted]
    if wanted is None:
        return list(plan.tables)
    known = {t.name: t for t in plan.tables}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise MigrationError(
            f"no such table in the migration plan: {', '.join(unknown)} "
            f"(tables: {', '.join(known)})"
        )
    return [known[name] for name in wanted]


def _connect(pg_url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(pg_url, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot connect to the PostgreSQL target: {REDACTOR.scrub(str(exc)).strip()}"
        ) from exc


def _check_tables(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, tables: Sequence[PgTable]
) -> None:
    present = {
        str(name)
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        )
    }
    missing = [t.name for t in tables if t.name not in present]
    if missing:
        raise MigrationError(
            f"table(s) missing in PostgreSQL schema {schema!r}: {', '.join(missing)}; "
            "run 'changeover migrate copy' first (or verify the schema it copied into)"
        )


def _session(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The settings the canonical texts assume (``canonical.SESSION_SETTINGS``)."""
    names = list(SESSION_SETTINGS)
    calls = ", ".join("set_config(%s, %s, false)" for _ in names)
    conn.execute(
        f"SELECT {calls}", [item for name in names for item in (name, SESSION_SETTINGS[name])]
    )


def _record(pg_url: str, schema: str, report: VerifyReport) -> None:
    table = f"{quote(schema)}.{quote(RUNS_TABLE)}"
    summary = report.to_json(details=False)
    summary["tables"] = [
        t.to_json(details=False)
        | {
            "diffs": [d.to_json() for d in t.diffs[:10]],
            "quarantined_rows": [{"key": q.key, "reason": q.reason} for q in t.quarantined_rows],
        }
        for t in report.tables
    ]
    with _connect(pg_url) as conn:
        try:
            # A concurrent verify may create it at the same moment.
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute(_RUNS_DDL.format(table=table))
            conn.execute(
                f"INSERT INTO {table} (started_at, finished_at, mode, equal, summary) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    report.started_at,
                    report.finished_at,
                    report.mode,
                    report.equal,
                    json.dumps(summary, ensure_ascii=False),
                ),
            )
        except psycopg.Error as exc:
            raise MigrationError(
                f"verify ran but could not record its result in {RUNS_TABLE}: "
                f"{REDACTOR.scrub(str(exc)).strip()}"
            ) from exc


# --- running tables, in this process or in workers -----------------------------------------------


@dataclass(frozen=True)
class _Task:
    sqlite_path: str
    pg_url: str
    schema: str
    table: PgTable
    mode: Mode
    keys: list[tuple[object, ...]] | None
    sample: int | None
    max_diffs: int


def _run(tasks: list[_Task], jobs: int) -> list[TableVerify]:
    """Each table's check; in spawned processes when ``jobs > 1`` (conversion holds the GIL)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [_verify_table(task) for task in tasks]
    context = multiprocessing.get_context("spawn")
    # Largest tables first, so the last one to start is a small one.
    order = sorted(tasks, key=lambda t: -_size_hint(t))
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
            futures = {task.table.name: pool.submit(_verify_table, task) for task in order}
            return [futures[task.table.name].result() for task in tasks]
    except BrokenProcessPool as exc:
        raise MigrationError(f"a verify worker process died: {exc}; run verify again") from exc


def _size_hint(task: _Task) -> int:
    try:
        conn = connect_readonly(task.sqlite_path)
    except UsageError:
        return 0
    try:
        row = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name = ?", (task.table.source,)
        ).fetchone()
        return int(row[0] or 0)
    except sqlite3.Error:
        return 0  # dbstat is not compiled into every SQLite
    finally:
        conn.close()


def _verify_table(task: _Task) -> TableVerify:
    started = time.monotonic()
    table = task.table
    try:
        source = connect_readonly(task.sqlite_path)
    except UsageError as exc:
        raise MigrationError(str(exc)) from exc
    source.text_factory = RawText
    codec = _Codec(table, task.schema)
    try:
        with _connect(task.pg_url) as conn:
            _session(conn)
            tally = _Tally(codec, _load_rejects(conn, task.schema, table.name), task.max_diffs)
            if task.mode == "full":
                method = "merge"
                try:
                    _merge(source, conn, codec, tally)
                except _OutOfOrder as exc:
                    method = f"hash join ({exc})"
                    tally = tally.fresh()
                    _hash_join(source, conn, codec, tally)
            else:
                method = "keys"
                keys = task.keys
                if task.sample is not None:
                    keys = _sample_keys(source, codec, task.sample)
                assert keys is not None
                _compare_keys(source, conn, codec, keys, tally)
    except sqlite3.Error as exc:
        raise MigrationError(f"{table.name}: reading SQLite failed: {exc}") from exc
    except psycopg.Error as exc:
        raise MigrationError(
            f"{table.name}: reading PostgreSQL failed: {REDACTOR.scrub(str(exc)).strip()}"
        ) from exc
    finally:
        source.close()
    return tally.result(table.name, time.monotonic() - started, method)


def _load_rejects(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, table: str
) -> dict[tuple[object, ...], str]:
    """Quarantined keys of ``table`` (as ``copy`` wrote them) → the reasons, joined."""
    name = f"{quote(schema)}.{quote(REJECTS_TABLE)}"
    row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    if not row or row[0] is None:
        return {}
    rejects: dict[tuple[object, ...], str] = {}
    for key_text, reasons in conn.execute(
        f"""SELECT key::text, string_agg("column" || ': ' || reason, '; ' ORDER BY id) """
        f"""FROM {name} WHERE "table" = %s GROUP BY key""",
        (table,),
    ):
        key = json.loads(str(key_text), parse_float=Decimal, parse_int=Decimal)
        # jsonb reorders an object's keys: match by (name, value) pairs, numbers by value.
        rejects[tuple(sorted(key.items()))] = str(reasons)
    return rejects


# --- one table's codec: the SELECTs and the canonical fields ------------------------------------


class _OutOfOrder(Exception):
    """A stream's keys are not strictly increasing: the merge cannot be trusted."""


class _Codec:
    """How one table is read on both sides: key columns first, canonical fields, sort keys."""

    def __init__(self, table: PgTable, schema: str) -> None:
        by_name = {c.name: c for c in table.columns}
        self.table = table
        self.key_columns = [by_name[name] for name in table.primary_key]
        self.columns: list[PgColumn] = self.key_columns + [
            c for c in table.columns if c.name not in table.primary_key
        ]
        self.names = [c.name for c in self.columns]
        self.nkey = len(self.key_columns)
        self.rowid = ROWID_COLUMN in table.primary_key
        self.fields = [sqlite_field(c) for c in self.columns]
        self.pg_fields = [pg_field(c) for c in self.columns]
        self.identity = all(f is None for f in self.pg_fields)
        self.key_types: list[Callable[[str], Key]] = [
            int if base_type(c) in _INTEGER_TYPES else unescape for c in self.key_columns
        ]
        self.key_converters = [converter(c) for c in self.key_columns]
        source = quote(table.source)
        select = ", ".join(
            "rowid" if c.name == ROWID_COLUMN else quote(c.name) for c in self.columns
        )
        self.sqlite_select = f"SELECT {select} FROM {source}"
        if self.rowid:
            self.sqlite_order = "rowid"
        else:
            self.sqlite_order = ", ".join(
                f"{quote(c.name)} COLLATE BINARY" for c in self.key_columns
            )
        self.sqlite_key_select = "SELECT " + (
            "rowid" if self.rowid else ", ".join(quote(c.name) for c in self.key_columns)
        )
        self.sqlite_key_select += f" FROM {source}"
        self.pg_table = f"{quote(schema)}.{quote(table.name)}"
        self.pg_select = ", ".join(quote(c.name) for c in self.columns)
        self.pg_order = ", ".join(_pg_order(c) for c in self.key_columns)

    def key(self, fields: Sequence[str]) -> Key:
        """The sort key of a row from its canonical fields (same function for both sides)."""
        types = self.key_types
        if self.nkey == 1:
            return types[0](fields[0])
        if self.nkey == 2:
            return (types[0](fields[0]), types[1](fields[1]))
        return tuple(convert(f) for convert, f in zip(types, fields, strict=False))

    def pg_key(self, line: str) -> Key:
        if self.nkey == 1:
            end = line.find("\t")
            return self.key_types[0](line if end < 0 else line[:end])
        return self.key(line.split("\t", self.nkey)[: self.nkey])

    def convert(self, row: Sequence[SqliteValue]) -> tuple[list[str | None], dict[int, str]]:
        """Canonical fields of a SQLite row; an unloadable value is ``None`` with its reason."""
        try:
            return [f(v) for f, v in zip(self.fields, row, strict=True)], {}
        except Unrepresentable:
            pass
        fields: list[str | None] = []
        errors: dict[int, str] = {}
        for position, (convert, value) in enumerate(zip(self.fields, row, strict=True)):
            try:
                fields.append(convert(value))
            except Unrepresentable as exc:
                fields.append(None)
                errors[position] = exc.reason
        return fields, errors

    def pg_canonical(self, line: str) -> list[str]:
        parts = line.split("\t")
        if self.identity:
            return parts
        return [f(p) if f else p for f, p in zip(self.pg_fields, parts, strict=True)]

    def report_key(self, row: Sequence[object]) -> dict[str, object]:
        """A SQLite row's key, readable and JSON-safe (the rules of ``copy._key``)."""
        return {c.name: _json_safe(value) for c, value in zip(self.key_columns, row, strict=False)}

    def pg_report_key(self, parts: Sequence[str]) -> dict[str, object]:
        return {
            c.name: convert(part) if part != NULL else None
            for c, convert, part in zip(self.key_columns, self.key_types, parts, strict=False)
        }

    def reject_match(
        self, row: Sequence[object], rejects: Mapping[tuple[object, ...], str]
    ) -> str | None:
        """The quarantine reasons for a SQLite row, if ``copy`` quarantined it."""
        values = [_match_value(_json_safe(v)) for v in row[: self.nkey]]
        names = ["rowid" if c.name == ROWID_COLUMN else c.name for c in self.key_columns]
        return rejects.get(tuple(sorted(zip(names, values, strict=True))))


def _pg_order(column: PgColumn) -> str:
    base = base_type(column)
    if base in _INTEGER_TYPES:
        return quote(column.name)
    if base in _TEXT_ORDER_TYPES:
        return f'{quote(column.name)} COLLATE "C"'
    # Other key types sort as their printed text: the order the canonical keys compare in.
    return f'({quote(column.name)})::text COLLATE "C"'


def _json_safe(value: object) -> object:
    if isinstance(value, RawText):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _match_value(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return value


# --- tallying results ----------------------------------------------------------------------------


@dataclass
class _Tally:
    codec: _Codec
    rejects: Mapping[tuple[object, ...], str]
    max_diffs: int
    source_rows: int = 0
    target_rows: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    quarantined: int = 0
    diffs: list[RowDiff] = field(default_factory=list)
    quarantined_rows: list[Quarantined] = field(default_factory=list)

    def fresh(self) -> _Tally:
        return _Tally(self.codec, self.rejects, self.max_diffs)

    def _add(self, diff: RowDiff) -> None:
        if len(self.diffs) < self.max_diffs:
            self.diffs.append(diff)

    def source_only(self, row: Sequence[object], errors: Mapping[int, str]) -> None:
        reasons = self.codec.reject_match(row, self.rejects) if self.rejects else None
        key = self.codec.report_key(row)
        if reasons is not None:
            self.quarantined += 1
            if len(self.quarantined_rows) < self.max_diffs:
                self.quarantined_rows.append(Quarantined(key, reasons))
            return
        self.missing += 1
        reason = "; ".join(f"{self.codec.names[p]}: {r}" for p, r in sorted(errors.items()))
        self._add(RowDiff("missing", key, reason=reason or None))

    def target_only(self, line: str) -> None:
        self.extra += 1
        if len(self.diffs) < self.max_diffs:
            parts = line.split("\t", self.codec.nkey)[: self.codec.nkey]
            self._add(RowDiff("extra", self.codec.pg_report_key(parts)))

    def compare(
        self,
        row: Sequence[object],
        fields: Sequence[str | None],
        errors: Mapping[int, str],
        line: str,
    ) -> None:
        if not errors and self.codec.identity and "\t".join(fields) == line:  # type: ignore[arg-type]
            return
        target = self.codec.pg_canonical(line)
        columns = [
            ColumnDiff(
                self.codec.names[p],
                None if errors.get(p) else display(s),
                display(t),
                errors.get(p),
            )
            for p, (s, t) in enumerate(zip(fields, target, strict=True))
            if p in errors or s != t
        ]
        if columns:
            self.different += 1
            self._add(RowDiff("different", self.codec.report_key(row), tuple(columns)))

    def result(self, table: str, seconds: float, method: str) -> TableVerify:
        return TableVerify(
            table=table,
            source_rows=self.source_rows,
            target_rows=self.target_rows,
            missing=self.missing,
            extra=self.extra,
            different=self.different,
            quarantined=self.quarantined,
            seconds=seconds,
            method=method,
            diffs=tuple(self.diffs),
            quarantined_rows=tuple(self.quarantined_rows),
        )


# --- the streams ---------------------------------------------------------------------------------

_Source = tuple[Key, Sequence[object], list[str | None], dict[int, str]]


def _sqlite_rows(
    source: sqlite3.Connection, sql: str, params: Sequence[object] = ()
) -> Iterator[Sequence[object]]:
    cursor = source.execute(sql, params)
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield from rows


def _source_stream(
    rows: Iterable[Sequence[object]], codec: _Codec, tally: _Tally, ordered: bool
) -> Iterator[_Source]:
    """Canonical SQLite rows with their keys; rows whose key cannot load are settled at once."""
    last: Key = None
    convert, key_of = codec.convert, codec.key
    for row in rows:
        tally.source_rows += 1
        fields, errors = convert(row)  # type: ignore[arg-type]
        if errors and any(p < codec.nkey for p in errors):
            tally.source_only(row, errors)  # no PostgreSQL row can have this key
            continue
        key = key_of(fields)  # type: ignore[arg-type]
        if ordered and last is not None:
            try:
                in_order = last < key
            except TypeError:
                in_order = False
            if not in_order:
                raise _OutOfOrder(f"SQLite returns key {key!r} after {last!r}")
        last = key
        yield key, row, fields, errors


def _pg_lines(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> Generator[str, None, None]:
    """The lines of ``COPY (…) TO STDOUT``, decoded, without the newline."""
    with conn.cursor() as cursor, cursor.copy(sql) as copy:
        pending = b""
        for block in copy:
            data = pending + bytes(block) if pending else bytes(block)
            if data.endswith(b"\n") and data.count(b"\n") == 1:
                yield data[:-1].decode("utf-8")
                pending = b""
                continue
            *lines, pending = data.split(b"\n")
            for line in lines:
                yield line.decode("utf-8")
        if pending:
            yield pending.decode("utf-8")


def _pg_stream(
    lines: Iterable[str], codec: _Codec, tally: _Tally, ordered: bool
) -> Generator[tuple[Key, str], None, None]:
    last: Key = None
    key_of = codec.pg_key
    for line in lines:
        tally.target_rows += 1
        key = key_of(line)
        if ordered and last is not None and not last < key:
            raise _OutOfOrder(f"PostgreSQL returns key {key!r} after {last!r}")
        last = key
        yield key, line


def _full_pg_sql(codec: _Codec) -> str:
    return (
        f"COPY (SELECT {codec.pg_select} FROM {codec.pg_table} ORDER BY {codec.pg_order}) TO STDOUT"
    )


def _merge(
    source: sqlite3.Connection,
    conn: psycopg.Connection[tuple[object, ...]],
    codec: _Codec,
    tally: _Tally,
) -> None:
    """One ordered pass over both sides; raises ``_OutOfOrder`` when the orders disagree."""
    rows = _sqlite_rows(source, f"{codec.sqlite_select} ORDER BY {codec.sqlite_order}")
    lines = _pg_lines(conn, _full_pg_sql(codec))
    left = _source_stream(rows, codec, tally, ordered=True)
    right = _pg_stream(lines, codec, tally, ordered=True)
    try:
        _merge_streams(left, right, tally)
    finally:
        # Closing the COPY mid-stream cancels it, so the connection can serve the fallback.
        right.close()
        lines.close()


def _merge_streams(
    left: Iterator[_Source], right: Iterator[tuple[Key, str]], tally: _Tally
) -> None:
    s = next(left, None)
    p = next(right, None)
    compare, source_only, target_only = tally.compare, tally.source_only, tally.target_only
    try:
        while s is not None and p is not None:
            if s[0] == p[0]:
                compare(s[1], s[2], s[3], p[1])
                s = next(left, None)
                p = next(right, None)
            elif s[0] < p[0]:
                source_only(s[1], s[3])
                s = next(left, None)
            else:
                target_only(p[1])
                p = next(right, None)
    except TypeError as exc:
        raise _OutOfOrder(f"keys of different types: {exc}") from None
    while s is not None:
        source_only(s[1], s[3])
        s = next(left, None)
    while p is not None:
        target_only(p[1])
        p = next(right, None)


def _hash_join(
    source: sqlite3.Connection,
    conn: psycopg.Connection[tuple[object, ...]],
    codec: _Codec,
    tally: _Tally,
) -> None:
    """Every PostgreSQL row in memory by key, then the SQLite rows in any order."""
    target = dict(_pg_stream(_pg_lines(conn, _full_pg_sql(codec)), codec, tally, ordered=False))
    _join(_sqlite_rows(source, codec.sqlite_select), target, codec, tally)


def _join(
    rows: Iterable[Sequence[object]], target: dict[Key, str], codec: _Codec, tally: _Tally
) -> None:
    for key, row, fields, errors in _source_stream(rows, codec, tally, ordered=False):
        line = target.pop(key, None)
        if line is None:
            tally.source_only(row, errors)
        else:
            tally.compare(row, fields, errors, line)
    for line in target.values():
        tally.target_only(line)


# --- sample and keys mode ------------------------------------------------------------------------


def _sample_keys(
    source: sqlite3.Connection, codec: _Codec, sample: int
) -> list[tuple[object, ...]]:
    cursor = source.execute(f"{codec.sqlite_key_select} ORDER BY random() LIMIT ?", (sample,))
    return [tuple(row) for row in cursor]


def _compare_keys(
    source: sqlite3.Connection,
    conn: psycopg.Connection[tuple[object, ...]],
    codec: _Codec,
    keys: Sequence[tuple[object, ...]],
    tally: _Tally,
) -> None:
    """Fetch exactly ``keys`` from both sides (PostgreSQL: staged in a temp table) and join."""
    unique = list(dict.fromkeys(tuple(k) for k in keys))
    for key in unique:
        if len(key) != codec.nkey:
            raise MigrationError(
                f"{codec.table.name}: key {key!r} has {len(key)} values; the key is "
                f"({', '.join(c.name for c in codec.key_columns)})"
            )
    source.execute("BEGIN")
    try:
        rows = [row for key in unique if (row := _sqlite_row(source, codec, key)) is not None]
    finally:
        source.execute("COMMIT")
    staged: dict[str, None] = {}
    for key in unique:
        try:
            staged["\t".join(c(v) for c, v in zip(codec.key_converters, key, strict=True))] = None  # type: ignore[arg-type]
        except Unrepresentable:
            continue  # no PostgreSQL row can have this key
    lines = _pg_rows_by_key(conn, codec, list(staged))
    target = dict(_pg_stream(lines, codec, tally, ordered=False))
    _join(rows, target, codec, tally)


def _sqlite_row(
    source: sqlite3.Connection, codec: _Codec, key: tuple[object, ...]
) -> Sequence[object] | None:
    names = ["rowid"] if codec.rowid else [quote(c.name) for c in codec.key_columns]
    conditions = []
    params: list[object] = []
    for name, value in zip(names, key, strict=True):
        if isinstance(value, RawText):
            # Bound as bytes it would be a BLOB and never equal the stored TEXT.
            conditions.append(f"{name} IS CAST(? AS TEXT)")
            params.append(bytes(value))
        else:
            conditions.append(f"{name} IS ?")
            params.append(value)
    row: Sequence[object] | None = source.execute(
        f"{codec.sqlite_select} WHERE {' AND '.join(conditions)}", params
    ).fetchone()
    return row


def _pg_rows_by_key(
    conn: psycopg.Connection[tuple[object, ...]], codec: _Codec, staged: list[str]
) -> list[str]:
    if not staged:
        return []
    temp = "_changeover_verify_keys"
    columns = ", ".join(f"k{i} {c.pg_type}" for i, c in enumerate(codec.key_columns))
    on = " AND ".join(f"t.{quote(c.name)} = k.k{i}" for i, c in enumerate(codec.key_columns))
    select = ", ".join(f"t.{quote(name)}" for name in codec.names)
    conn.execute(f"DROP TABLE IF EXISTS pg_temp.{temp}")
    conn.execute(f"CREATE TEMP TABLE {temp} ({columns})")
    try:
        with conn.cursor() as cursor, cursor.copy(f"COPY pg_temp.{temp} FROM STDIN") as copy:
            copy.write("".join(line + "\n" for line in staged).encode("utf-8"))
        return list(
            _pg_lines(
                conn,
                f"COPY (SELECT {select} FROM {codec.pg_table} AS t JOIN pg_temp.{temp} AS k "
                f"ON {on}) TO STDOUT",
            )
        )
    finally:
        conn.execute(f"DROP TABLE IF EXISTS pg_temp.{temp}")
