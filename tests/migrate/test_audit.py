"""The type audit finds each dynamic-typing case of the weird corpus; the app corpus is clean."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from changeover.migrate.audit import AuditFinding, audit, checks_for, render_findings
from changeover.migrate.schema import PgColumn, plan_schema
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db, make_weird_db


@pytest.fixture(scope="module")
def weird_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weird_db(tmp_path_factory.mktemp("weird") / "weird.db")


@pytest.fixture(scope="module")
def weird(weird_path: Path) -> dict[tuple[str, str, str], AuditFinding]:
    return {(f.table, f.column, f.kind): f for f in audit(weird_path)}


@pytest.mark.parametrize(
    ("table", "column", "kind", "count", "example", "severity"),
    [
        ("numbers", "qty", "text_in_integer", 2, (2,), "error"),
        ("numbers", "big", "integer_beyond_64_bits", 2, (4,), "error"),
        ("numbers", "ratio", "real_infinity", 2, (6,), "warning"),
        ("numbers", "ratio", "text_in_number", 1, (9,), "error"),  # 'NaN' kept as text
        ("texts", "body", "invalid_utf8", 1, (2,), "error"),
        ("texts", "body", "nul_in_text", 1, (3,), "error"),
        ("texts", "body", "blob_in_non_blob", 1, (6,), "error"),
        ("texts", "body", "empty_string", 1, (4,), "info"),
        ("events", "happened_at", "date_iso_text", 2, (1,), "info"),
        ("events", "happened_at", "epoch_seconds", 1, (3,), "error"),
        ("events", "happened_at", "epoch_milliseconds", 1, (4,), "error"),
        ("events", "created_at", "epoch_seconds", 4, (1,), "info"),
        ("events", "updated_at", "epoch_milliseconds", 4, (1,), "info"),
        ("flags", "active", "bool_as_int", 2, (1,), "info"),
        ("flags", "active", "bool_as_text", 2, (3,), "warning"),
        ("Order", "user name", "empty_string", 1, (2,), "info"),
    ],
)
def test_weird_corpus_case_is_found(
    weird: dict[tuple[str, str, str], AuditFinding],
    table: str,
    column: str,
    kind: str,
    count: int,
    example: tuple[object, ...],
    severity: str,
) -> None:
    finding = weird[(table, column, kind)]
    assert finding.count == count
    assert finding.examples[0] == example
    assert finding.severity == severity


def test_nan_real_is_stored_as_null_by_sqlite(weird_path: Path) -> None:
    # Documents SQLite's behaviour the audit relies on: a REAL NaN cannot be stored.
    with sqlite3.connect(weird_path) as conn:
        assert conn.execute("SELECT typeof(ratio) FROM numbers WHERE id = 8").fetchone() == (
            "null",
        )
    conn.close()


def test_clean_columns_have_no_findings(weird: dict[tuple[str, str, str], AuditFinding]) -> None:
    flagged = {(t, c) for t, c, _k in weird}
    assert ("blobs", "data") not in flagged  # NUL bytes and 10 MB in a BLOB column are fine
    assert ("texts", "note") in flagged  # only its empty string
    assert not any(k[1] == "note" and k[2] != "empty_string" for k in weird)
    assert ("numbers", "id") not in flagged


def test_suggestions_are_cast_rules(weird: dict[tuple[str, str, str], AuditFinding]) -> None:
    finding = weird[("events", "happened_at", "epoch_milliseconds")]
    assert finding.suggestion == "cast: {events.happened_at: timestamptz from epoch_ms}"
    assert weird[("numbers", "big", "integer_beyond_64_bits")].suggestion == (
        "cast: {numbers.big: numeric}"
    )


def test_empty_string_finding_counts_nulls_too(
    weird: dict[tuple[str, str, str], AuditFinding],
) -> None:
    suggestion = weird[("texts", "body", "empty_string")].suggestion
    assert suggestion is not None and suggestion.startswith("1 NULL besides")


def test_cast_rule_turns_epoch_error_into_info(weird_path: Path) -> None:
    schema = introspect(weird_path)
    plan = plan_schema(schema, {"events.happened_at": "timestamptz from epoch_ms"})
    found = {(f.column, f.kind): f for f in audit(weird_path, schema, plan) if f.table == "events"}
    assert found[("happened_at", "epoch_milliseconds")].severity == "info"
    assert found[("happened_at", "epoch_seconds")].severity == "error"


def test_app_corpus_has_nothing_alarming(tmp_path: Path) -> None:
    findings = audit(make_app_db(tmp_path / "app.db", rows=30))
    assert findings  # ISO text dates and 0/1 booleans are reported as info
    assert [f for f in findings if f.severity != "info"] == []


def test_examples_are_capped_at_five(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER, b INTEGER)")  # no key: examples are rowids
        conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(12)])
    conn.close()
    (finding,) = audit(path)
    assert (finding.kind, finding.count) == ("text_in_integer", 12)
    assert finding.examples == ((1,), (2,), (3,), (4,), (5,))


def test_not_boolean_values_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "flags.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE f (id INTEGER PRIMARY KEY, on_ BOOLEAN)")
        conn.executemany("INSERT INTO f VALUES (?, ?)", [(1, 2), (2, "maybe"), (3, 1)])
    conn.close()
    found = {f.kind: f for f in audit(path)}
    assert found["not_boolean"].count == 2
    assert found["bool_as_int"].count == 1


def test_invalid_json_is_found(tmp_path: Path) -> None:
    path = tmp_path / "json.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE j (id INTEGER PRIMARY KEY, doc JSON)")
        conn.executemany("INSERT INTO j VALUES (?, ?)", [(1, '{"a": 1}'), (2, "{oops")])
    conn.close()
    (finding,) = audit(path)
    assert (finding.kind, finding.examples) == ("invalid_json", ((2,),))


def test_integer_columns_named_like_dates_get_epoch_checks() -> None:
    kinds = {c.kind for c in checks_for("t", PgColumn("created_at", "bigint", False, None))}
    assert {"epoch_seconds", "epoch_milliseconds"} <= kinds
    kinds = {c.kind for c in checks_for("t", PgColumn("quantity", "bigint", False, None))}
    assert "epoch_seconds" not in kinds


def test_render_findings_lists_errors_first(weird_path: Path) -> None:
    text = render_findings(audit(weird_path))
    lines = text.splitlines()
    assert lines[0].startswith("error")
    assert lines[-1].startswith("info")
    assert "numbers.qty: text_in_integer × 2 (keys 2, 3)" in text


def test_orphan_foreign_keys_are_errors_with_example_keys(tmp_path: Path) -> None:
    path = make_app_db(tmp_path / "app.db", rows=10)
    with sqlite3.connect(path) as conn:  # foreign keys are off by default in SQLite
        conn.execute("INSERT INTO orders (id, user_id, status, total) VALUES (500, 999, 'new', 1)")
        conn.execute("INSERT INTO order_items VALUES (777, 1, 'SKU', 1, 1.0)")
    conn.close()
    found = {(f.table, f.kind): f for f in audit(path)}
    orphan = found[("orders", "orphan_foreign_key")]
    assert (orphan.column, orphan.count, orphan.examples) == ("user_id", 1, ((500,),))
    items = found[("order_items", "orphan_foreign_key")]
    assert items.examples == ((777, 1),)


def test_null_in_text_primary_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nullkey.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE k (code TEXT PRIMARY KEY, v INTEGER)")
        conn.executemany("INSERT INTO k VALUES (?, ?)", [("a", 1), (None, 2)])
    conn.close()
    (finding,) = audit(path)
    assert (finding.kind, finding.count, finding.severity) == ("null_in_primary_key", 1, "error")
