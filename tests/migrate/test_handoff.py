"""The write handoff and back, against a real PostgreSQL (no proxy: writes paused by the test)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.apply import ForwardApplier
from changeover.migrate.capture import read_state
from changeover.migrate.copy import MigrationError, copy_database
from changeover.migrate.handoff import NoSwitch, read_handoff, run_handoff
from changeover.migrate.reverse import ReverseApplier
from changeover.migrate.schema import PgPlan, plan_schema
from changeover.migrate.sqlite import introspect
from changeover.migrate.verify import verify_database
from migrate.corpus import WEIRD_CASTS, make_app_db, make_weird_db


def synced(tmp_path: Path, pg_url: str) -> tuple[Path, PgPlan]:
    db = make_app_db(tmp_path / "app.db", rows=40)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    return db, plan


def sqlite_write(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def pg_write(pg_url: str, *statements: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_handoff_there_and_back_keeps_both_databases_equal(tmp_path: Path, pg_url: str) -> None:
    db, plan = synced(tmp_path, pg_url)
    sqlite_write(db, "UPDATE users SET name = 'legacy-write' WHERE id = 1")
    steps: list[str] = []
    result = run_handoff(db, pg_url, plan, NoSwitch(), on_step=lambda s, _t: steps.append(s))
    assert result.owner == "new" and result.pause_seconds < 5
    assert "drain changelog" in steps and "verify changed keys" in steps
    assert read_handoff(pg_url).owner == "new"
    assert not read_state(sqlite3.connect(db)).installed  # forward capture is off

    # New app writes: a user with an id from PostgreSQL's identity, past every legacy id.
    pg_write(
        pg_url,
        "INSERT INTO users (email, name) VALUES ('after@example.com', 'After')",
        "UPDATE orders SET status = 'refunded' WHERE id = 7",
        "DELETE FROM sessions WHERE token = 'tok00000009'",
    )
    with psycopg.connect(pg_url) as conn:
        new_id = conn.execute("SELECT id FROM users WHERE email = 'after@example.com'").fetchone()
    assert new_id is not None and new_id[0] == 41  # past the 40 legacy ids: identities reset
    with ReverseApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    assert verify_database(db, pg_url, plan).equal

    back = run_handoff(db, pg_url, plan, NoSwitch(), to="legacy")
    # The three keys written on new were verified before the pause; none changed since.
    assert back.owner == "legacy" and back.verified_keys == 0
    assert read_handoff(pg_url).owner == "legacy"
    sqlite_write(db, "INSERT INTO users (email, name) VALUES ('again@example.com', 'Again')")
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    report = verify_database(db, pg_url, plan)
    assert report.equal, report.to_json()


def test_a_second_handoff_to_the_same_owner_is_refused(tmp_path: Path, pg_url: str) -> None:
    db, plan = synced(tmp_path, pg_url)
    run_handoff(db, pg_url, plan, NoSwitch())
    with pytest.raises(MigrationError, match="already belong to new"):
        run_handoff(db, pg_url, plan, NoSwitch())


def test_a_difference_found_in_the_pause_keeps_writes_with_legacy(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = synced(tmp_path, pg_url)
    sqlite_write(db, "UPDATE users SET name = 'x' WHERE id = 5")
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    pg_write(pg_url, "UPDATE users SET name = 'tampered' WHERE id = 5")  # someone wrote to new
    with pytest.raises(MigrationError, match="found differences"):
        run_handoff(db, pg_url, plan, NoSwitch())
    assert read_handoff(pg_url).owner == "legacy"
    assert read_state(sqlite3.connect(db)).installed  # capture still on: nothing changed


def test_weird_corpus_goes_to_postgres_and_back_with_verify_equal(
    tmp_path: Path, pg_url: str
) -> None:
    """SQLite → PostgreSQL → (every row rewritten in PostgreSQL) → reverse sync → SQLite.

    Every value goes both ways; what cannot go is named: quarantined rows (the audit's errors)
    stay out of PostgreSQL and are reported as such, and epoch columns need their cast rules.
    """
    db = make_weird_db(tmp_path / "weird.db")
    plan = plan_schema(introspect(db), WEIRD_CASTS)
    summary = copy_database(db, pg_url, plan, on_error="quarantine", capture=True)
    run_handoff(db, pg_url, plan, NoSwitch())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for table in plan.tables:
            first = next(c.name for c in table.columns if c.name not in table.primary_key)
            conn.execute(f'UPDATE "{table.name}" SET "{first}" = "{first}"')
    with ReverseApplier(db, pg_url, plan) as applier:
        assert applier.catch_up() == summary.copied
    report = verify_database(db, pg_url, plan)
    assert report.equal, report.to_json()
    assert report.quarantined == summary.rejected


def test_a_key_still_changing_before_the_pause_is_rechecked_inside_it_not_refused(
    tmp_path: Path, pg_url: str
) -> None:
    db, plan = synced(tmp_path, pg_url)
    sqlite_write(db, "UPDATE users SET name = 'one' WHERE id = 6")

    def legacy_writes_again(step: str, _seconds: float) -> None:
        if step == "catch up before the pause":  # after the applied position, before verify
            sqlite_write(db, "UPDATE users SET name = 'two' WHERE id = 6")

    result = run_handoff(db, pg_url, plan, NoSwitch(), on_step=legacy_writes_again)
    assert result.owner == "new"
    assert any("re-verified inside" in w for w in result.warnings)
    assert result.verified_keys >= 1  # re-verified inside the pause, after the drain
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 6").fetchone() == ("two",)
