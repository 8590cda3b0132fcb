"""migrate.sync_lag against a real PostgreSQL and a captured SQLite file, both directions."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import psycopg

from changeover.migrate.apply import ForwardApplier
from changeover.migrate.copy import copy_database
from changeover.migrate.handoff import NoSwitch, run_handoff
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.plan.systems import PostgresSystem
from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.migration import SyncLagParams
from migrate.corpus import make_app_db


def check(tmp_path: Path, url: str, **params: object) -> CheckResult:
    ctx = ProbeContext(
        systems={"db": PostgresSystem(url="${PG_URL}")}, environ={"PG_URL": url}, base_dir=tmp_path
    )
    return asyncio.run(
        run_probe("migrate.sync_lag", SyncLagParams(system="db", source="app.db", **params), ctx)
    )


def test_sync_lag_fails_while_changes_wait_and_passes_once_applied(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    assert check(tmp_path, pg_url).status is Status.PASS
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'waiting' WHERE id = 1")
    time.sleep(0.15)
    result = check(tmp_path, pg_url, max_lag="100ms")
    assert result.status is Status.FAIL
    assert "sync_lag_ms" in result.reason
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    result = check(tmp_path, pg_url, max_rows=0)
    assert result.status is Status.PASS and result.details["direction"] == "forward"


def test_sync_lag_follows_the_reverse_direction_after_the_handoff(
    tmp_path: Path, pg_url: str
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    run_handoff(db, pg_url, plan, NoSwitch())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'new' WHERE id = 2")
    result = check(tmp_path, pg_url, max_lag="10s", max_rows=0)
    assert result.status is Status.FAIL
    assert result.details["direction"] == "reverse"


def test_sync_lag_without_capture_says_how_to_start_it(tmp_path: Path, pg_url: str) -> None:
    make_app_db(tmp_path / "app.db", rows=3)
    result = check(tmp_path, pg_url)
    assert result.status is Status.FAIL
    assert "migrate copy --capture" in result.reason
