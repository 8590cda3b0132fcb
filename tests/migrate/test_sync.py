"""Forward sync against a real PostgreSQL: capture triggers in SQLite, the applier, lag."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.apply import ForwardApplier, start_position
from changeover.migrate.capture import (
    CHANGELOG,
    install_capture,
    remove_capture,
    remove_triggers,
)
from changeover.migrate.copy import MigrationError, UnrepresentableRow, copy_database
from changeover.migrate.schema import PgPlan, plan_schema
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db


def copied(tmp_path: Path, pg_url: str, rows: int = 50) -> tuple[Path, PgPlan]:
    db = make_app_db(tmp_path / "app.db", rows=rows)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    return db, plan


def write(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def pg_one(pg_url: str, sql: str) -> object:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def test_inserts_updates_deletes_and_key_changes_reach_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = copied(tmp_path, pg_url)
    write(
        db,
        "INSERT INTO users (email, name) VALUES ('new@example.com', 'New')",
        "UPDATE users SET name = 'Renamed' WHERE id = 2",
        "DELETE FROM sessions WHERE token = 'tok00000003'",
        "UPDATE order_items SET line_no = 9 WHERE order_id = 1 AND line_no = 2",
        "INSERT INTO audit_log (actor_id, action) VALUES (7, 'logout')",
        "DELETE FROM audit_log WHERE rowid = 1",
        "UPDATE sessions SET token = 'tokNEW' WHERE token = 'tok00000004'",
    )
    with ForwardApplier(db, pg_url, plan) as applier:
        assert applier.lag().rows == 9  # a key change writes the new and the old key
        assert applier.catch_up() == 9
        assert applier.lag().rows == 0
    assert pg_one(pg_url, "SELECT name FROM users WHERE email = 'new@example.com'") == "New"
    assert pg_one(pg_url, "SELECT name FROM users WHERE id = 2") == "Renamed"
    assert pg_one(pg_url, "SELECT count(*) FROM sessions WHERE token = 'tok00000003'") == 0
    assert (
        pg_one(
            pg_url,
            "SELECT string_agg(line_no::text, ',' ORDER BY line_no) FROM order_items "
            "WHERE order_id = 1",
        )
        == "1,9"
    )
    assert pg_one(pg_url, "SELECT count(*) FROM audit_log WHERE _changeover_rowid = 1") == 0
    assert pg_one(pg_url, "SELECT action FROM audit_log WHERE actor_id = 7 AND action = 'logout'")
    assert pg_one(pg_url, "SELECT count(*) FROM sessions WHERE token = 'tok00000004'") == 0
    assert pg_one(pg_url, "SELECT count(*) FROM sessions WHERE token = 'tokNEW'") == 1


def test_replaying_the_whole_changelog_changes_nothing(tmp_path: Path, pg_url: str) -> None:
    db, plan = copied(tmp_path, pg_url)
    write(
        db, "UPDATE users SET name = 'A' WHERE id = 1", "UPDATE users SET name = 'B' WHERE id = 1"
    )
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
        start_position(pg_url, "public", 0)
        assert applier.catch_up() == 2
    assert pg_one(pg_url, "SELECT name FROM users WHERE id = 1") == "B"


def test_a_parent_and_its_child_in_one_batch_apply_in_any_order(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = copied(tmp_path, pg_url)
    # payments before orders in plan order would break an immediate foreign key check.
    write(
        db,
        "INSERT INTO orders (id, user_id, total) VALUES (500, 1, 5)",
        "INSERT INTO order_items VALUES (500, 1, 'SKU', 1, 1.5)",
        "INSERT INTO payments (order_id, amount) VALUES (500, '5.00')",
    )
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    assert pg_one(pg_url, "SELECT count(*) FROM payments WHERE order_id = 500") == 1


def test_writes_during_the_copy_are_not_lost(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3000)
    plan = plan_schema(introspect(db))
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            i = 0
            while not stop.is_set() and i < 2000:
                i += 1
                conn.execute(
                    "INSERT INTO users (email, name) VALUES (?, ?)", (f"live{i}@x", f"L{i}")
                )
                conn.execute("UPDATE orders SET status = ? WHERE id = ?", (f"s{i}", i % 3000 + 1))
                written.append(i)
        finally:
            conn.close()

    install_capture(db, plan)  # the writer starts once capture exists, like a live app
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        copy_database(db, pg_url, plan, jobs=2, capture=True)
    finally:
        stop.set()
        thread.join()
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    conn = sqlite3.connect(db)
    users = conn.execute("SELECT count(*), max(id) FROM users").fetchone()
    statuses = dict(conn.execute("SELECT id, status FROM orders").fetchall())
    conn.close()
    assert written, "the writer never ran"
    assert pg_one(pg_url, "SELECT count(*) FROM users") == users[0]
    assert pg_one(pg_url, "SELECT max(id) FROM users") == users[1]
    with psycopg.connect(pg_url) as pg:
        assert dict(pg.execute("SELECT id, status FROM orders").fetchall()) == statuses


def test_an_unrepresentable_row_stops_the_applier_with_the_key(tmp_path: Path, pg_url: str) -> None:
    db, plan = copied(tmp_path, pg_url)
    write(db, "UPDATE orders SET total = 'lots' WHERE id = 3")
    with ForwardApplier(db, pg_url, plan) as applier:
        with pytest.raises(UnrepresentableRow) as caught:
            applier.catch_up()
        assert caught.value.key == {"id": 3}
        assert caught.value.column == "total"
        assert applier.lag().rows == 1  # nothing was marked applied


def test_quarantine_removes_the_stale_row_and_records_the_reason(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = copied(tmp_path, pg_url)
    write(db, "UPDATE payments SET amount = 'x' WHERE id = 4")
    with ForwardApplier(db, pg_url, plan, on_error="quarantine") as applier:
        batch = applier.apply_batch()
    assert batch.rejected == 1
    assert pg_one(pg_url, "SELECT count(*) FROM payments WHERE id = 4") == 0
    assert pg_one(pg_url, "SELECT key->>'id' FROM _changeover_rejects WHERE \"table\" = 'payments'")


def test_sync_without_a_captured_copy_says_what_to_do(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1)
    with pytest.raises(MigrationError, match="migrate copy"):
        ForwardApplier(db, pg_url, plan)


def test_lag_counts_rows_and_seconds_of_the_oldest_pending_entry(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = copied(tmp_path, pg_url)
    write(db, "UPDATE users SET name = 'x' WHERE id = 1")
    time.sleep(0.2)
    with ForwardApplier(db, pg_url, plan) as applier:
        lag = applier.lag()
        assert lag.rows == 1 and lag.seconds >= 0.15 and lag.head == lag.position + 1
        applier.catch_up()
        assert applier.lag().seconds == 0.0


def test_continuous_applier_keeps_lag_small_under_writes(tmp_path: Path, pg_url: str) -> None:
    db, plan = copied(tmp_path, pg_url)
    stop = threading.Event()
    lags: list[float] = []
    with ForwardApplier(db, pg_url, plan) as applier:
        thread = threading.Thread(target=applier.run, args=(stop,))
        thread.start()
        try:
            conn = sqlite3.connect(db, isolation_level=None)
            deadline = time.monotonic() + 1.5
            i = 0
            while time.monotonic() < deadline:
                i += 1
                conn.execute("UPDATE users SET name = ? WHERE id = ?", (f"n{i}", i % 50 + 1))
                time.sleep(0.002)
            conn.close()
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
        lags.append(applier.lag().seconds)
    assert lags == [0.0]
    assert pg_one(pg_url, f"SELECT name FROM users WHERE id = {i % 50 + 1}") == f"n{i}"


def test_unsync_removes_everything_changeover_added_to_the_sqlite_file(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    before = sqlite3.connect(db)
    schema_before = before.execute("SELECT type, name FROM sqlite_master ORDER BY 1, 2").fetchall()
    mode_before = before.execute("PRAGMA journal_mode").fetchone()
    before.close()
    plan = plan_schema(introspect(db))
    state = install_capture(db, plan)
    assert state.installed and state.key_width == 2
    assert install_capture(db, plan).installed  # idempotent
    removed = remove_capture(db)
    assert any(CHANGELOG in r for r in removed)
    after = sqlite3.connect(db)
    assert after.execute("SELECT type, name FROM sqlite_master ORDER BY 1, 2").fetchall() == (
        schema_before
    )
    assert after.execute("PRAGMA journal_mode").fetchone() == mode_before
    after.close()


def test_removing_only_the_triggers_stops_capture_but_keeps_positions(tmp_path: Path) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    plan = plan_schema(introspect(db))
    install_capture(db, plan)
    write(db, "UPDATE users SET name = 'x' WHERE id = 1")
    assert remove_triggers(db) == 3 * len(plan.tables)
    write(db, "UPDATE users SET name = 'y' WHERE id = 1")
    conn = sqlite3.connect(db)
    assert conn.execute(f"SELECT count(*) FROM {CHANGELOG}").fetchone() == (1,)
    conn.close()


def test_incremental_verify_checks_only_changed_keys_and_finds_a_difference(
    tmp_path: Path, pg_url: str
) -> None:
    from changeover.migrate.incremental import verify_changed

    db, plan = copied(tmp_path, pg_url)
    assert verify_changed(db, pg_url, plan) == (0, None)
    write(
        db,
        "UPDATE users SET name = 'a' WHERE id = 1",
        "UPDATE orders SET status = 'x' WHERE id = 2",
    )
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    count, report = verify_changed(db, pg_url, plan)
    assert count == 2 and report is not None and report.equal
    assert verify_changed(db, pg_url, plan) == (0, None)  # verified moved forward
    write(db, "UPDATE users SET name = 'b' WHERE id = 3")
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'drifted' WHERE id = 3")
    count, report = verify_changed(db, pg_url, plan)
    assert count == 1 and report is not None and not report.equal
    assert report.table("users").different == 1
