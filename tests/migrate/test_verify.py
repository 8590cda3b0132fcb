"""Verify against a real PostgreSQL: canonical texts equal PostgreSQL's output, and row diffs.

The canonical tests load values through COPY exactly as the copy does, read them back with
``COPY … TO STDOUT`` under the verify session settings, and compare every field with
``canonical.sqlite_field`` (property-style: many generated values plus the corpus edge cases).
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.canonical import (
    SESSION_SETTINGS,
    _sqlite_normaliser,
    canonical_json,
    escape,
    float4_from_text,
    float4_text,
    float8_text,
    numeric_text,
    pg_field,
    sqlite_field,
    unescape,
)
from changeover.migrate.copy import MigrationError, copy_database
from changeover.migrate.schema import PgColumn, PgPlan, plan_schema
from changeover.migrate.sqlite import introspect
from changeover.migrate.values import RawText, SqliteValue, Unrepresentable, converter
from changeover.migrate.verify import (
    RUNS_TABLE,
    VerifyReport,
    last_verify,
    render,
    verify_database,
)
from migrate.corpus import make_app_db, make_weird_db

WEIRD_CASTS = {
    "events.created_at": "timestamptz from epoch_s",
    "events.updated_at": "timestamptz from epoch_ms",
}

# --- canonical texts against PostgreSQL's own output ---------------------------------------------


def _session(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    for name, value in SESSION_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def _printed(pg_url: str, pg_type: str, texts: Sequence[str]) -> list[str]:
    """Load COPY input ``texts`` into a ``pg_type`` column; the fields COPY TO prints back."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _session(conn)
        conn.execute(f"CREATE TEMP TABLE t (i int, v {pg_type})")
        with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as copy:
            copy.write("".join(f"{i}\t{text}\n" for i, text in enumerate(texts)).encode())
        printed = []
        with conn.cursor() as cur, cur.copy("COPY (SELECT v FROM t ORDER BY i) TO STDOUT") as copy:
            for block in copy:
                printed.append(bytes(block).decode().removesuffix("\n"))
        return printed


def _assert_canonical(pg_url: str, pg_type: str, values: Sequence[SqliteValue], **kw: str) -> int:
    """Every value the converter accepts prints in PostgreSQL exactly as ``sqlite_field`` says."""
    column = PgColumn("v", pg_type, False, None, source_format=kw.get("source_format"))
    convert, canonical, pg_side = converter(column), sqlite_field(column), pg_field(column)
    accepted: list[tuple[SqliteValue, str]] = []
    refused: list[str] = []
    for value in values:
        try:
            text = convert(value)
        except Unrepresentable:
            continue
        try:
            canonical(value)
        except Unrepresentable:
            refused.append(text)  # the converter lets it through, PostgreSQL must refuse it
            continue
        accepted.append((value, text))
    for text in refused:
        with pytest.raises(psycopg.errors.DataError):
            _printed(pg_url, pg_type, [text])
    printed = _printed(pg_url, pg_type, [text for _, text in accepted])
    mismatches = []
    for (value, text), out in zip(accepted, printed, strict=True):
        expected = pg_side(out) if pg_side else out
        if canonical(value) != expected:
            mismatches.append((value, text, out, canonical(value)))
    assert not mismatches, mismatches[:10]
    return len(accepted)


def _random_doubles(rng: random.Random, count: int) -> list[float]:
    values = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind < 0.6:
            value = rng.uniform(-1e6, 1e6)
        elif kind < 0.8:
            value = float(f"{rng.randint(1, 999)}e{rng.randint(-30, 30)}")
        else:
            value = rng.random() * 10 ** rng.randint(-8, 24)
        if math.isfinite(value):
            values.append(value)
    return values


EDGE_FLOATS: list[SqliteValue] = [
    1e16,
    1e15,
    1e-5,
    1e-4,
    1e22,
    2.42e22,  # Python's repr takes a halfway bound; PostgreSQL prints 2.4199999999999998e+22
    -0.0,
    0.0,
    5e-324,
    1.7976931348623157e308,
    123456789012345.0,
    1234567890123456.0,
    0.1,
    100.0,
    float("inf"),
    float("-inf"),
    2**70,
    "NaN",
    "Infinity",
    "-inf",
    " 1.5e3 ",
    "007",
    ".5",
]


def test_double_precision_prints_as_postgresql_shortest_float_output(pg_url: str) -> None:
    values: list[SqliteValue] = [*EDGE_FLOATS, *_random_doubles(random.Random(1), 5000)]
    assert _assert_canonical(pg_url, "double precision", values) > 5000


def test_real_prints_as_postgresql_float4_output(pg_url: str) -> None:
    rng = random.Random(2)
    singles = [
        struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0] for _ in range(3000)
    ]
    edge: list[SqliteValue] = [
        "3.4028235e38",
        "1e-40",
        "1.4e-45",
        "16777217",
        "123456.7",
        8300000000.0,
        1e6,
        1e5,
    ]
    values: list[SqliteValue] = [
        *edge,
        *EDGE_FLOATS,
        *(v for v in singles if math.isfinite(v)),
        *_random_doubles(rng, 2000),
    ]
    assert _assert_canonical(pg_url, "real", values) > 4000


def _random_number_texts(rng: random.Random, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        digits = str(rng.randint(0, 10 ** rng.randint(1, 20)))
        point = rng.randint(1, len(digits))
        text = digits[:point] + ("." + digits[point:] if rng.random() < 0.7 else "")
        if rng.random() < 0.3:
            text += f"e{rng.randint(-12, 12)}"
        texts.append(rng.choice(["", "-", "+"]) + text)
    return texts


def test_numeric_prints_with_postgresql_scale_rules(pg_url: str) -> None:
    rng = random.Random(3)
    values: list[SqliteValue] = [
        "1.50",
        "+1.50",
        ".5",
        "007",
        "1E3",
        "1.5e-3",
        "-0",
        "-0.00",
        "NaN",
        "Infinity",
        1.25,
        1e16,
        1e-5,
        -0.0,
        10**30,
        *_random_number_texts(rng, 2000),
        *_random_doubles(rng, 500),
    ]
    assert _assert_canonical(pg_url, "numeric", values) > 2000
    constrained: list[SqliteValue] = [
        "0.005",
        "0.015",
        "-0.005",
        "1.005",
        "-0.001",
        "12.5",
        7,
        *(f"{rng.uniform(-1e9, 1e9):.{rng.randint(0, 6)}f}" for _ in range(1000)),
    ]
    assert _assert_canonical(pg_url, "numeric(12,2)", constrained) > 1000
    assert _assert_canonical(pg_url, "numeric(6)", ["2.5", "-2.5", "123456", "0.4"]) == 4


def test_dates_and_times_print_as_postgresql_iso_output(pg_url: str) -> None:
    rng = random.Random(4)
    texts: list[SqliteValue] = [
        "2026-11-20T10:00:00Z",
        "2026-11-20 10:00:00",
        "2026-11-20T10:00:00.123+02:00",
        "2026-11-20T10:00:00.000100-05:30",
        "0001-01-01 00:00:00",
        "9999-12-31T23:59:59.999999",
        "2026-11-20",
        *(
            f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            f".{rng.randint(0, 999999):06d}{rng.choice(['', 'Z', '+01:00', '-09:30'])}"
            for _ in range(1000)
        ),
    ]
    for pg_type in ("timestamptz", "timestamp", "date"):
        assert _assert_canonical(pg_url, pg_type, texts) > 900
    epochs: list[SqliteValue] = [0, 1_763_632_800, 1_763_632_800.5, -86400.25, 2**31, "1.000001"]
    epochs += [rng.uniform(-1e10, 1e10) for _ in range(500)]
    assert _assert_canonical(pg_url, "timestamptz", epochs, source_format="epoch_s") > 500
    millis: list[SqliteValue] = [1_763_632_800_000, 1_763_632_800_123, -1, 0]
    assert _assert_canonical(pg_url, "timestamptz", millis, source_format="epoch_ms") == 4
    times: list[SqliteValue] = ["10:00", "10:00:00.500000", "23:59:59.999999", "10:00:00+02:00"]
    times += [
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:01.{rng.randint(0, 999)}"
        for _ in range(200)
    ]
    assert _assert_canonical(pg_url, "time", times) > 200


def test_text_like_types_print_as_postgresql_escapes_them(pg_url: str) -> None:
    rng = random.Random(5)
    alphabet = "aZ\\\t\n\r\b\f\v\x01\x7f é☕🚀\"'{}"
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(500)]
    texts: list[SqliteValue] = [RawText(s.encode()) for s in strings] + ["", "plain", 42, 0.5]
    for pg_type in ("text", "varchar(20)"):
        assert _assert_canonical(pg_url, pg_type, texts) > 450
    uuids: list[SqliteValue] = [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
    ]
    assert _assert_canonical(pg_url, "uuid", uuids) == 3
    blobs: list[SqliteValue] = [b"", b"\x00\x01\xff", bytes(range(256)), RawText(b"text"), 12]
    assert _assert_canonical(pg_url, "bytea", blobs) == 5
    flags: list[SqliteValue] = [0, 1, "true", "FALSE", "t", "yes", 1.0]
    assert _assert_canonical(pg_url, "boolean", flags) == 7
    integers: list[SqliteValue] = [0, -1, 2**63 - 1, -(2**63), "  12 ", 5.0]
    assert _assert_canonical(pg_url, "bigint", integers) == 6


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randint(0, 6 if depth < 3 else 3)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -5, 10**20, 1.5, 1e-7, 2.5e30, 100.0])
    if kind == 2:
        return rng.choice(["", "é", "a\nb", 'q"uote', "back\\slash", "☕"])
    if kind == 3:
        return rng.randint(-1000, 1000)
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice("abcdeABé"): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_json_is_verbatim_and_jsonb_compares_by_value(pg_url: str) -> None:
    rng = random.Random(6)
    documents: list[SqliteValue] = [
        '{"b": 1, "a": [1.0, 1e2, 1E+2, "\\u00e9"], "a": 2}',
        '{"x":1,   "y" : [ ] }',
        "[1.50, -0, 0.0, 1e-3]",
        '"\\n\\t"',
        *(json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5) for _ in range(500)),
    ]
    assert _assert_canonical(pg_url, "json", documents) > 500
    assert _assert_canonical(pg_url, "jsonb", documents) > 500


def test_canonical_pure_rules() -> None:
    assert float8_text(1e16) == "1e+16"
    assert float8_text(1e-5) == "1e-05"
    assert float8_text(123456789012345.0) == "123456789012345"
    assert float8_text(-0.0) == "-0"
    assert float8_text(2.42e22) == "2.4199999999999998e+22"
    assert float4_text(float4_from_text("16777217")) == "1.6777216e+07"
    with pytest.raises(Unrepresentable, match="out of range"):
        float4_from_text("7e-46")
    assert numeric_text("1.5e-3", "numeric") == "0.0015"
    assert numeric_text("-0.001", "numeric(12,2)") == "0.00"
    assert numeric_text("0.005", "numeric(12,2)") == "0.01"  # half away from zero
    assert canonical_json('{"b": 1, "a": 1.0, "b": 2}') == '{"a": 1, "b": 2}'
    for text in ("a\\b", "\t\n\r\b\f\v", "plain", "\\N"):
        assert unescape(escape(text)) == text


# --- verify against a copied database ------------------------------------------------------------


def _copied_app(tmp_path: Path, pg_url: str, rows: int = 60) -> tuple[Path, PgPlan]:
    db = make_app_db(tmp_path / "app.db", rows=rows)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    return db, plan


def test_copied_app_corpus_verifies_equal_and_records_the_run(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=80)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    assert last_verify(pg_url) is None
    report = verify_database(db, pg_url, plan)
    assert report.equal, render(report)
    assert report.mode == "full"
    assert report.table("order_items").source_rows == 160
    assert report.table("order_items").target_rows == 160
    assert all(t.method == "merge" for t in report.tables)
    run = last_verify(pg_url)
    assert run is not None and run.equal and run.mode == "full"
    assert run.summary["source_rows"] == sum(t.source_rows for t in report.tables)
    data = report.to_json()
    assert data["equal"] is True and len(data["tables"]) == 6


def test_verify_names_the_changed_deleted_and_inserted_rows_exactly(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=80)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = 'lost' WHERE id = 7")
        conn.execute("DELETE FROM order_items WHERE order_id = 5 AND line_no = 2")
        conn.execute("INSERT INTO users (email, name) VALUES ('new@example.com', 'New')")
        conn.execute("DELETE FROM audit_log WHERE _changeover_rowid = 17")
        conn.execute(
            "UPDATE sessions SET data = '{\"theme\":\"light\"}' WHERE token = 'tok00000003'"
        )
    report = verify_database(db, pg_url, plan)
    assert not report.equal
    orders = report.table("orders")
    assert (orders.missing, orders.extra, orders.different) == (0, 0, 1)
    (diff,) = orders.diffs
    assert diff.kind == "different" and diff.key == {"id": 7}
    (column,) = diff.columns
    assert (column.column, column.source, column.target) == ("status", "shipped", "lost")
    items = report.table("order_items")
    assert [(d.kind, d.key) for d in items.diffs] == [("missing", {"order_id": 5, "line_no": 2})]
    assert items.source_rows == items.target_rows + 1
    users = report.table("users")
    assert [(d.kind, d.key) for d in users.diffs] == [("extra", {"id": 81})]
    audit = report.table("audit_log")
    assert [(d.kind, d.key) for d in audit.diffs] == [("missing", {"_changeover_rowid": 17})]
    (session,) = report.table("sessions").diffs
    assert session.key == {"token": "tok00000003"}
    assert session.columns[0].source == '{"theme": "dark"}'
    assert session.columns[0].target == '{"theme":"light"}'
    assert report.table("payments").equal
    text = render(report)
    assert "status: SQLite 'shipped' | PostgreSQL 'lost'" in text
    assert '{"order_id": 5, "line_no": 2}' in text
    run = last_verify(pg_url)
    assert run is not None and not run.equal


def test_diff_details_are_capped_but_counts_stay_exact(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = name || '!' WHERE id <= 30")
    report = verify_database(db, pg_url, plan, tables=["users"], max_diffs=5)
    users = report.table("users")
    assert users.different == 30 and len(users.diffs) == 5
    assert [t.table for t in report.tables] == ["users"]


def test_weird_corpus_verifies_equal_with_quarantined_rows_named(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(introspect(db), WEIRD_CASTS)
    summary = copy_database(db, pg_url, plan, on_error="quarantine", jobs=1)
    report = verify_database(db, pg_url, plan)
    assert report.equal, render(report)
    assert report.quarantined == summary.rejected > 0
    texts = report.table("texts")
    assert texts.quarantined == 3
    assert {json.dumps(q.key) for q in texts.quarantined_rows} == {
        '{"id": 2}',
        '{"id": 3}',
        '{"id": 6}',
    }
    assert any("not valid UTF-8" in q.reason for q in texts.quarantined_rows)
    assert "quarantined" in render(report)


def test_unrepresentable_sqlite_value_shows_as_a_difference_with_its_reason(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = CAST(x'66fe6f' AS TEXT) WHERE id = 3")
        conn.execute("UPDATE audit_log SET action = CAST(x'610062' AS TEXT) WHERE rowid = 4")
    conn.close()
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute("DELETE FROM audit_log WHERE _changeover_rowid = 4")
    report = verify_database(db, pg_url, plan, tables=["users", "audit_log"])
    (different,) = report.table("users").diffs
    assert (different.kind, different.key) == ("different", {"id": 3})
    (column,) = different.columns
    assert column.column == "name" and column.target == "User 2"
    assert "not valid UTF-8" in (column.reason or "")
    (missing,) = report.table("audit_log").diffs
    assert (missing.kind, missing.key) == ("missing", {"_changeover_rowid": 4})
    assert "NUL byte" in (missing.reason or "")


KEYED_SCHEMA = """
CREATE TABLE words (w TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b));
CREATE TABLE loose (v TEXT);
"""
WORDS = [
    "apple",
    "Apple",
    "APPLE",
    "zebra",
    "Zebra",
    "émile",
    "Émile",
    "ä",
    "z",
    "ß",
    "日本",
    "🚀",
    "a b",
    "",
]


def _keyed_db(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(KEYED_SCHEMA)
        conn.executemany("INSERT INTO words VALUES (?, ?)", [(w, i) for i, w in enumerate(WORDS)])
        conn.executemany(
            "INSERT INTO pairs VALUES (?, ?, ?)",
            [(w, b, f"{w}{b}") for w in WORDS for b in (2, 10, -1)],
        )
        conn.executemany("INSERT INTO loose VALUES (?)", [(w,) for w in WORDS * 3])
        conn.execute("DELETE FROM loose WHERE rowid IN (3, 7)")  # gaps in the rowid
    conn.close()
    return path


def test_text_keys_merge_in_sqlite_binary_order_with_non_ascii_and_mixed_case(
    tmp_path: Path, pg_url: str
) -> None:
    db = _keyed_db(tmp_path / "keyed.db")
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    report = verify_database(db, pg_url, plan)
    assert report.equal, render(report)
    # merged, not the hash-join fallback: the two orders agree byte for byte
    assert {t.table: t.method for t in report.tables} == {
        "loose": "merge",
        "pairs": "merge",
        "words": "merge",
    }
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE words SET n = 99 WHERE w = 'Émile'")
        conn.execute("DELETE FROM pairs WHERE a = 'ß' AND b = 10")
        conn.execute("INSERT INTO pairs VALUES ('Zebra', 3, 'new')")
        conn.execute("UPDATE loose SET v = 'changed' WHERE _changeover_rowid = 20")
    report = verify_database(db, pg_url, plan)
    assert [(d.kind, d.key) for d in report.table("words").diffs] == [("different", {"w": "Émile"})]
    assert sorted((d.kind, json.dumps(d.key)) for d in report.table("pairs").diffs) == [
        ("extra", '{"a": "Zebra", "b": 3}'),
        ("missing", '{"a": "\\u00df", "b": 10}'),
    ]
    assert [d.key for d in report.table("loose").diffs] == [{"_changeover_rowid": 20}]


def test_mixed_type_keys_fall_back_to_a_hash_join_and_say_so(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "mixed.db"
    with sqlite3.connect(db) as conn:
        # digits stored as TEXT, loaded as bigint by a cast: SQLite sorts '10' < '100' < '9'
        conn.executescript("CREATE TABLE m (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
        conn.executemany("INSERT INTO m VALUES (?, ?)", [("10", "x"), ("9", "y"), ("100", "z")])
    conn.close()
    plan = plan_schema(introspect(db), {"m.k": "bigint"})
    copy_database(db, pg_url, plan, jobs=1)
    report = verify_database(db, pg_url, plan)
    (table,) = report.tables
    assert table.method.startswith("hash join")
    assert table.equal and table.source_rows == 3
    assert "hash join" in render(report)


def test_sample_mode_checks_n_random_keys_per_table(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=100)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    report = verify_database(db, pg_url, plan, sample=10)
    assert report.mode == "sample" and report.equal
    assert all(t.source_rows == t.target_rows == 10 for t in report.tables)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'changed'")
    report = verify_database(db, pg_url, plan, sample=5, tables=["users"])
    assert report.table("users").different == 5
    run = last_verify(pg_url)
    assert run is not None and run.mode == "sample" and not run.equal


def test_keys_mode_compares_exactly_the_given_keys(tmp_path: Path, pg_url: str) -> None:
    db = _keyed_db(tmp_path / "keyed.db")
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE words SET n = -1 WHERE w = 'apple'")
        conn.execute("UPDATE words SET n = -1 WHERE w = 'zebra'")  # not asked about
        conn.execute("DELETE FROM pairs WHERE a = '日本' AND b = 2")
        conn.execute("INSERT INTO pairs VALUES ('new', 1, 'x')")
    report = verify_database(
        db,
        pg_url,
        plan,
        keys={
            # text keys as SQLite hands them out (RawText) or as str; absent from both: equal
            "words": [(RawText(b"apple"),), ("Apple",), ("absent",)],
            "pairs": [("日本", 2), ("new", 1), ("apple", 10)],
            "loose": [(1,), (3,)],  # rowid 3 was deleted on both sides
        },
    )
    assert report.mode == "keys"
    words = report.table("words")
    assert (words.source_rows, words.target_rows, words.different) == (2, 2, 1)
    assert words.diffs[0].key == {"w": "apple"}
    pairs = report.table("pairs")
    assert sorted((d.kind, json.dumps(d.key, ensure_ascii=False)) for d in pairs.diffs) == [
        ("extra", '{"a": "new", "b": 1}'),
        ("missing", '{"a": "日本", "b": 2}'),
    ]
    assert report.table("loose").equal
    assert {t.table for t in report.tables} == {"words", "pairs", "loose"}


def test_parallel_workers_give_the_same_answer(tmp_path: Path, pg_url: str) -> None:
    db, plan = _copied_app(tmp_path, pg_url, rows=40)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET total = total + 1 WHERE id = 3")
    serial = verify_database(db, pg_url, plan, jobs=1)
    parallel = verify_database(db, pg_url, plan, jobs=2)

    def timeless(report: VerifyReport) -> list[dict[str, object]]:
        return [{k: v for k, v in t.items() if k != "seconds"} for t in report.to_json()["tables"]]

    assert timeless(serial) == timeless(parallel)
    (diff,) = parallel.table("orders").diffs
    assert diff.columns[0].column == "total"
    assert (diff.columns[0].source, diff.columns[0].target) == ("2.50", "3.50")


def test_missing_tables_file_and_server_are_plain_errors(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    plan = plan_schema(introspect(db))
    with pytest.raises(
        MigrationError, match=r"missing in PostgreSQL schema 'public'.*migrate copy"
    ):
        verify_database(db, pg_url, plan)
    with pytest.raises(MigrationError, match="does not exist"):
        verify_database(tmp_path / "nope.db", pg_url, plan)
    with pytest.raises(MigrationError, match="cannot connect to the PostgreSQL target") as caught:
        verify_database(db, "postgresql://u:secret-pw@127.0.0.1:1/x?connect_timeout=2", plan)
    assert "secret-pw" not in str(caught.value)
    with pytest.raises(MigrationError, match="no such table"):
        verify_database(db, pg_url, plan, tables=["nope"])


def test_verify_runs_table_lives_in_the_target_schema(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, schema="scratch", jobs=1)
    report = verify_database(db, pg_url, plan, schema="scratch")
    assert report.equal
    assert last_verify(pg_url, "public") is None
    run = last_verify(pg_url, "scratch")
    assert run is not None and run.equal
    with psycopg.connect(pg_url) as conn:
        (count,) = conn.execute(f'SELECT count(*) FROM scratch."{RUNS_TABLE}"').fetchone()  # type: ignore[misc]
    assert count == 1


def _unhurried(column: PgColumn) -> Callable[[SqliteValue], str]:
    """The converter and the normaliser, with no fast path or memo."""
    convert, normalise = converter(column), _sqlite_normaliser(column)
    assert normalise is not None

    def field(value: SqliteValue) -> str:
        text = convert(value)
        return text if text == "\\N" else normalise(text)

    return field


def test_fast_paths_give_the_general_answer_for_every_stored_form() -> None:
    rng = random.Random(7)
    for pg_type in (
        "timestamptz",
        "timestamp",
        "numeric",
        "numeric(12,2)",
        "double precision",
        "real",
    ):
        column = PgColumn("v", pg_type, False, None)
        fast, slow = sqlite_field(column), _unhurried(column)
        values: list[SqliteValue] = [
            RawText(
                f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
                f"{rng.choice(' T')}{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:"
                f"{rng.randint(0, 61):02d}{rng.choice(['', 'Z', '.5', ' '])}".encode()
            )
            for _ in range(3000)
        ]
        values += [0.0, -0.0, 0.0, -0.0, 0, 1.25, 1, RawText(b"1.25"), RawText(b"-0"), 0.125, 0.125]
        for value in values:
            answers = []
            for field in (fast, fast, slow):  # twice: the second answer may come from the memo
                try:
                    answers.append(field(value))
                except Unrepresentable as exc:
                    answers.append(f"refused: {exc.reason}")
            assert answers[0] == answers[1] == answers[2], (pg_type, value, answers)
