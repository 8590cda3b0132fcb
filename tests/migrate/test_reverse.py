"""Reverse sync against a real PostgreSQL: PostgreSQL triggers → changelog → the SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.copy import MigrationError, copy_database
from changeover.migrate.reverse import (
    ReverseApplier,
    install_reverse_capture,
    remove_reverse_capture,
    set_reverse_position,
)
from changeover.migrate.schema import PgPlan, plan_schema
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db


def reversed_db(tmp_path: Path, pg_url: str) -> tuple[Path, PgPlan]:
    db = make_app_db(tmp_path / "app.db", rows=30)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with psycopg.connect(pg_url) as conn:
        position = install_reverse_capture(conn, plan, "public")
    set_reverse_position(db, position)
    return db, plan


def pg(pg_url: str, *statements: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def one(db: Path, sql: str) -> object:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def test_postgres_writes_reach_the_sqlite_file(tmp_path: Path, pg_url: str) -> None:
    db, plan = reversed_db(tmp_path, pg_url)
    pg(
        pg_url,
        "INSERT INTO users (email, name, is_admin) VALUES ('pg@example.com', 'From PG', true)",
        "UPDATE users SET name = 'Changed' WHERE id = 3",
        "DELETE FROM sessions WHERE token = 'tok00000002'",
        "UPDATE sessions SET token = 'tokPG' WHERE token = 'tok00000005'",
        "UPDATE order_items SET quantity = 42 WHERE order_id = 2 AND line_no = 1",
        "UPDATE payments SET paid_at = '2026-11-27 08:30:00.25+00' WHERE id = 1",
        "INSERT INTO audit_log (actor_id, action) VALUES (9, 'pg-write')",
        "DELETE FROM audit_log WHERE _changeover_rowid = 2",
    )
    with ReverseApplier(db, pg_url, plan) as applier:
        assert applier.lag().rows == 9
        assert applier.catch_up() == 9
        assert applier.lag().rows == 0
    assert one(db, "SELECT name || '/' || is_admin FROM users WHERE email = 'pg@example.com'") == (
        "From PG/1"
    )
    assert one(db, "SELECT name FROM users WHERE id = 3") == "Changed"
    assert (
        one(db, "SELECT count(*) FROM sessions WHERE token IN ('tok00000002', 'tok00000005')") == 0
    )
    assert one(db, "SELECT user_id FROM sessions WHERE token = 'tokPG'") == 6
    assert one(db, "SELECT quantity FROM order_items WHERE order_id = 2 AND line_no = 1") == 42
    assert one(db, "SELECT paid_at FROM payments WHERE id = 1") == "2026-11-27 08:30:00.250000"
    assert one(db, "SELECT count(*) FROM audit_log WHERE rowid = 2") == 0
    assert one(db, "SELECT actor_id FROM audit_log WHERE action = 'pg-write'") == 9


def test_a_transaction_committing_late_is_not_skipped(tmp_path: Path, pg_url: str) -> None:
    db, plan = reversed_db(tmp_path, pg_url)
    slow = psycopg.connect(pg_url)
    try:
        slow.execute("UPDATE users SET name = 'slow' WHERE id = 1")  # takes its xid first
        pg(pg_url, "UPDATE users SET name = 'fast' WHERE id = 2")  # commits first
        with ReverseApplier(db, pg_url, plan) as applier:
            applier.catch_up()
            slow.commit()
            applier.catch_up()
    finally:
        slow.close()
    assert one(db, "SELECT name FROM users WHERE id = 1") == "slow"
    assert one(db, "SELECT name FROM users WHERE id = 2") == "fast"


def test_removing_reverse_capture_stops_recording(tmp_path: Path, pg_url: str) -> None:
    db, plan = reversed_db(tmp_path, pg_url)
    with psycopg.connect(pg_url) as conn:
        remove_reverse_capture(conn, plan, "public")
    pg(pg_url, "UPDATE users SET name = 'unseen' WHERE id = 1")
    with ReverseApplier(db, pg_url, plan) as applier:
        assert applier.catch_up() == 0
    assert one(db, "SELECT name FROM users WHERE id = 1") == "User 0"


def test_reverse_sync_before_the_handoff_says_so(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    plan = plan_schema(introspect(db))
    with pytest.raises(MigrationError, match="handoff"):
        ReverseApplier(db, pg_url, plan)
