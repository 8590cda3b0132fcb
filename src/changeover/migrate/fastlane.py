"""The bulk copy's fast lane: SQLite writes a row's whole COPY text line itself (C speed).

``fast_lane(conn, table)`` gives one SQL expression per table that yields the escaped line when
every value of the row is in a common, unambiguous form (rules per type in ``_value_sql``); a
value outside them writes 0xFF instead. Lines that are not clean UTF-8 without NUL (``clean``,
checked in Python) go through ``values.converter`` unchanged: the lane never decides a refusal.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from dataclasses import dataclass

from changeover.migrate.schema import ROWID_COLUMN, PgColumn, PgTable, quote

# CHANGEOVER_COPY_FAST_LANE=0 sends every row through the Python converters (for comparison).
ENV_SWITCH = "CHANGEOVER_COPY_FAST_LANE"
FLOAT_FUNCTION = "changeover_float"
CLEAN_FUNCTION = "changeover_clean"
# Longer JSON goes the Python way: json.loads refuses >4300-digit numbers and deep nesting.
JSON_FAST_LIMIT = 1800
_SLOW = "CAST(x'ff' AS TEXT)"
_PRINTF_ARGS = 100

_INT_RANGES = {
    "bigint": None,
    "integer": (-(2**31), 2**31 - 1),
    "smallint": (-(2**15), 2**15 - 1),
}
_D2 = "[0-9][0-9]"
_DATE_GLOB = f"{_D2}{_D2}-{_D2}-{_D2}"
_CORE_GLOB = f"{_DATE_GLOB}[ T]{_D2}:{_D2}:{_D2}"
_OFFSET_GLOB = f"[+-]{_D2}:{_D2}"
_MIDNIGHT = "'T00:00:00'"
_MS, _US = ".[0-9][0-9][0-9]", ".[0-9][0-9][0-9][0-9][0-9][0-9]"
# ISO 8601 text accepted, by length: (GLOB pattern, fraction digits, has a numeric offset).
_TIME_SHAPES = {
    19: (_CORE_GLOB, 0, False),
    20: (_CORE_GLOB + "Z", 0, False),
    25: (_CORE_GLOB + _OFFSET_GLOB, 0, True),
    23: (_CORE_GLOB + _MS, 3, False),
    24: (_CORE_GLOB + _MS + "Z", 3, False),
    29: (_CORE_GLOB + _MS + _OFFSET_GLOB, 3, True),
    26: (_CORE_GLOB + _US, 6, False),
    27: (_CORE_GLOB + _US + "Z", 6, False),
    32: (_CORE_GLOB + _US + _OFFSET_GLOB, 6, True),
}


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


@dataclass(frozen=True)
class FastLane:
    """``line`` is the SQL expression of a row's COPY line (with its newline).

    A value the lane leaves to Python writes the byte 0xFF (never in UTF-8), so its line fails
    ``clean`` like a line with a NUL or invalid UTF-8, and all three go the Python way.
    """

    line: str

    def query(self, source: str, order: str) -> str:
        return f"SELECT CAST({self.line} AS BLOB) FROM {source} ORDER BY {order}"

    def slow_condition(self) -> str:
        """The rows the fast lane leaves to Python."""
        return f"NOT {CLEAN_FUNCTION}(CAST({self.line} AS BLOB))"


def fast_lane(conn: sqlite3.Connection, table: PgTable) -> FastLane | None:
    """The table's fast lane on ``conn`` (functions registered), or None if a column has none."""
    encoding = conn.execute("PRAGMA encoding").fetchone()[0]
    if encoding not in ("UTF-8", b"UTF-8"):  # bytes under text_factory = RawText
        return None  # CAST(text AS BLOB) would give UTF-16 bytes
    json_check = _json_check(conn)
    fields = []
    for column in table.columns:
        ref = "rowid" if column.name == ROWID_COLUMN else quote(column.name)
        body = _value_sql(column, ref, json_check)
        if body is None:
            return None
        null = _SLOW if column.notnull else "'\\N'"
        fields.append(f"coalesce(CASE WHEN {ref} IS NULL THEN {null} ELSE {body} END, {_SLOW})")
    conn.create_function(FLOAT_FUNCTION, 1, float_field, deterministic=True)
    conn.create_function(CLEAN_FUNCTION, 1, clean, deterministic=True)
    # One printf() per (up to) 100 fields: one string built, where || copies it per field.
    # printf's %s stops at a NUL byte: text fields with a NUL write _SLOW instead (_escaped).
    chunks = [fields[i : i + _PRINTF_ARGS] for i in range(0, len(fields), _PRINTF_ARGS)]
    parts = []
    for chunk in chunks:
        fmt = "\t".join(["%s"] * len(chunk))
        parts.append(f"printf('{fmt}', {', '.join(chunk)})")
    return FastLane(" || '\t' || ".join(parts) + " || '\n'")


def float_field(value: object) -> str | None:
    """A finite REAL as the Python path writes it (repr: shortest text that round-trips)."""
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return None


def clean(line: object) -> bool:
    """Whether a line can go to PostgreSQL as is: valid UTF-8 (as Python decodes it), no NUL."""
    if not isinstance(line, bytes) or b"\x00" in line:
        return False
    if line.isascii():
        return True
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _json_check(conn: sqlite3.Connection) -> str | None:
    """``json_valid`` where it is strict RFC 8259 (SQLite before 3.42), else None.

    3.42-3.44 accept JSON5, which json.loads refuses; 3.45's strict flag is not yet tested
    against json.loads here, so those versions leave JSON to Python.
    """
    version = tuple(int(part) for part in sqlite3.sqlite_version.split(".")[:2])
    if version >= (3, 42):
        return None
    try:
        conn.execute("SELECT json_valid('1')").fetchone()
    except sqlite3.Error:
        return None  # built without JSON functions
    return "json_valid({})"


def _escaped(x: str) -> str:
    # COPY text escapes; replace() only when instr() finds one of the four characters (four
    # instr() calls cost less than one GLOB '*[...]*' scan in SQLite 3.40). A NUL: to Python.
    found = " OR ".join(f"instr({x}, '{c}')" for c in ("\\", "\t", "\n", "\r"))
    return (
        f"CASE WHEN instr({x}, char(0)) THEN NULL WHEN {found} THEN "
        f"replace(replace(replace(replace({x}, '\\', '\\\\'), '\t', '\\t'), '\n', '\\n'), "
        f"'\r', '\\r') ELSE {x} END"
    )


def _value_sql(column: PgColumn, x: str, json_check: str | None) -> str | None:
    """The COPY field for a non-NULL ``x`` when its form is unambiguous, else NULL (SQL).

    ``x`` is compared with literals only through functions (substr, length, GLOB) or as a number:
    a column's affinity would turn a literal like '0002' into the integer 2.
    """
    base = column.pg_type.split("(")[0].strip()
    if base in _INT_RANGES:
        bounds = _INT_RANGES[base]
        fits = f" AND {x} BETWEEN {bounds[0]} AND {bounds[1]}" if bounds else ""
        return f"CASE WHEN typeof({x}) = 'integer'{fits} THEN {x} END"
    if base == "text":
        return f"CASE typeof({x}) WHEN 'text' THEN {_escaped(x)} WHEN 'integer' THEN {x} END"
    if base == "varchar":
        limit = int(column.pg_type.split("(")[1].rstrip(")"))
        return (
            f"CASE WHEN length({x}) > {limit} THEN NULL WHEN typeof({x}) = 'text' THEN "
            f"{_escaped(x)} WHEN typeof({x}) = 'integer' THEN {x} END"
        )
    if base == "double precision":
        return (
            f"CASE typeof({x}) WHEN 'integer' THEN {x} WHEN 'real' THEN {FLOAT_FUNCTION}({x}) END"
        )
    if base == "numeric":
        return _numeric_sql(column.pg_type, x)
    if base == "boolean":
        flag = f"CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' END"
        return f"CASE WHEN typeof({x}) = 'integer' THEN {flag} END"
    if base == "bytea":
        return f"CASE WHEN typeof({x}) = 'blob' THEN '\\\\x' || lower(hex({x})) END"
    if base == "json" and json_check is not None:
        return (
            f"CASE WHEN typeof({x}) = 'text' AND length({x}) <= {JSON_FAST_LIMIT} AND "
            f"{json_check.format(x)} THEN {_escaped(x)} WHEN typeof({x}) = 'integer' THEN {x} END"
        )
    if base in ("date", "timestamp", "timestamptz") and column.source_format in (
        None,
        "iso8601",
        "text",
    ):
        return _time_sql(base, x)
    return None


def _numeric_sql(pg_type: str, x: str) -> str | None:
    exact = f"CASE typeof({x}) WHEN 'integer' THEN {x} WHEN 'real' THEN {FLOAT_FUNCTION}({x}) END"
    if pg_type == "numeric":
        return exact
    precision = re.fullmatch(r"numeric\((\d+)(?:,\s*(\d+))?\)", pg_type)
    if not precision:
        return None
    digits, scale = int(precision.group(1)), int(precision.group(2) or 0)
    # Python checks the fit with Decimal (28 digits of context): stay well inside both limits.
    if digits > 28 or digits - scale < 1:
        return None
    bound = 10 ** (digits - scale) - 1
    return f"CASE WHEN {x} > -{bound} AND {x} < {bound} THEN {exact} END"


def _time_sql(base: str, x: str) -> str:
    """ISO 8601 text in the shapes of ``_TIME_SHAPES`` (years 0002-9998, valid dates and times).

    Plain comparisons on the digits first; SQLite's date functions only for a day past the 28th
    (SQLite keeps 2026-02-30 as written; '+0 days' normalises it: equal means valid) and for a
    numeric offset (the UTC instant).
    """
    day = f"substr({x}, 1, 10)"
    date_ok = (
        f"substr({x}, 6, 2) BETWEEN '01' AND '12' AND substr({x}, 9, 2) >= '01' AND "
        f"(substr({x}, 9, 2) <= '28' OR date({day}, '+0 days') = {day})"
    )
    time_ok = (
        f"substr({x}, 12, 2) < '24' AND substr({x}, 15, 2) < '60' AND substr({x}, 18, 2) < '60'"
    )

    def out(wall: str) -> str:
        if base == "date":
            return f"substr({wall}, 1, 10)"
        return f"{wall} || '+00:00'" if base == "timestamptz" else wall

    branches = [f"WHEN 10 THEN CASE WHEN {x} GLOB '{_DATE_GLOB}' AND {date_ok} THEN "]
    branches[0] += f"{x} END" if base == "date" else f"{out(f'{x} || {_MIDNIGHT}')} END"
    for length, (glob, digits, offset) in _TIME_SHAPES.items():
        if offset:
            utc = f"datetime(substr({x}, 1, 19) || substr({x}, -6))"
            wall = f"replace({utc}, ' ', 'T')"
        else:
            wall = f"replace(substr({x}, 1, 19), ' ', 'T')"
        if digits:
            # isoformat() writes microseconds as six digits, and none when they are zero.
            zeros = "0" * digits
            pad = "0" * (6 - digits)
            wall = (
                f"{wall} || (CASE substr({x}, 21, {digits}) WHEN '{zeros}' THEN '' "
                f"ELSE substr({x}, 20, {digits + 1}) || '{pad}' END)"
            )
        branches.append(
            f"WHEN {length} THEN CASE WHEN {x} GLOB '{glob}' AND {date_ok} AND {time_ok} "
            f"THEN {out(wall)} END"
        )
    return (
        f"CASE WHEN typeof({x}) = 'text' AND substr({x}, 1, 4) BETWEEN '0002' AND '9998' THEN "
        f"CASE length({x}) {' '.join(branches)} END END"
    )
