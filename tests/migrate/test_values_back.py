"""PostgreSQL → SQLite values for reverse sync: every value read back loads as the same value.

The property under test is the right inverse: ``converter(column)(to_sqlite(v, column))`` gives
PostgreSQL exactly ``v`` again. The corpus tests prove it in PostgreSQL itself (a second schema
loaded from the converted rows, compared with EXCEPT both ways) and through a real SQLite file.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.copy import copy_database
from changeover.migrate.schema import ROWID_COLUMN, PgColumn, PgTable, plan_schema, quote
from changeover.migrate.sqlite import introspect
from changeover.migrate.values import RawText, Unrepresentable, converter
from changeover.migrate.values_back import SqliteOut, select_list, to_sqlite, to_sqlite_row
from migrate.corpus import WEIRD_CASTS, make_app_db, make_weird_db

# typeof() each PostgreSQL type may give in SQLite (the module docstring's table)
ALLOWED_TYPEOF = {
    "bigint": {"integer"},
    "integer": {"integer"},
    "smallint": {"integer"},
    "boolean": {"integer"},
    "double precision": {"real", "text"},  # text: 'NaN'
    "real": {"real", "text"},
    "numeric": {"integer", "real", "text"},
    "json": {"text"},
    "jsonb": {"text"},
    "text": {"text"},
    "varchar": {"text"},
    "uuid": {"text"},
    "bytea": {"blob"},
}
SQLITE_TYPEOF = {int: "integer", float: "real", str: "text", bytes: "blob", type(None): "null"}


def col(pg_type: str, source_format: str | None = None) -> PgColumn:
    return PgColumn("c", pg_type, False, None, source_format=source_format)


def forward(value: SqliteOut, column: PgColumn) -> str:
    """What the forward copy loads for a value as SQLite hands it over (text as RawText)."""
    if isinstance(value, str):
        return converter(column)(RawText(value.encode()))
    return converter(column)(value)


def base(column: PgColumn) -> str:
    return column.pg_type.split("(")[0]


def compared(column: PgColumn) -> str:
    """A column as compared: json has no equality; floats and numerics compare by their text."""
    if base(column) in ("json", "jsonb", "double precision", "real", "numeric"):
        return f"{quote(column.name)}::text"
    return quote(column.name)


def reload_into_second_schema(
    conn: psycopg.Connection[tuple[object, ...]], tables: Sequence[PgTable]
) -> dict[str, list[tuple[SqliteOut, ...]]]:
    """Read every row of ``public`` back, to_sqlite it, forward-convert it into ``back``."""
    conn.execute("CREATE SCHEMA back")
    converted: dict[str, list[tuple[SqliteOut, ...]]] = {}
    for table in tables:
        conn.execute("SET search_path TO back")
        conn.execute(table.create_sql)
        conn.execute("SET search_path TO public")
        rows = conn.execute(f"SELECT {select_list(table)} FROM public.{quote(table.name)}")
        converted[table.name] = [to_sqlite_row(row, table) for row in rows.fetchall()]
        converters = [converter(c) for c in table.columns]
        target = ", ".join(quote(c.name) for c in table.columns)
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY back.{quote(table.name)} ({target}) FROM STDIN") as copy,
        ):
            for row in converted[table.name]:
                fields = [
                    convert(RawText(v.encode()) if isinstance(v, str) else v)
                    for v, convert in zip(row, converters, strict=True)
                ]
                copy.write(("\t".join(fields) + "\n").encode())
    return converted


def assert_identical(conn: psycopg.Connection[tuple[object, ...]], table: PgTable) -> None:
    columns = ", ".join(compared(c) for c in table.columns)
    name = quote(table.name)
    for left, right in (("public", "back"), ("back", "public")):
        extra = conn.execute(
            f"SELECT {columns} FROM {left}.{name} EXCEPT SELECT {columns} FROM {right}.{name}"
        ).fetchall()
        assert extra == [], f"{table.name}: rows in {left} not in {right}"
    counts = conn.execute(
        f"SELECT (SELECT count(*) FROM public.{name}), (SELECT count(*) FROM back.{name})"
    ).fetchone()
    assert counts is not None and counts[0] == counts[1], table.name


def write_sqlite_and_check(
    source: Path,
    target: Path,
    tables: Sequence[PgTable],
    converted: dict[str, list[tuple[SqliteOut, ...]]],
) -> None:
    """Insert the converted rows into a fresh file with the source's CREATE TABLEs; read back."""
    with sqlite3.connect(source) as original:
        creates = [
            sql
            for (sql,) in original.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'"
            )
        ]
    original.close()
    db = sqlite3.connect(target)
    db.text_factory = RawText
    try:
        for sql in creates:
            db.execute(sql)
        for table in tables:
            names = ["rowid" if c.name == ROWID_COLUMN else quote(c.name) for c in table.columns]
            marks = ", ".join("?" for _ in names)
            db.executemany(
                f"INSERT INTO {quote(table.source)} ({', '.join(names)}) VALUES ({marks})",
                converted[table.name],
            )
        db.commit()
        for table in tables:
            names = ["rowid" if c.name == ROWID_COLUMN else quote(c.name) for c in table.columns]
            key = [i for i, c in enumerate(table.columns) if c.name in table.primary_key]
            expected = {tuple(row[i] for i in key): row for row in converted[table.name]}
            typeofs = ", ".join(f"typeof({n})" for n in names)
            stored = db.execute(f"SELECT {', '.join(names)}, {typeofs} FROM {quote(table.source)}")
            seen = 0
            for found in stored:
                values = found[: len(names)]
                kinds = [bytes(kind).decode() for kind in found[len(names) :]]
                row_key = tuple(
                    bytes(values[i]).decode() if isinstance(values[i], RawText) else values[i]
                    for i in key
                )
                want = expected[row_key]
                for column, kind, value, wanted in zip(
                    table.columns, kinds, values, want, strict=True
                ):
                    where = f"{table.name}.{column.name} {row_key}"
                    assert kind == SQLITE_TYPEOF[type(wanted)], where  # SQLite kept it as given
                    if wanted is not None and base(column) in ALLOWED_TYPEOF:
                        assert kind in ALLOWED_TYPEOF[base(column)], where
                    # what the forward copy reads from the file loads the same value
                    assert converter(column)(value) == forward(wanted, column), where
                seen += 1
            assert seen == len(converted[table.name])
    finally:
        db.close()


def test_app_corpus_goes_back_to_sqlite_and_forward_again_unchanged(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=60)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        converted = reload_into_second_schema(conn, plan.tables)
        for table in plan.tables:
            assert converted[table.name], f"{table.name} is empty: the test would prove nothing"
            assert_identical(conn, table)
    write_sqlite_and_check(db, tmp_path / "back.db", plan.tables, converted)
    users = next(t for t in plan.tables if t.name == "users")
    first = min(converted["users"], key=lambda row: row[0] or 0)
    by_name = dict(zip((c.name for c in users.columns), first, strict=True))
    assert by_name["is_admin"] == 1
    created = by_name["created_at"]
    assert isinstance(created, str) and len(created) == 19 and created[10] == " "


def test_weird_corpus_goes_back_to_sqlite_and_forward_again_unchanged(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(introspect(db), casts=WEIRD_CASTS)
    summary = copy_database(db, pg_url, plan, on_error="quarantine", jobs=1)
    assert summary.copied > 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        converted = reload_into_second_schema(conn, plan.tables)
        for table in plan.tables:
            assert_identical(conn, table)
    write_sqlite_and_check(db, tmp_path / "back.db", plan.tables, converted)
    ratios = sorted((row[0], row[3]) for row in converted["numbers"])
    assert ratios == [(1, 0.5), (6, math.inf), (7, -math.inf), (8, None), (9, "NaN")]
    events = {row[0]: row for row in converted["events"]}
    # 'T…Z' text comes back in SQLite's datetime() form; epochs come back as integers
    assert events[1][1:] == ("2026-11-20 10:00:00", 1_763_632_800, 1_763_632_800_000, "2026-11-20")
    flags = sorted(converted["flags"], key=lambda row: row[0] or 0)
    assert [row[1] for row in flags] == [1, 0, 1, 0, None]  # 'true'/'false' text came back 1/0


EDGE_SCHEMA = """
CREATE TABLE edges (
    id INTEGER PRIMARY KEY, i INTEGER, s SMALLINT, f REAL, r REAL, n NUMERIC, p DECIMAL(12,2),
    b BOOLEAN, ts DATETIME, tse INTEGER, tsm INTEGER, tn TEXT, d DATE, de INTEGER, t TIME,
    te INTEGER, j JSON, jb TEXT, by BLOB, tx TEXT, u TEXT, v TEXT
);
"""
EDGE_CASTS = {
    "edges.r": "real",
    "edges.s": "smallint",
    "edges.tse": "timestamptz from epoch_s",
    "edges.tsm": "timestamptz from epoch_ms",
    "edges.tn": "timestamp",
    "edges.de": "date from epoch_s",
    "edges.te": "time from epoch_ms",
    "edges.jb": "jsonb",
    "edges.u": "uuid",
    "edges.v": "varchar(10)",
}
EDGE_ROWS = [
    {
        "i": "9223372036854775807",
        "s": "-32768",
        "f": "'-0'",
        "r": "'3.4028235e38'",
        "n": "'123456789012345678901234567890.123456'",
        "p": "'1234567890.12'",
        "b": "true",
        "ts": "'2024-01-01 10:00:00.000001+00'",
        "tse": "'1969-12-31 23:59:59.5+00'",
        "tsm": "'1969-12-31 23:59:59.999+00'",
        "tn": "'2024-02-29 23:59:59.123456'",
        "d": "'0001-01-01'",
        "de": "'1960-02-29'",
        "t": "'23:59:59.999999'",
        "te": "'00:00:00.001'",
        "j": """'{"b": 1,  "a": [1.50, "x"]}'""",
        "jb": """'{"b": 1, "a": "🚀"}'""",
        "by": "'\\x00ff00'::bytea",
        "tx": "''",
        "u": "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
        "v": "'café ☕🚀'",
    },
    {
        "i": "-9223372036854775808",
        "f": "'NaN'",
        "r": "'1e-45'",
        "n": "'NaN'",
        "p": "'-0.01'",
        "b": "false",
        "ts": "'1900-01-01 00:00:00 Europe/Amsterdam'",
        "tse": "'2038-01-19 03:14:07.123456+00'",
        "tsm": "'2024-01-01 00:00:00.000123+00'",
        "d": "'9999-12-31'",
        "t": "'00:00:00'",
        "j": "'[]'",
        "jb": "'null'",
        "by": "''::bytea",
        "tx": "NULL",
        "v": "''",
    },
    {
        "f": "'Infinity'",
        "r": "'-Infinity'",
        "n": "'6.20'",
        "p": "'6.20'",
        "ts": "'9999-12-31 23:59:59.999999+00'",
        "tse": "'1901-12-13 20:45:52+00'",
        "tsm": "'1677-09-21 00:12:43.145+00'",
        "j": "'\"tab\\there\"'",
        "tx": "'line\\nbreak\\\\ and\ttab'",
    },
    {"f": "'1.7976931348623157e308'", "r": "'0.1'", "n": "'0.1'", "p": "'0'", "tx": "'0'"},
    {"f": "'5e-324'", "r": "'16777217'", "n": "'-1e-20'", "i": "0"},
    {"n": "'100000000000000000000'", "tx": "'NULL'"},
    {"n": "'Infinity'"},
    {},
]


def test_edge_values_from_postgresql_load_back_identically(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "edges.db"
    with sqlite3.connect(source) as setup:
        setup.executescript(EDGE_SCHEMA)
    setup.close()
    plan = plan_schema(introspect(source), casts=EDGE_CASTS)
    (table,) = plan.tables
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(table.create_sql)
        for number, row in enumerate(EDGE_ROWS, start=1):
            names = ", ".join(["id", *map(quote, row)])
            conn.execute(
                f"INSERT INTO edges ({names}) VALUES ({', '.join([str(number), *row.values()])})"
            )
        converted = reload_into_second_schema(conn, plan.tables)
        assert_identical(conn, table)
    by_id = {
        row[0]: dict(zip((c.name for c in table.columns), row, strict=True))
        for row in converted["edges"]
    }
    assert by_id[1]["tse"] == -0.5 and by_id[1]["tsm"] == -1
    assert by_id[1]["n"] == "123456789012345678901234567890.123456"
    assert by_id[1]["by"] == b"\x00\xff\x00" and by_id[2]["by"] == b""
    assert by_id[1]["tx"] == "" and by_id[2]["tx"] is None and by_id[6]["tx"] == "NULL"
    assert by_id[1]["ts"] == "2024-01-01 10:00:00.000001"
    assert by_id[2]["ts"] == "1899-12-31 23:40:28"  # Amsterdam's local mean time, in UTC
    assert by_id[2]["tsm"] == 1_704_067_200_000.123
    assert by_id[3]["n"] == "6.20" and by_id[3]["p"] == 6.2
    assert by_id[2]["f"] == "NaN" and by_id[1]["f"] == -0.0


@pytest.mark.parametrize(
    ("pg_type", "value", "expected", "loads_as"),
    [
        ("bigint", 2**63 - 1, 2**63 - 1, "9223372036854775807"),
        ("double precision", -0.0, -0.0, "-0.0"),
        ("double precision", math.nan, "NaN", "NaN"),
        ("double precision", math.inf, math.inf, "Infinity"),
        ("real", 3.4028235e38, 3.4028234663852886e38, "3.4028234663852886e+38"),
        ("real", 0.1, 0.1, "0.1"),
        ("numeric", "123456789012345678901234567890", "123456789012345678901234567890", None),
        ("numeric", "9223372036854775807", 9223372036854775807, None),
        ("numeric", "6.25", 6.25, "6.25"),
        ("numeric", "6.20", "6.20", "6.20"),
        ("numeric", Decimal("0.1"), 0.1, "0.1"),
        ("numeric(12,2)", "6.00", 6, "6"),
        ("numeric(12,2)", "6.20", 6.2, "6.2"),
        ("numeric", "NaN", "NaN", "NaN"),
        ("numeric", "-Infinity", -math.inf, "-Infinity"),
        ("boolean", True, 1, "t"),
        ("boolean", False, 0, "f"),
        ("bytea", b"", b"", "\\\\x"),
        ("bytea", memoryview(b"\x00a\x00"), b"\x00a\x00", "\\\\x006100"),
        ("text", "", "", ""),
        ("text", "🚀\\", "🚀\\", "🚀\\\\"),
        ("json", '{"a":  1}', '{"a":  1}', '{"a":  1}'),
        (
            "uuid",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            None,
        ),
        ("text", None, None, "\\N"),
    ],
)
def test_value_comes_back_in_the_documented_form(
    pg_type: str, value: object, expected: SqliteOut, loads_as: str | None
) -> None:
    column = col(pg_type)
    result = to_sqlite(value, column)
    assert type(result) is type(expected)
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(result, float) and math.isnan(result)
    else:
        assert result == expected
    if isinstance(expected, float) and expected == 0:
        assert math.copysign(1, result) == math.copysign(1, expected)  # type: ignore[arg-type]
    assert forward(result, column) == (loads_as if loads_as is not None else str(value))


@pytest.mark.parametrize(
    ("pg_type", "source_format", "value", "expected"),
    [
        ("timestamptz", None, "2024-01-01T10:00:00+00:00", "2024-01-01 10:00:00"),
        ("timestamptz", None, "2024-01-01T12:00:00.5+02:00", "2024-01-01 10:00:00.500000"),
        ("timestamptz", None, "0001-01-01T00:00:00+00:00", "0001-01-01 00:00:00"),
        ("timestamp", None, "2024-02-29T23:59:59.000001", "2024-02-29 23:59:59.000001"),
        ("date", None, "2024-02-29", "2024-02-29"),
        ("time", None, "10:00:01.25", "10:00:01.250000"),
        ("time", None, "10:00:00", "10:00:00"),
        ("timestamptz", "epoch_s", "1970-01-01T00:00:00+00:00", 0),
        ("timestamptz", "epoch_s", "1969-12-31T23:59:59.999999+00:00", -0.000001),
        ("timestamptz", "epoch_s", "1900-01-01T00:00:00+00:00", -2_208_988_800),
        ("timestamptz", "epoch_ms", "1969-12-31T23:59:59.001+00:00", -999),
        ("timestamptz", "epoch_ms", "2025-11-20T10:00:00.000001+00:00", 1_763_632_800_000.001),
        ("date", "epoch_ms", "1960-01-01", -315_619_200_000),
        ("time", "epoch_s", "00:00:01.5", 1.5),
        ("timestamp", "iso8601", "2024-01-01T10:00:00", "2024-01-01 10:00:00"),
    ],
)
def test_temporal_value_comes_back_in_its_source_format(
    pg_type: str, source_format: str | None, value: str, expected: SqliteOut
) -> None:
    column = col(pg_type, source_format)
    result = to_sqlite(value, column)
    assert result == expected and type(result) is type(expected)
    # and the forward path loads exactly what PostgreSQL printed
    assert forward(result, column) == forward(value, col(pg_type))


@pytest.mark.parametrize(
    ("pg_type", "source_format", "value", "reason"),
    [
        ("timestamptz", None, "infinity", "infinity"),
        ("date", None, "-infinity", "-infinity"),
        ("date", None, "4713-01-01 BC", "BC"),
        ("timestamp", None, "12000-01-01T00:00:00", "past 9999"),
        ("time", None, "24:00:00", "24:00"),
        ("timestamptz", "epoch_s", "9999-12-31T23:59:59.999999+00:00", "microseconds"),
    ],
)
def test_value_the_forward_path_cannot_produce_is_refused_plainly(
    pg_type: str, source_format: str | None, value: str, reason: str
) -> None:
    with pytest.raises(Unrepresentable, match=reason):
        to_sqlite(value, col(pg_type, source_format))


def test_wrongly_read_value_is_a_type_error_naming_select_list() -> None:
    with pytest.raises(TypeError, match="select_list"):
        to_sqlite({"a": 1}, col("jsonb"))
    with pytest.raises(TypeError, match="select_list"):
        to_sqlite(1.5, col("bigint"))


def test_select_list_reads_lossy_types_as_text_and_quotes_names() -> None:
    table = PgTable(
        "t",
        "t",
        (
            PgColumn("Id", "bigint", True, None),
            PgColumn("select", "jsonb", False, None),
            PgColumn("a b", "numeric(12,2)", False, None),
            PgColumn("u", "uuid", False, None),
            PgColumn("at", "timestamptz", False, None),
            PgColumn("raw", "bytea", False, None),
        ),
        ("Id",),
        "",
    )
    assert select_list(table) == (
        '"Id", "select"::text AS "select", "a b"::text AS "a b", "u"::text AS "u", '
        'to_json("at") #>> \'{}\' AS "at", "raw"'
    )


def test_values_loaded_by_psycopg_defaults_give_the_same_answers_as_text() -> None:
    moment = datetime(2024, 1, 1, 12, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    assert to_sqlite(moment, col("timestamptz")) == "2024-01-01 10:00:00.000500"
    assert to_sqlite(moment, col("timestamptz", "epoch_ms")) == to_sqlite(
        "2024-01-01T10:00:00.0005+00:00", col("timestamptz", "epoch_ms")
    )
    assert to_sqlite(date(1969, 12, 31), col("date", "epoch_s")) == -86_400
    assert to_sqlite(time(1, 2, 3), col("time")) == "01:02:03"
    assert to_sqlite(Decimal("6.20"), col("numeric")) == "6.20"
    identifier = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert to_sqlite(identifier, col("uuid")) == str(identifier)
