"""The controller's migration and cache-warm actions against a real PostgreSQL, a real SQLite file,
real follower processes and real HTTP servers on loopback: copy (resumed), sync (one follower per
plan), verify, cache.warm."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from changeover.engine.runbook import Runbook
from changeover.migrate.copy import MigrationError, copy_database, count_rows
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.rollout import actions
from changeover.traffic.builtin import BuiltinRouter
from migrate.corpus import make_app_db
from support.pids import running, stop_pid
from support.warm_target import WarmTarget, warm_target

PLAN = """
version: 1
name: actions test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new:
    kind: app
    health: /healthz
    instances:
{instances}
  postgres: {{kind: postgres, url: "${{PG_URL}}"}}
migrate: {{source: app.db, target: postgres}}
stages:
  - id: canary
    title: Phase 10%
    phase:
      weight: 10
      bake: {{min: 1s, max: 20s}}
      decision: {{title: go on, mode: manual}}
    sections:
      - title: Deployment
        steps:
          - id: canary-copy
            title: Bulk-copy SQLite data into PostgreSQL
            action: {{migrate.copy: {{}}}}
"""


def write_plan(tmp_path: Path, instances: dict[str, str] | None = None) -> Path:
    urls = instances or {"go-1": "http://127.0.0.1:2"}
    listed = "\n".join(f"      - {{name: {n}, url: {u!r}}}" for n, u in urls.items())
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN.format(instances=listed), encoding="utf-8")
    return path


def act(runbook: Runbook, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``actions.run`` as the controller calls it, bounded in time."""

    async def go() -> dict[str, Any]:
        # None of these actions talks to the router; any call to this one would fail.
        router = BuiltinRouter("http://127.0.0.1:9", None)
        try:
            return await asyncio.wait_for(actions.run(name, params or {}, runbook, router), 150)
        finally:
            await router.close()

    return asyncio.run(go())


@pytest.fixture
def migrating(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runbook, Path]]:
    """A plan over a 30-user SQLite file and an empty database; any sync follower started under
    it is stopped (by its pid file) before the database is dropped."""
    db = make_app_db(tmp_path / "app.db", rows=30)
    monkeypatch.setenv("PG_URL", pg_url)  # the follower process inherits it, never on argv
    with Runbook.open(write_plan(tmp_path)) as runbook:
        try:
            yield runbook, db
        finally:
            pid_file = actions.state_dir(runbook) / "sync.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().strip())
                stop_pid(pid)
                assert not running(pid)


def pg_rows(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.timeout(120)
def test_copy_resumes_an_interrupted_copy_and_reports_rows_per_table(
    migrating: tuple[Runbook, Path], pg_url: str
) -> None:
    runbook, db = migrating
    pg_plan = plan_schema(introspect(db))

    def fail_in_orders(table: str, _rows: int, _size: int) -> None:
        if table == "orders":
            raise RuntimeError("the controller was killed here")

    with pytest.raises((RuntimeError, MigrationError)):
        copy_database(db, pg_url, pg_plan, jobs=1, capture=True, progress=fail_in_orders)
    committed = pg_rows(pg_url, "SELECT item FROM _changeover_copy WHERE item LIKE 'table:%'")
    assert ("table:orders",) not in committed and committed  # interrupted part way

    detail = act(runbook, "migrate.copy")
    assert detail["tables"] == count_rows(db, pg_plan)
    assert detail["copied"] == sum(detail["tables"].values()) and detail["seconds"] >= 0
    assert pg_rows(pg_url, "SELECT count(*) FROM orders") == [(30,)]

    again = act(runbook, "migrate.copy")  # restarted after the copy, before its outcome
    assert again["already"] is True and again["tables"] == detail["tables"]


@pytest.mark.timeout(120)
def test_copy_with_a_refused_constraint_fails_until_the_data_is_fixed(
    migrating: tuple[Runbook, Path], pg_url: str
) -> None:
    runbook, db = migrating
    with sqlite3.connect(db) as conn:  # SQLite does not enforce foreign keys by default
        conn.execute("INSERT INTO orders (id, user_id, total) VALUES (9999, 9999, 1)")
    refused = r"rows are copied but PostgreSQL refused 1 index or constraint statement\(s\)"
    with pytest.raises(actions.ActionFailed, match=refused + r".*FOREIGN KEY.*orders"):
        act(runbook, "migrate.copy")
    with pytest.raises(actions.ActionFailed, match=refused):  # a restart alone changes nothing
        act(runbook, "migrate.copy")

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM orders WHERE id = 9999")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id = 9999")
    assert act(runbook, "migrate.copy")["already"] is True
    assert pg_rows(
        pg_url,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'orders'::regclass",
    ) == [(1,)]


@pytest.mark.timeout(120)
def test_sync_starts_a_detached_follower_that_carries_sqlite_writes_into_postgres(
    migrating: tuple[Runbook, Path], pg_url: str
) -> None:
    runbook, db = migrating
    act(runbook, "migrate.copy")
    detail = act(runbook, "migrate.sync")
    assert detail["started"] is True and running(detail["pid"])
    assert Path(detail["log"]) == actions.state_dir(runbook) / "sync.log"
    assert detail["lag"]["rows"] <= actions.SYNC_CAUGHT_UP_ROWS

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'written after sync started' WHERE id = 4")
    deadline = time.monotonic() + 30
    while pg_rows(pg_url, "SELECT name FROM users WHERE id = 4") != [
        ("written after sync started",)
    ]:
        assert time.monotonic() < deadline, "the follower did not apply the write in 30s"
        assert running(detail["pid"]), Path(detail["log"]).read_text()
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_a_second_sync_finds_the_running_follower_and_starts_no_other(
    migrating: tuple[Runbook, Path],
) -> None:
    runbook, _ = migrating
    act(runbook, "migrate.copy")
    first = act(runbook, "migrate.sync")
    second = act(runbook, "migrate.sync")
    assert second["started"] is False and second["pid"] == first["pid"]
    argv = actions.sync_argv(runbook.loaded.path)
    followers = [
        p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[1:] == argv[1:]
    ]
    assert followers == [first["pid"]]


@pytest.mark.timeout(120)
def test_sync_before_the_copy_finished_refuses_and_starts_nothing(
    migrating: tuple[Runbook, Path], pg_url: str
) -> None:
    runbook, db = migrating

    def fail_in_orders(table: str, _rows: int, _size: int) -> None:
        if table == "orders":
            raise RuntimeError("interrupted")

    with pytest.raises((RuntimeError, MigrationError)):
        copy_database(
            db, pg_url, plan_schema(introspect(db)), jobs=1, capture=True, progress=fail_in_orders
        )
    with pytest.raises(actions.ActionFailed, match="copy with change capture has not finished"):
        act(runbook, "migrate.sync")
    assert not (actions.state_dir(runbook) / "sync.pid").exists()


@pytest.mark.timeout(120)
def test_a_follower_that_stops_on_a_bad_row_fails_the_step_with_its_own_reason(
    migrating: tuple[Runbook, Path],
) -> None:
    runbook, db = migrating
    act(runbook, "migrate.copy")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE orders SET total = 'lots' WHERE id = 3")  # fits no numeric
        conn.executemany(
            "UPDATE users SET name = ? WHERE id = ?", [(f"n{i}", i % 30 + 1) for i in range(80)]
        )
    # More than a handful of changes, older than a second: the lag cannot read small until the
    # follower applies them, which it never does.
    time.sleep(1.2)
    with pytest.raises(actions.ActionFailed, match=r"exited; the end of .*sync\.log: .*orders"):
        act(runbook, "migrate.sync")


@pytest.mark.timeout(120)
def test_verify_passes_after_sync_and_fails_when_a_row_changed_behind_its_back(
    migrating: tuple[Runbook, Path], pg_url: str
) -> None:
    runbook, _ = migrating
    act(runbook, "migrate.copy")
    act(runbook, "migrate.sync")
    summary = act(runbook, "migrate.verify")
    assert summary["equal"] is True and summary["source_rows"] == summary["target_rows"] > 0

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'tampered' WHERE id = 5")
    with pytest.raises(actions.ActionFailed, match=r"1 rows differ in 1 of \d+ tables \(users\)"):
        act(runbook, "migrate.verify")


@pytest.fixture
def two_instances(tmp_path: Path) -> Iterator[tuple[Runbook, WarmTarget, WarmTarget]]:
    with warm_target() as one, warm_target() as two:
        plan = write_plan(tmp_path, {"go-1": one.url, "go-2": two.url})
        with Runbook.open(plan) as runbook:
            yield runbook, one, two


ITEMS = "/api/v1/items?limit=100"


@pytest.mark.timeout(60)
def test_cache_warm_gets_every_path_on_every_instance_each_round(
    two_instances: tuple[Runbook, WarmTarget, WarmTarget],
) -> None:
    runbook, one, two = two_instances
    detail = act(runbook, "cache.warm", {"system": "new", "paths": [ITEMS, "/home"], "rounds": 2})
    assert one.seen == two.seen == [ITEMS, "/home", ITEMS, "/home"]
    assert detail["instances"] == ["go-1", "go-2"] and detail["requests"] == 8
    assert "note" not in detail


@pytest.mark.timeout(60)
def test_cache_warm_without_paths_warms_the_health_path_and_says_so(
    two_instances: tuple[Runbook, WarmTarget, WarmTarget],
) -> None:
    runbook, one, two = two_instances
    detail = act(runbook, "cache.warm", {"system": "new"})
    assert one.seen == two.seen == ["/healthz"]
    assert detail["note"] == "no paths given: warmed the health path /healthz only"


@pytest.mark.timeout(60)
def test_cache_warm_fails_naming_path_instance_and_status(
    two_instances: tuple[Runbook, WarmTarget, WarmTarget],
) -> None:
    runbook, _, two = two_instances
    two.statuses[ITEMS] = 500
    failed = r"GET /api/v1/items\?limit=100 on instance go-2 answered HTTP 500"
    with pytest.raises(actions.ActionFailed, match=failed):
        act(runbook, "cache.warm", {"system": "new", "paths": [ITEMS]})


@pytest.mark.timeout(60)
def test_cache_warm_refuses_paths_that_are_not_a_list_of_paths(
    two_instances: tuple[Runbook, WarmTarget, WarmTarget],
) -> None:
    runbook, one, _ = two_instances
    with pytest.raises(actions.ActionFailed, match="paths must be a list of paths starting with /"):
        act(runbook, "cache.warm", {"system": "new", "paths": "/api/v1/items"})
    assert one.seen == []
