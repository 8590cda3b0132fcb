"""SyncLagSource against a real PostgreSQL and a captured SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from changeover.metrics.base import Observation
from changeover.metrics.sync import SyncLagSource
from changeover.migrate.apply import ForwardApplier
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db


def read(path: Path, url: str) -> Observation:
    async def once() -> Observation:
        source = SyncLagSource(path, url)
        try:
            return await source.read("sync_lag", None)
        finally:
            await source.close()

    return asyncio.run(once())


def test_sync_lag_counts_waiting_changes_until_applied(tmp_path: Path, pg_url: str) -> None:
    db = make_app_db(tmp_path / "app.db", rows=10)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'waiting' WHERE id = 1")
        conn.execute("UPDATE users SET name = 'waiting' WHERE id = 2")
    waiting = read(db, pg_url)
    with ForwardApplier(db, pg_url, plan) as applier:
        applier.catch_up()
    applied = read(db, pg_url)
    assert waiting.events == 2 and waiting.value is not None and waiting.value >= 0
    assert waiting.unit is not None and waiting.unit.startswith("s (forward")
    assert applied.events == 0 and applied.value == 0


def test_without_capture_the_reason_says_how_to_start_it(tmp_path: Path, pg_url: str) -> None:
    make_app_db(tmp_path / "app.db", rows=3)
    obs = read(tmp_path / "app.db", pg_url)
    assert obs.unavailable is not None and "migrate copy --capture" in obs.unavailable


def test_a_missing_sqlite_file_is_unavailable(tmp_path: Path, pg_url: str) -> None:
    obs = read(tmp_path / "nowhere.db", pg_url)
    assert obs.unavailable is not None and obs.value is None


def test_data_corruption_and_loss_come_from_the_last_verify(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    from changeover.migrate.verify import verify_database

    db = make_app_db(tmp_path / "app.db", rows=10)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)

    async def both() -> tuple[Observation, Observation]:
        source = SyncLagSource(db, pg_url)
        try:
            return await source.read("data_corruption", None), await source.read("data_loss", None)
        finally:
            await source.close()

    corruption, loss = asyncio.run(both())
    assert corruption.unavailable and "no verify has run yet" in corruption.unavailable
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'tampered' WHERE id = 2")
        conn.execute("DELETE FROM audit_log WHERE _changeover_rowid = 3")
    assert not verify_database(db, pg_url, plan).equal
    corruption, loss = asyncio.run(both())
    assert corruption.value == 1.0 and loss.value == 1.0
