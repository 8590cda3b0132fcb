"""``http.cache_consistency`` against the demo's new app on real PostgreSQL and Redis: healthy
invalidation gives no stale read; the staged fault (``skip_invalidation``) is caught with the
stale keys; the records are left as found. The verdict itself is pure and tested without servers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from changeover.demo.data import seed_legacy_db
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.plan.load import parse_plan_text
from changeover.probes.base import ProbeContext, Status, run_probe
from changeover.probes.cache import CacheConsistencyParams, Sample, judge_samples
from demo.test_apps import ADMIN_TOKEN, SECRET, USERS, Demo
from support.process import free_port

ORDERS = [1, 2, 3]


@pytest.fixture
def demo(tmp_path: Path, pg_url: str, redis_url: str) -> Demo:
    """The demo apps' world in small (as tests/demo/test_apps.py builds it)."""
    db = tmp_path / "legacy.db"
    seed_legacy_db(db, USERS)
    copy_database(db, pg_url, plan_schema(introspect(db)), schema="app")
    secret_file = tmp_path / "session.secret"
    secret_file.write_text(SECRET + "\n")
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(ADMIN_TOKEN + "\n")
    return Demo(tmp_path, db, pg_url, redis_url, secret_file, admin_file)


def params(**overrides: Any) -> CacheConsistencyParams:
    values: dict[str, Any] = {
        "system": "new",
        "read": "/api/v1/orders/{id}",
        "body": {"status": "{value}"},
        "field": "status",
        "values": ["cache-check-a", "cache-check-b"],
        "ids": ORDERS,
        "samples": 6,
    }
    return CacheConsistencyParams(**(values | overrides))


def context(url: str) -> ProbeContext:
    plan = parse_plan_text(
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        f"systems:\n  new: {{kind: app, url: '{url}'}}\n"
        "stages: []\n",
        "t.yaml",
    )
    return ProbeContext(plan.systems)


def statuses(demo: Demo) -> list[str]:
    with psycopg.connect(demo.pg_url) as conn:
        rows = conn.execute(
            "SELECT status FROM app.orders WHERE id = ANY(%s) ORDER BY id", (ORDERS,)
        ).fetchall()
    return [row[0] for row in rows]


def test_healthy_invalidation_gives_no_stale_read_and_leaves_the_orders_as_found(
    demo: Demo,
) -> None:
    before = statuses(demo)
    with demo.new() as new:
        result = asyncio.run(run_probe("http.cache_consistency", params(), context(new.url)))
    assert result.status == Status.PASS, result.reason
    measured = {m.name: m.value for m in result.evidence}
    assert measured == {"stale_reads": 0, "samples": 6}
    assert result.details["stale"] == []
    assert statuses(demo) == before


def test_skipped_invalidation_is_caught_with_the_stale_keys(demo: Demo) -> None:
    before = statuses(demo)
    with demo.new() as new:
        switched = new.admin("/admin/faults", {"skip_invalidation": True})
        assert switched.status_code == 200 and switched.json()["skip_invalidation"] is True
        result = asyncio.run(run_probe("http.cache_consistency", params(), context(new.url)))
        new.admin("/admin/faults", {})  # back to healthy: the restore writes are not cached
    assert result.status == Status.FAIL
    measured = {m.name: m.value for m in result.evidence}
    assert measured["stale_reads"] == 6
    assert "6 of 6 reads after a write returned the old value (allowed 0)" in result.reason
    assert "/api/v1/orders/1, /api/v1/orders/2, /api/v1/orders/3" in result.reason
    stale = result.details["stale"]
    assert {s["key"] for s in stale} == {f"/api/v1/orders/{i}" for i in ORDERS}
    assert all(s["read"] != s["wrote"] for s in stale)
    assert statuses(demo) == before  # the original values were written back


def test_a_bad_fault_value_is_refused(demo: Demo) -> None:
    with demo.new() as new:
        refused = new.admin("/admin/faults", {"skip_invalidation": "yes"})
    assert refused.status_code == 400
    assert "skip_invalidation" in refused.json()["error"]


def test_an_app_that_is_down_fails_in_plain_words() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = asyncio.run(run_probe("http.cache_consistency", params(timeout=3), context(url)))
    assert result.status == Status.FAIL
    assert "cannot connect" in result.reason and "connection refused" in result.reason


def test_a_write_body_without_the_placeholder_is_refused() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        params(body={"status": "paid"})
    with pytest.raises(ValidationError, match="at least 2"):
        params(values=["only-one"])


def sample(before: str, wrote: str, read: str, ident: str = "1") -> Sample:
    return Sample(ident, before, wrote, read, f"/orders/{ident}")


def test_stale_reads_within_the_bound_pass_and_above_it_fail() -> None:
    samples = [sample("a", "b", "b"), sample("a", "b", "a", "2"), sample("b", "a", "a", "3")]
    assert judge_samples(samples, max_stale=1).status == Status.PASS
    failed = judge_samples(samples, max_stale=0)
    assert failed.status == Status.FAIL
    assert "1 of 3 reads after a write returned the old value (allowed 0): stale /orders/2" in (
        failed.reason
    )


def test_a_read_that_is_neither_old_nor_new_fails_as_unexpected() -> None:
    result = judge_samples([sample("a", "b", "c")], max_stale=5)
    assert result.status == Status.FAIL
    assert "neither the old nor the new value" in result.reason
    assert result.details["unexpected"] == [{"key": "/orders/1", "wrote": "b", "read": "c"}]
