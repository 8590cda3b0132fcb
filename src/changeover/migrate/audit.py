"""Type audit: scan SQLite data for values that do not fit the PostgreSQL type the plan maps to.

``checks_for`` (pure) decides which SQL conditions to count for a column; ``audit`` runs them as
one aggregate query per table (``typeof()`` counts), fetches up to five example keys per non-empty
finding, and decodes text in Python only for the UTF-8 check (``text_factory = bytes``).
Severity: ``error`` — the value cannot be loaded as mapped (a cast rule or a data fix is needed);
``warning`` — it loads but may mean something else to the new app; ``info`` — normal SQLite
representation that the copy converts (ISO dates, 0/1 booleans, empty strings vs NULL).
Note: SQLite cannot store a REAL NaN (it becomes NULL), so NaN shows up only as text ``'NaN'``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changeover.errors import UsageError
from changeover.migrate.schema import ROWID_COLUMN, PgColumn, PgPlan, plan_schema, quote
from changeover.migrate.sqlite import SqliteSchema, Table, connect_readonly, read_tables

Severity = Literal["error", "warning", "info"]
EXAMPLES = 5

_INTEGER_TYPES = ("bigint", "integer", "smallint")
_FLOAT_TYPES = ("double precision", "real")
_TIME_TYPES = ("date", "timestamptz", "timestamp", "time")
_TEXT_TYPES = ("text", "varchar", "json", "jsonb", "uuid")
_DATE_NAME = re.compile(r"(_at|_on|_date|_time|_ts)$|^(date|time|timestamp)$", re.IGNORECASE)

# Plausible epochs: seconds 1973..5138, milliseconds 1973..5138 (beyond: microseconds or noise).
_EPOCH_S = "BETWEEN 1e8 AND 1e11"
_EPOCH_MS = "BETWEEN 1e11 AND 1e14"
_ISO_GLOB = "'[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]*'"
_BOOL_TEXT = "('true','false','t','f','yes','no','TRUE','FALSE','True','False')"


@dataclass(frozen=True)
class AuditFinding:
    """``count`` values of ``table.column`` are of ``kind``; ``examples`` are their row keys."""

    table: str
    column: str
    kind: str
    count: int
    examples: tuple[tuple[object, ...], ...]
    suggestion: str | None
    severity: Severity


@dataclass(frozen=True)
class Check:
    """One condition to count; ``{c}`` in ``condition`` stands for the quoted column."""

    kind: str
    condition: str
    severity: Severity
    suggestion: str | None


def checks_for(table: str, column: PgColumn, in_key: bool = False) -> list[Check]:
    """The conditions that flag values of ``column`` not fitting its PostgreSQL type."""
    base = column.pg_type.split("(")[0]
    where = f"{table}.{column.name}"
    checks: list[Check] = []
    if in_key:
        # SQLite lets non-integer primary key columns of rowid tables hold NULL.
        checks.append(
            Check(
                "null_in_primary_key",
                "{c} IS NULL",
                "error",
                "PostgreSQL key columns cannot be NULL: fix the rows",
            )
        )
    if base in _INTEGER_TYPES:
        checks += [
            Check(
                "text_in_integer",
                "typeof({c}) = 'text'",
                "error",
                f"fix the rows, or cast: {{{where}: text}}",
            ),
            Check(
                "integer_beyond_64_bits",
                "typeof({c}) = 'real' AND abs({c}) >= 9223372036854775808.0",
                "error",
                f"cast: {{{where}: numeric}}",
            ),
            Check(
                "real_in_integer",
                "typeof({c}) = 'real' AND abs({c}) < 9223372036854775808.0",
                "error",
                f"cast: {{{where}: double precision}} (or numeric)",
            ),
        ]
    if base in _FLOAT_TYPES or base == "numeric":
        checks.append(
            Check(
                "text_in_number",
                "typeof({c}) = 'text'",
                "error",
                f"fix the rows ('NaN' text is how SQLite keeps NaN), or cast: {{{where}: text}}",
            )
        )
        checks.append(
            Check(
                "real_infinity",
                "typeof({c}) = 'real' AND abs({c}) = 9e999",
                "warning" if base in _FLOAT_TYPES else "error",
                "PostgreSQL keeps ±Infinity; check the new app reads it",
            )
        )
    if base not in ("bytea",):
        checks.append(
            Check("blob_in_non_blob", "typeof({c}) = 'blob'", "error", f"cast: {{{where}: bytea}}")
        )
    if base in _TEXT_TYPES or base in _TIME_TYPES or base == "boolean":
        checks.append(
            Check(
                "nul_in_text",
                "typeof({c}) = 'text' AND instr(CAST({c} AS BLOB), x'00') > 0",
                "error",
                f"PostgreSQL text cannot hold NUL bytes: fix the rows, or cast: {{{where}: bytea}}",
            )
        )
    if base in ("text", "varchar"):
        checks.append(
            Check(
                "empty_string",
                "typeof({c}) = 'text' AND {c} = ''",
                "info",
                "empty strings stay empty strings, distinct from NULL",
            )
        )
    if base in ("json", "jsonb"):
        checks.append(
            Check(
                "invalid_json",
                "{c} IS NOT NULL AND typeof({c}) <> 'blob' AND NOT json_valid({c})",
                "error",
                f"cast: {{{where}: text}}",
            )
        )
    if base == "boolean":
        checks += [
            Check("bool_as_int", "{c} IN (0, 1) AND typeof({c}) = 'integer'", "info", None),
            Check(
                "bool_as_text",
                f"typeof({{c}}) = 'text' AND {{c}} IN {_BOOL_TEXT}",
                "warning",
                f"cast: {{{where}: boolean from bool_int}}",
            ),
            Check(
                "not_boolean",
                f"{{c}} IS NOT NULL AND NOT ({{c}} IN (0, 1) AND typeof({{c}}) = 'integer') "
                f"AND NOT (typeof({{c}}) = 'text' AND {{c}} IN {_BOOL_TEXT})",
                "error",
                "fix the rows, or map the column to text/bigint",
            ),
        ]
    if base in _TIME_TYPES or (base in _INTEGER_TYPES and _DATE_NAME.search(column.name)):
        checks += _date_checks(where, base, column.source_format)
    return checks


def _date_checks(where: str, base: str, source_format: str | None) -> list[Check]:
    target = base if base in _TIME_TYPES else "timestamptz"
    is_time = base in _TIME_TYPES

    def numeric_severity(fmt: str) -> Severity:
        if source_format == fmt or not is_time:
            return "info"
        return "error"

    checks = [
        Check(
            "epoch_seconds",
            f"typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) {_EPOCH_S}",
            numeric_severity("epoch_s"),
            f"cast: {{{where}: {target} from epoch_s}}",
        ),
        Check(
            "epoch_milliseconds",
            f"typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) {_EPOCH_MS}",
            numeric_severity("epoch_ms"),
            f"cast: {{{where}: {target} from epoch_ms}}",
        ),
    ]
    if is_time:
        checks += [
            Check(
                "date_iso_text",
                f"typeof({{c}}) = 'text' AND {{c}} GLOB {_ISO_GLOB}",
                "info",
                "ISO 8601 text; a missing zone is read as UTC",
            ),
            Check(
                "date_unparsable",
                f"{{c}} IS NOT NULL AND NOT (typeof({{c}}) = 'text' AND {{c}} GLOB {_ISO_GLOB}) "
                f"AND NOT (typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) {_EPOCH_S}) "
                f"AND NOT (typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) {_EPOCH_MS})",
                "error",
                "neither ISO 8601 text nor a plausible epoch: fix the rows, or map to text",
            ),
        ]
    return checks


def audit(
    path: str | Path, schema: SqliteSchema | None = None, plan: PgPlan | None = None
) -> list[AuditFinding]:
    """Audit every table of the SQLite file at ``path`` against ``plan`` (default mapping)."""
    conn = connect_readonly(path)
    try:
        schema = schema or SqliteSchema(str(path), tuple(read_tables(conn)))
        plan = plan or plan_schema(schema)
        findings: list[AuditFinding] = []
        for pg_table in plan.tables:
            table = schema.table(pg_table.source)
            columns = [c for c in pg_table.columns if c.name != ROWID_COLUMN]
            findings += audit_table(conn, table, columns)
            findings += orphan_findings(conn, schema, table)
        return findings
    except sqlite3.Error as exc:
        raise UsageError(f"cannot audit SQLite database {str(path)!r}: {exc}") from exc
    finally:
        conn.close()


def audit_table(
    conn: sqlite3.Connection, table: Table, columns: Sequence[PgColumn]
) -> list[AuditFinding]:
    """One aggregate pass over ``table`` for the SQL checks, one for UTF-8; then examples."""
    name = quote(table.name)
    key = ", ".join("rowid" if k == "rowid" else quote(k) for k in table.key_columns)
    planned = [
        (column, check, check.condition.replace("{c}", quote(column.name)))
        for column in columns
        for check in checks_for(
            table.name, column, in_key=column.name in table.primary_key and not column.identity
        )
    ]
    findings: list[AuditFinding] = []
    if planned:
        sums = ", ".join(f"coalesce(sum({cond}), 0)" for _col, _check, cond in planned)
        counts = conn.execute(f"SELECT {sums} FROM {name}").fetchone()
        for (column, check, cond), count in zip(planned, counts, strict=True):
            if count and check.kind == "empty_string":
                nulls = conn.execute(
                    f"SELECT count(*) FROM {name} WHERE {quote(column.name)} IS NULL"
                ).fetchone()[0]
                check = Check(
                    check.kind,
                    check.condition,
                    check.severity,
                    f"{nulls} NULL besides; {check.suggestion}",
                )
            if count:
                examples = conn.execute(
                    f"SELECT {key} FROM {name} WHERE {cond} LIMIT {EXAMPLES}"
                ).fetchall()
                findings.append(
                    AuditFinding(
                        table.name,
                        column.name,
                        check.kind,
                        int(count),
                        tuple(tuple(row) for row in examples),
                        check.suggestion,
                        check.severity,
                    )
                )
    text_columns = [c for c in columns if c.pg_type.split("(")[0] in _TEXT_TYPES]
    if text_columns:
        findings += _utf8_findings(conn, table, key, text_columns)
    return findings


def orphan_findings(
    conn: sqlite3.Connection, schema: SqliteSchema, table: Table
) -> list[AuditFinding]:
    """Rows whose foreign key points nowhere: SQLite enforces foreign keys only when asked to,
    PostgreSQL refuses to create the constraint over them."""
    names = {t.name: t for t in schema.tables}
    key = ", ".join("c.rowid" if k == "rowid" else f"c.{quote(k)}" for k in table.key_columns)
    findings = []
    for fk in table.foreign_keys:
        parent = names.get(fk.ref_table)
        if parent is None:
            continue  # the plan already warns that this foreign key is not created
        ref_columns = fk.ref_columns or parent.key_columns
        if len(ref_columns) != len(fk.columns):
            continue
        present = " AND ".join(f"c.{quote(col)} IS NOT NULL" for col in fk.columns)
        match = " AND ".join(
            f"p.{quote(ref)} = c.{quote(col)}"
            for col, ref in zip(fk.columns, ref_columns, strict=True)
        )
        cond = f"{present} AND NOT EXISTS (SELECT 1 FROM {quote(parent.name)} AS p WHERE {match})"
        source = f"{quote(table.name)} AS c"
        (count,) = conn.execute(f"SELECT count(*) FROM {source} WHERE {cond}").fetchone()
        if count:
            examples = conn.execute(
                f"SELECT {key} FROM {source} WHERE {cond} LIMIT {EXAMPLES}"
            ).fetchall()
            findings.append(
                AuditFinding(
                    table.name,
                    ", ".join(fk.columns),
                    "orphan_foreign_key",
                    int(count),
                    tuple(tuple(row) for row in examples),
                    f"no matching {fk.ref_table} row, so the foreign key cannot be created: "
                    "fix or delete these rows",
                    "error",
                )
            )
    return findings


def _utf8_findings(
    conn: sqlite3.Connection, table: Table, key: str, columns: Sequence[PgColumn]
) -> list[AuditFinding]:
    nkey = len(table.key_columns)
    selected = ", ".join(
        f"CASE WHEN typeof({quote(c.name)}) = 'text' THEN {quote(c.name)} END" for c in columns
    )
    bad: dict[str, list[tuple[object, ...]]] = {c.name: [] for c in columns}
    counts = dict.fromkeys(bad, 0)
    previous = conn.text_factory
    conn.text_factory = bytes  # read raw bytes: SQLite does not validate UTF-8 on insert
    try:
        rows: Iterable[tuple[object, ...]] = conn.execute(
            f"SELECT {key}, {selected} FROM {quote(table.name)}"
        )
        for row in rows:
            for column, value in zip(columns, row[nkey:], strict=True):
                if isinstance(value, bytes) and not _valid_utf8(value):
                    counts[column.name] += 1
                    if len(bad[column.name]) < EXAMPLES:
                        bad[column.name].append(tuple(_decode_key(k) for k in row[:nkey]))
    finally:
        conn.text_factory = previous
    return [
        AuditFinding(
            table.name,
            name,
            "invalid_utf8",
            counts[name],
            tuple(bad[name]),
            f"fix the rows, or cast: {{{table.name}.{name}: bytea}}",
            "error",
        )
        for name in bad
        if counts[name]
    ]


def _valid_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_key(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def render_findings(findings: Sequence[AuditFinding]) -> str:
    """A plain-text table of the findings, errors first, for ``migrate plan``."""
    order = {"error": 0, "warning": 1, "info": 2}
    lines = []
    for f in sorted(findings, key=lambda f: (order[f.severity], f.table, f.column, f.kind)):
        examples = ", ".join(
            "(" + ", ".join(map(repr, k)) + ")" if len(k) != 1 else repr(k[0]) for k in f.examples
        )
        line = f"{f.severity:7} {f.table}.{f.column}: {f.kind} × {f.count} (keys {examples})"
        if f.suggestion:
            line += f" — {f.suggestion}"
        lines.append(line)
    return "\n".join(lines)
