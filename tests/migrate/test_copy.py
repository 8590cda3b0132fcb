"""The bulk copy SQLite → PostgreSQL against a real PostgreSQL (one fresh database per test)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.copy import (
    REJECTS_TABLE,
    MigrationError,
    UnrepresentableRow,
    copy_database,
)
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db, make_weird_db

APP_TABLES = ("users", "sessions", "orders", "order_items", "payments", "audit_log")


def sqlite_count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def test_app_corpus_copies_completely_with_keys_constraints_and_identity(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=200)
    plan = plan_schema(introspect(db))
    seen: dict[str, int] = {}
    summary = copy_database(
        db, pg_url, plan, jobs=2, progress=lambda table, rows, size: seen.__setitem__(table, rows)
    )
    assert summary.failed_statements == ()
    assert summary.rejected == 0
    with psycopg.connect(pg_url) as conn:
        for table in APP_TABLES:
            expected = sqlite_count(db, table)
            assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (expected,)
            assert summary.table(table).copied == expected
            assert summary.table(table).source_rows == expected
            assert seen[table] == expected
        assert conn.execute("SELECT email, is_admin FROM users WHERE id = 1").fetchone() == (
            "user0@example.com",
            True,
        )
        assert conn.execute(
            "SELECT amount::text, provider_ref FROM payments WHERE id = 6"
        ).fetchone() == ("6.25", (5).to_bytes(8, "big"))
        assert conn.execute(
            "SELECT paid_at = '2026-11-20T10:00:00Z'::timestamptz FROM payments WHERE id = 1"
        ).fetchone() == (True,)
        assert conn.execute(
            "SELECT data->>'theme' FROM sessions WHERE token = 'tok00000003'"
        ).fetchone() == ("dark",)
        # audit_log has no declared key: the rowid became _changeover_rowid
        assert conn.execute(
            "SELECT min(_changeover_rowid), max(_changeover_rowid) FROM audit_log"
        ).fetchone() == (1, 200)
        # identity continues past max(id)
        new_id = conn.execute(
            "INSERT INTO users (email, name) VALUES ('new@example.com', 'New') RETURNING id"
        ).fetchone()
        assert new_id == (201,)
        fkeys = conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()
        assert fkeys == (4,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO orders (user_id) VALUES (99999)")


def test_weird_corpus_stops_at_first_unrepresentable_value_with_exact_row(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(introspect(db))
    with pytest.raises(UnrepresentableRow) as caught:
        copy_database(db, pg_url, plan, jobs=1)
    # Tables load in plan order ("Order", blobs, events, …): events row 3 is the first bad value.
    error = caught.value
    assert (error.table, error.key, error.column) == ("events", {"id": 3}, "happened_at")
    assert "epoch_s" in error.reason
    assert 'events: row {"id": 3}' in str(error)
    assert isinstance(error, MigrationError)
    with psycopg.connect(pg_url) as conn:
        # the failed table's transaction was rolled back: nothing half-loaded
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_parallel_stop_reports_a_real_unrepresentable_row_not_a_cancellation(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    with pytest.raises(UnrepresentableRow) as caught:
        copy_database(db, pg_url, plan_schema(introspect(db)), jobs=2)
    error = caught.value
    assert (error.table, error.column) in {
        ("events", "happened_at"),
        ("numbers", "qty"),
        ("numbers", "big"),
        ("texts", "body"),
    }


def test_copy_into_a_non_empty_target_is_refused_plainly(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan)
    with pytest.raises(MigrationError, match="already holds a finished copy"):
        copy_database(db, pg_url, plan)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (5,)
        conn.execute("DROP TABLE _changeover_copy")  # tables that are not changeover's copy
    with pytest.raises(MigrationError, match="already exists in the target schema"):
        copy_database(db, pg_url, plan)


def test_weird_corpus_quarantines_every_unrepresentable_value_and_reconciles(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(introspect(db))
    summary = copy_database(db, pg_url, plan, on_error="quarantine", jobs=2)
    for entry in summary.tables:
        assert entry.source_rows == sqlite_count(db, entry.table)
        assert entry.source_rows == entry.copied + entry.rejected
    with psycopg.connect(pg_url) as conn:
        rejects = {
            (table, json.dumps(key), column): (reason, raw)
            for table, key, column, reason, raw in conn.execute(
                f'SELECT "table", key, "column", reason, raw_value FROM {REJECTS_TABLE}'
            )
        }
        for entry in summary.tables:
            count = conn.execute(f'SELECT count(*) FROM "{entry.table}"').fetchone()
            assert count == (entry.copied,)
    expected = {
        ("numbers", '{"id": 2}', "qty"): "text 'ten' in a bigint column",
        ("numbers", '{"id": 3}', "qty"): "text '12abc' in a bigint column",
        ("numbers", '{"id": 4}', "big"): "beyond 64 bits",
        ("numbers", '{"id": 5}', "big"): "beyond 64 bits",
        ("texts", '{"id": 2}', "body"): "not valid UTF-8",
        ("texts", '{"id": 3}', "body"): "NUL byte in text (PostgreSQL text cannot hold 0x00)",
        ("texts", '{"id": 6}', "body"): "blob (4 bytes) in a text column",
        ("events", '{"id": 3}', "happened_at"): "epoch_s",
        ("events", '{"id": 4}', "happened_at"): "epoch_s",
        ("flags", '{"id": 3}', "active"): None,
        ("flags", '{"id": 4}', "active"): None,
    }
    # 'true'/'false' text in BOOLEAN columns converts: not rejected
    for key in list(expected):
        if expected[key] is None:
            assert key not in rejects
            del expected[key]
    assert set(rejects) == set(expected)
    for key, reason in expected.items():
        assert reason is not None and reason in rejects[key][0]
    # the raw value is kept exactly: invalid UTF-8 and the NUL byte as hex, not "fixed"
    assert rejects[("texts", '{"id": 2}', "body")][1] == "\\x66fe6f80"
    assert rejects[("texts", '{"id": 3}', "body")][1] == "\\x610062"
    assert summary.table("texts").rejected == 3
    assert summary.table("numbers").rejected == 4
    assert summary.rejected == len({(t, k) for t, k, _c in rejects})


def test_quarantined_parent_row_leaves_the_foreign_key_reported_not_skipped(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET email = CAST(x'610062' AS TEXT) WHERE id = 1")
    conn.close()
    summary = copy_database(db, pg_url, plan_schema(introspect(db)), on_error="quarantine")
    assert summary.table("users").rejected == 1
    assert summary.table("users").copied == 9
    failed = dict(summary.failed_statements)
    refused = [sql for sql in failed if 'FOREIGN KEY ("user_id") REFERENCES "users"' in sql]
    assert refused and all("violates foreign key constraint" in failed[sql] for sql in refused)
    with psycopg.connect(pg_url) as conn2:
        assert conn2.execute(
            f'SELECT key, "column", raw_value FROM {REJECTS_TABLE} WHERE "table" = %s', ("users",)
        ).fetchall() == [({"id": 1}, "email", "\\x610062")]


def test_weird_values_that_fit_load_exactly(tmp_path: Path, pg_url: str) -> None:
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(
        introspect(db),
        casts={
            "events.created_at": "timestamptz from epoch_s",
            "events.updated_at": "timestamptz from epoch_ms",
        },
    )
    copy_database(db, pg_url, plan, on_error="quarantine")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT body FROM texts WHERE id = 1").fetchone() == ("café ☕ 🚀",)
        assert conn.execute("SELECT body, note FROM texts WHERE id = 4").fetchone() == ("", "")
        assert conn.execute("SELECT body FROM texts WHERE id = 5").fetchone() == (None,)
        assert conn.execute("SELECT data FROM blobs WHERE id = 1").fetchone() == (b"\x00\x01\x00",)
        assert conn.execute("SELECT length(data) FROM blobs WHERE id = 2").fetchone() == (
            10 * 1024 * 1024,
        )
        assert conn.execute("SELECT data FROM blobs WHERE id = 3").fetchone() == (b"",)
        ratios = conn.execute(
            "SELECT ratio::text FROM numbers WHERE id IN (6, 7, 8, 9) ORDER BY id"
        ).fetchall()
        # SQLite itself stored the REAL NaN of row 8 as NULL; row 9 holds 'NaN' as text
        assert ratios == [("Infinity",), ("-Infinity",), (None,), ("NaN",)]
        assert conn.execute(
            "SELECT created_at = to_timestamp(1763632800), updated_at = to_timestamp(1763632800)"
            " FROM events WHERE id = 1"
        ).fetchone() == (True, True)
        assert conn.execute('SELECT "user name" FROM "Order" WHERE "Id" = 1').fetchone() == ("Zoë",)
        assert conn.execute("SELECT active FROM flags ORDER BY id").fetchall() == [
            (True,),
            (False,),
            (True,),
            (False,),
            (None,),
        ]


def test_copies_into_a_named_schema(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=20)
    summary = copy_database(db, pg_url, plan_schema(introspect(db)), schema="scratch")
    assert summary.copied > 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM scratch.users").fetchone() == (20,)
        assert conn.execute("SELECT to_regclass('public.users')").fetchone() == (None,)


def test_missing_sqlite_file_is_a_plain_error(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=1)
    plan = plan_schema(introspect(db))
    with pytest.raises(Exception, match="does not exist"):
        copy_database(tmp_path / "missing.db", pg_url, plan)
