"""The copy's SQLite fast lane gives exactly what the Python converters give, or leaves the row.

Unit level: each value through the fast-lane SQL and through ``values.converter`` (the lane may
decline a value, never accept one Python refuses or write a different field). Corpus level: both
corpora copied with and without the lane into two schemas of a real PostgreSQL, compared table by
table as text (EXCEPT both ways), rejects included.
"""

from __future__ import annotations

import math
import random
import sqlite3
import struct
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.copy import REJECTS_TABLE, UnrepresentableRow, copy_database
from changeover.migrate.fastlane import ENV_SWITCH, clean, fast_lane
from changeover.migrate.schema import PgColumn, PgTable, plan_schema, quote
from changeover.migrate.sqlite import introspect
from changeover.migrate.values import RawText, Unrepresentable, converter
from migrate.corpus import make_app_db, make_weird_db

REFUSED = "refused"
# SQLite 3.42+ json_valid accepts JSON5: JSON columns then have no fast lane (fastlane docstring).
JSON_LANE = sqlite3.sqlite_version_info < (3, 42)
needs_json_lane = pytest.mark.skipif(not JSON_LANE, reason="no JSON fast lane on SQLite 3.42+")


def through_both(
    pg_type: str,
    values: list[object],
    source_format: str | None = None,
    notnull: bool = False,
    declared: str = "",
) -> list[tuple[object, str | None, str]]:
    """(stored value, fast-lane field or None when declined, Python field or REFUSED) per value.

    A tuple value is a SQL literal, for what Python cannot bind (2**70, text with bad bytes).
    """
    conn = sqlite3.connect(":memory:")
    conn.text_factory = RawText
    # No declared type keeps every value's storage class; a declared one adds its affinity.
    conn.execute(f"CREATE TABLE t (v {declared})")
    for value in values:
        if isinstance(value, tuple):
            conn.execute(f"INSERT INTO t VALUES ({value[0]})")
        else:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
    column = PgColumn("v", pg_type, notnull, None, source_format=source_format)
    lane = fast_lane(conn, PgTable("t", "t", (column,), ("v",), ""))
    assert lane is not None, f"no fast lane for {pg_type}"
    convert = converter(column)
    results = []
    for line, value in conn.execute(f"SELECT CAST({lane.line} AS BLOB), v FROM t ORDER BY rowid"):
        try:
            python = convert(value)
        except Unrepresentable:
            python = REFUSED
        fast = line.decode()[:-1] if line is not None and clean(line) else None
        results.append((value, fast, python))
    conn.close()
    return results


def assert_parity(results: list[tuple[object, str | None, str]], *, fast: int = 0) -> None:
    """Every field the lane wrote equals Python's; at least ``fast`` values took the lane."""
    for value, lane, python in results:
        if lane is not None:
            assert python != REFUSED, f"lane accepted {value!r}, which Python refuses"
            assert lane == python, f"{value!r}: lane {lane!r}, Python {python!r}"
    assert sum(lane is not None for _v, lane, _p in results) >= fast


TIMESTAMPS = [
    "2026-11-20 10:00:00",
    "2026-11-20T10:00:00",
    "2026-11-20T10:00:00Z",
    "2026-11-20T10:00:00+02:00",
    "2026-11-20T01:00:00+05:30",
    "2026-11-20 23:30:00-01:00",
    "2026-12-31T23:30:00-01:00",
    "2026-11-20T10:00:00+14:00",
    "2026-11-20T10:00:00+15:00",
    "2026-11-20T10:00:00-23:59",
    "2026-11-20T10:00:00.123",
    "2026-11-20T10:00:00.120Z",
    "2026-11-20T10:00:00.000Z",
    "2026-11-20T10:00:00.000000",
    "2026-11-20 10:00:00.123456-05:30",
    "2026-11-20 10:00:00.999999",
    "2026-11-20 10:00:00.1",
    "2026-11-20 10:00:00.12345678",
    "2026-11-20",
    "2024-02-29",
    "2024-02-29 12:00:00",
    "2023-02-29",
    "2023-02-29 12:00:00",
    "2026-04-31 00:00:00",
    "2026-02-30 10:00:00",
    "2026-13-01 10:00:00",
    "2026-00-10 10:00:00",
    "2026-11-00 10:00:00",
    "2026-11-20 24:00:00",
    "2026-11-20 23:60:00",
    "2026-11-20 23:59:60",
    "0000-01-01 00:00:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01 00:00:00",
    "9999-12-31T23:00:00-05:00",
    "9999-12-31 23:59:59",
    " 2026-11-20",
    "2026-11-20 10:00:00 ",
    "2026-11-20t10:00:00",
    "2026-11-20T10:00:00z",
    "2026-11-20T10:00",
    "20261120T100000",
    "2026-W47-5",
    "now",
    "",
    1_763_632_800,
    1_763_632_800.5,
    b"\x00\x01",
    ("CAST(x'323032362d31312d32302031303a30303a3030ff' AS TEXT)",),
]


@pytest.mark.parametrize("pg_type", ["timestamptz", "timestamp", "date"])
def test_timestamps_in_the_lane_match_python_and_bad_ones_never_pass(pg_type: str) -> None:
    for declared in ("", "DATETIME", "TEXT", "DATE"):
        assert_parity(through_both(pg_type, TIMESTAMPS, declared=declared), fast=15)
    assert_parity(through_both(pg_type, TIMESTAMPS, source_format="iso8601"), fast=15)


def test_random_timestamps_match_python() -> None:
    rng = random.Random(4)
    values: list[object] = []
    for _ in range(3000):
        text = (
            f"{rng.choice(['0002', '1969', '1999', '2000', '2024', '2026', '9998'])}-"
            f"{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}{rng.choice(' T')}"
            f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}"
        )
        text += rng.choice(
            ["", ".000", f".{rng.randint(0, 999):03d}", f".{rng.randint(0, 10**6 - 1):06d}"]
        )
        text += rng.choice(
            ["", "Z", f"{rng.choice('+-')}{rng.randint(0, 15):02d}:{rng.randint(0, 61):02d}"]
        )
        values.append(text)
    for pg_type in ("timestamptz", "timestamp", "date"):
        assert_parity(through_both(pg_type, values), fast=1000)


REALS: list[object] = [
    0.5,
    9.99,
    1.25,
    0.1 + 0.2,
    0.1 + 0.7,
    1e308,
    -1e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1e16,
    1e15,
    123456789012345680.0,
    1.0,
    0.0,
    -0.0,
    1.005,
    9999999999.995,
    99999999999.99,
    -99999999999.99,
    float("inf"),
    float("-inf"),
    (str(2**70),),  # SQLite stores it as REAL
    2**63 - 1,
    -(2**63),
    0,
    42,
    "1.5",
    "NaN",
    "12abc",
    b"\x01",
]


@pytest.mark.parametrize(
    "pg_type",
    ["double precision", "numeric", "numeric(12,2)", "numeric(5)", "text"],
)
def test_reals_and_integers_in_the_lane_match_python(pg_type: str) -> None:
    for declared in ("", "REAL", "NUMERIC", "DECIMAL(12,2)", "TEXT"):
        # TEXT affinity stores numbers as text, which the lane leaves to Python
        expected = 0 if declared == "TEXT" else (1 if pg_type == "text" else 4)
        assert_parity(through_both(pg_type, REALS, declared=declared), fast=expected)


def test_random_doubles_are_written_as_python_repr() -> None:
    rng = random.Random(7)
    values: list[object] = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(3000)]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 6)) for _ in range(3000)]
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    for pg_type in ("double precision", "numeric", "numeric(12,2)"):
        assert_parity(through_both(pg_type, values), fast=2000)


@pytest.mark.parametrize(
    ("pg_type", "fast"),
    [("bigint", 3), ("integer", 2), ("smallint", 2), ("boolean", 2)],
)
def test_integers_and_booleans_match_python(pg_type: str, fast: int) -> None:
    values: list[object] = [0, 1, -1, 2, 2**15, -(2**15) - 1, 2**31, 2**63 - 1, -(2**63)]
    values += [1.0, 0.0, 2.5, "7", " 7", "true", "t", "no", b"\x01", ("1e400",)]
    for declared in ("", "INTEGER", "BOOLEAN", "TEXT"):
        expected = 0 if declared == "TEXT" else fast
        assert_parity(through_both(pg_type, values, declared=declared), fast=expected)


TEXTS: list[object] = [
    "plain",
    "",
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash",
    "all \\ \t \n \r of them\\n",
    "\\N",
    "café ☕ 🚀",
    "Zoë\t",
    "a\x00b",
    ("CAST(x'66fe6f80' AS TEXT)",),
    ("CAST(x'610062' AS TEXT)",),
    ("CAST(x'f009' AS TEXT)",),  # a lead byte swallowing a tab
    ("CAST(x'eda080' AS TEXT)",),  # an encoded surrogate
    ("CAST(x'c3' AS TEXT)",),
    b"\xde\xad",
    b"",
    12345,
    -7,
    1.5,
    "x" * 300,
]


@pytest.mark.parametrize("pg_type", ["text", "varchar(5)", "varchar(300)", "bytea", "json"])
def test_text_values_match_python_and_bad_bytes_never_pass(pg_type: str) -> None:
    if pg_type == "json" and not JSON_LANE:
        pytest.skip("no JSON fast lane on SQLite 3.42+")
    fast = {"text": 12, "varchar(5)": 4, "varchar(300)": 12, "bytea": 2, "json": 2}[pg_type]
    for declared in ("", "TEXT", "VARCHAR(5)", "JSON", "BLOB"):
        assert_parity(through_both(pg_type, TEXTS, declared=declared), fast=fast)


JSONS: list[object] = [
    '{"theme": "dark"}',
    '{"a": [1, 2.5, -0, 1e5, true, false, null], "b": {"c": "\\u00e9\\n"}}',
    "[]",
    "  [1]\n",
    "\t{}\r\n",
    '"text"',
    "1",
    "-0.0",
    "1E400",
    "NaN",
    "Infinity",
    "-Infinity",
    "{a: 1}",
    "{'a': 1}",
    "[1,]",
    "[1 2]",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    '"tab\there"',
    '"\\x41"',
    '"\\ud800"',
    '"\ufeff"',
    "\ufeff[]",
    '{"a": 1} x',
    "",
    " ",
    "tRue",
    '{"a": 1, "a": 2}',
    "[" * 600 + "]" * 600,
    "[" * 1000 + "]" * 1000,
    "1" * 5000,
    '"' + "é" * 1000 + '"',
    12,
    1.5,
]


@needs_json_lane
def test_json_values_match_python_strict_parsing() -> None:
    for declared in ("", "JSON", "TEXT"):
        assert_parity(through_both("json", JSONS, declared=declared), fast=10)


def test_null_is_a_null_field_and_refused_in_a_not_null_column() -> None:
    assert_parity(through_both("text", [None, "x"]), fast=2)
    results = through_both("text", [None, "x"], notnull=True)
    assert results[0][1] is None and results[0][2] == REFUSED
    assert_parity(results, fast=1)


def test_unsupported_types_have_no_fast_lane() -> None:
    conn = sqlite3.connect(":memory:")
    for pg_type, fmt in (
        ("uuid", None),
        ("time", None),
        ("real", None),
        ("timestamptz", "epoch_s"),
    ):
        column = PgColumn("v", pg_type, False, None, source_format=fmt)
        assert fast_lane(conn, PgTable("t", "t", (column,), ("v",), "")) is None


# --- corpus level: the same copy with and without the lane, compared in PostgreSQL ----------


def copy_both_ways(
    db: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, casts: dict[str, str] | None = None
) -> list[str]:
    plan = plan_schema(introspect(db), casts=casts)
    copy_database(db, pg_url, plan, schema="fast", on_error="quarantine", jobs=2)
    monkeypatch.setenv(ENV_SWITCH, "0")
    copy_database(db, pg_url, plan, schema="plain", on_error="quarantine", jobs=1)
    monkeypatch.delenv(ENV_SWITCH)
    return [t.name for t in plan.tables]


def assert_schemas_identical(pg_url: str, tables: list[str]) -> None:
    with psycopg.connect(pg_url) as conn:
        for table in [*tables, REJECTS_TABLE]:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'fast' AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                )
                if table != REJECTS_TABLE or row[0] not in ("id", "rejected_at")
            ]
            assert names, table
            text = ", ".join(f"{quote(n)}::text" for n in names)
            counts = [
                conn.execute(f"SELECT count(*) FROM {schema}.{quote(table)}").fetchone()
                for schema in ("fast", "plain")
            ]
            assert counts[0] == counts[1], table
            for one, other in (("fast", "plain"), ("plain", "fast")):
                differing = conn.execute(
                    f"SELECT {text} FROM {one}.{quote(table)} "
                    f"EXCEPT ALL SELECT {text} FROM {other}.{quote(table)}"
                ).fetchall()
                assert differing == [], f"{table}: rows only in {one}: {differing[:3]}"


def test_app_corpus_loads_identically_with_and_without_the_lane(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=400)
    source = sqlite3.connect(db)
    for table in plan_schema(introspect(db)).tables:
        lane = fast_lane(source, table)
        if lane is None and not JSON_LANE and table.name == "sessions":
            continue
        assert lane is not None, table.name
        where = lane.slow_condition()
        left = source.execute(f"SELECT count(*) FROM {quote(table.source)} WHERE {where}")
        assert left.fetchone() == (0,), f"{table.name}: rows left to Python"
    source.close()
    tables = copy_both_ways(db, pg_url, monkeypatch)
    assert_schemas_identical(pg_url, tables)


def test_weird_corpus_loads_and_quarantines_identically_with_and_without_the_lane(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    casts = {
        "events.created_at": "timestamptz from epoch_s",
        "events.updated_at": "timestamptz from epoch_ms",
    }
    tables = copy_both_ways(db, pg_url, monkeypatch, casts=casts)
    assert_schemas_identical(pg_url, tables)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM fast.{REJECTS_TABLE}").fetchone() == (9,)


def spoil_app_db(db: Path) -> None:
    """Odd values among ordinary rows: some take the lane, some Python, some are refused."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'tab\tnew\nline\\slash\rcr' WHERE id = 2")
        conn.execute("UPDATE users SET email = CAST(x'66fe6f80' AS TEXT) WHERE id = 3")
        conn.execute("UPDATE users SET name = CAST(x'610062' AS TEXT) WHERE id = 4")
        conn.execute("UPDATE users SET created_at = '2026-11-20T10:00:00+02:00' WHERE id = 5")
        conn.execute("UPDATE users SET created_at = '2026-02-30 10:00:00' WHERE id = 6")
        conn.execute("UPDATE users SET created_at = ' 2026-11-20 ' WHERE id = 7")
        conn.execute("UPDATE users SET is_admin = 'yes' WHERE id = 8")
        conn.execute("UPDATE users SET deleted_at = 1763632800 WHERE id = 9")
        conn.execute("UPDATE order_items SET unit_price = 0.0 WHERE order_id = 3")
        conn.execute("UPDATE order_items SET unit_price = 1e308 WHERE order_id = 4")
        conn.execute("UPDATE order_items SET unit_price = 5e-324 WHERE order_id = 5")
        conn.execute("UPDATE order_items SET quantity = 2.0 WHERE order_id = 6")
        conn.execute("UPDATE orders SET total = 99999999999.99 WHERE id = 7")
        conn.execute("UPDATE orders SET total = 1e12 WHERE id = 8")
        conn.execute("UPDATE orders SET total = 1.005 WHERE id = 9")
        conn.execute("UPDATE payments SET amount = 'NaN' WHERE id = 10")
        conn.execute("UPDATE payments SET provider_ref = 'text ref' WHERE id = 11")
        conn.execute("UPDATE sessions SET data = '{\"a\":\t[1,\n2]}' WHERE token = 'tok00000001'")
        conn.execute("UPDATE sessions SET data = '{a: 1}' WHERE token = 'tok00000002'")
        conn.execute("UPDATE sessions SET data = 'NaN' WHERE token = 'tok00000003'")
        conn.execute("UPDATE audit_log SET detail = 'x\\y' WHERE rowid = 4")
    conn.close()


def test_mixed_rows_in_one_table_load_identically_with_and_without_the_lane(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=300)
    spoil_app_db(db)
    tables = copy_both_ways(db, pg_url, monkeypatch)
    assert_schemas_identical(pg_url, tables)
    with psycopg.connect(pg_url) as conn:
        rejected = conn.execute(
            f'SELECT "table", key::text, "column" FROM fast.{REJECTS_TABLE} ORDER BY 1, 2, 3'
        ).fetchall()
        assert ("users", '{"id": 3}', "email") in rejected
        assert ("users", '{"id": 4}', "name") in rejected
        assert ("users", '{"id": 6}', "created_at") in rejected
        assert conn.execute("SELECT name FROM fast.users WHERE id = 2").fetchone() == (
            "tab\tnew\nline\\slash\rcr",
        )


def test_stop_names_the_same_first_bad_row_with_and_without_the_lane(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET created_at = '2026-02-30 10:00:00' WHERE id = 9")
        conn.execute("UPDATE users SET email = CAST(x'66fe6f80' AS TEXT) WHERE id = 7")
    conn.close()
    plan = plan_schema(introspect(db))
    errors = []
    for schema, switch in (("fast", "1"), ("plain", "0")):
        monkeypatch.setenv(ENV_SWITCH, switch)
        with pytest.raises(UnrepresentableRow) as caught:
            copy_database(db, pg_url, plan, schema=schema, jobs=1)
        errors.append((caught.value.table, caught.value.key, caught.value.column))
    assert errors[0] == errors[1] == ("users", {"id": 7}, "email")
