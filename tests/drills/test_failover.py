"""``drill failover`` for real: two demo new-app instances behind the built-in proxy on a
PostgreSQL primary + streaming replica and Redis; the drill stops an instance under load, then
stops the primary and promotes the replica."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from changeover.drills import run_drill
from changeover.drills.result import DRILL_RESULT, DRILL_STEP
from changeover.engine.runbook import Runbook
from changeover.traffic.route import open_plan_router
from drills.worlds import FALL_TIMES_INTERVAL_S, failover_world

SLACK_S = 3.0  # the graceful stop, the check timeout, our 50 ms polling, a busy two cores


def _drill(plan: Path, params: dict[str, Any]) -> Any:
    async def go() -> Any:
        with Runbook.open(plan) as runbook:
            _, router = open_plan_router(runbook)
            try:
                return await run_drill("failover", runbook, router, params, "test")
            finally:
                await router.close()  # type: ignore[attr-defined]

    return asyncio.run(go())


def test_an_instance_is_ejected_and_readmitted_and_the_app_writes_after_the_promotion(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with failover_world(tmp_path, redis_url, monkeypatch) as world:
        assert world.primary is not None and world.replica is not None
        params = {
            "system": "new",
            "instance": "new-2",
            "rate": 50,
            "settle": "1s",
            "eject_within": f"{FALL_TIMES_INTERVAL_S + SLACK_S}s",
            "database": {
                "replica": "postgres-replica",
                "data_dir": str(world.replica.data_dir),
                "primary_data_dir": str(world.primary.data_dir),
                "reconnect_within": "20s",
                "write": {
                    "path": "/api/v1/orders",
                    "body": {"user_id": 1, "items": [{"sku": "DRILL-1", "quantity": 1}],
                             "total": "9.90"},
                },
            },
        }  # fmt: skip
        result = _drill(world.plan, params)
        assert result.passed, (result.reasons, result.numbers, result.notes)
        numbers = result.numbers
        assert numbers["ejected_after_s"] <= FALL_TIMES_INTERVAL_S + SLACK_S
        assert numbers["readmitted_after_s"] is not None
        assert numbers["requests"] > 100 and numbers["errors"] <= numbers["requests"] * 0.001
        assert numbers["reconnect_s"] is not None and numbers["reconnect_s"] <= 20
        assert numbers["write_downtime_s"] >= numbers["reconnect_s"]
        assert any("rebuild the old one" in note for note in result.notes)

        # The promoted server holds the write the app made after the failover.
        with world.replica.connect("drill") as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            skus = conn.execute("SELECT sku FROM app.order_items WHERE sku = 'DRILL-1'").fetchall()
        assert skus
        # Both instances answer again, the stopped one restarted by its deployer.
        for url in world.instances.values():
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200

        with Runbook.open(world.plan) as runbook:
            steps = [e.payload["step"] for e in runbook.journal.events(kinds=[DRILL_STEP])]
            final = runbook.journal.latest(DRILL_RESULT)
        assert steps[:5] == [
            "router-healthy", "instance-stopped", "instance-ejected", "instance-restarted",
            "instance-readmitted",
        ]  # fmt: skip
        assert "replica-promoted" in steps and "app-reconnected" in steps
        assert final is not None and final.payload["passed"] is True


def test_an_impossible_ejection_bound_fails_with_a_clear_reason_through_the_cli(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with failover_world(tmp_path, redis_url, monkeypatch) as world:
        plan = json.loads(world.plan.read_text())
        step = plan["stages"][0]["sections"][0]["steps"][0]
        step["action"]["drill.failover"] |= {"eject_within": "1ms", "settle": "500ms"}
        world.plan.write_text(json.dumps(plan))
        proc = subprocess.run(
            [sys.executable, "-m", "changeover", "drill", "failover", "--plan", str(world.plan),
             "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        result = json.loads(proc.stdout)
        assert result["passed"] is False
        assert any(
            "took the stopped instance out after" in r and "the bound is 0.001 s" in r
            for r in result["reasons"]
        ), result["reasons"]
        # Failing the verdict still brought the instance back.
        assert result["numbers"]["readmitted_after_s"] is not None
        for url in world.instances.values():
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
