"""``drill rollback`` for real: the demo's legacy app on SQLite, its live copy in PostgreSQL
with the sync follower, two new-app instances and the built-in proxy; the drill cuts over under
load with writes, hands writes off, rolls back through the controller and checks every write."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from changeover.drills import run_drill
from changeover.drills.result import DRILL_RESULT
from changeover.engine.runbook import Runbook
from changeover.rollout.state import ROLLBACK_DONE
from changeover.traffic.route import open_plan_router
from drills.worlds import rollback_world

WRITE = {
    "path": "/api/v1/orders",
    "body": {"user_id": 1, "items": [{"sku": "DRILL-1", "quantity": 1}], "total": "19.90"},
    "table": "orders",
    "key": "id",
}


def _drill(plan: Path, params: dict[str, Any]) -> Any:
    async def go() -> Any:
        with Runbook.open(plan) as runbook:
            _, router = open_plan_router(runbook)
            try:
                result = await run_drill("rollback", runbook, router, params, "test")
                weights = await router.weights()
                return result, weights
            finally:
                await router.close()  # type: ignore[attr-defined]

    return asyncio.run(go())


def test_cut_over_and_roll_back_under_load_loses_no_acknowledged_write(
    tmp_path: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with rollback_world(tmp_path, pg_url, redis_url, monkeypatch) as world:
        params = {"weights": [10, 100], "bake": "1500ms", "rate": 40, "write": WRITE}
        result, weights = _drill(world.plan, params)
        assert result.passed, (result.reasons, result.numbers, result.notes)
        numbers = result.numbers
        assert numbers["rolled_back"] is True and numbers["legacy_share_after"] == 100.0
        assert numbers["writes_owner"] == "legacy (handed back)"
        assert numbers["handoff_pause_s"] is not None
        assert numbers["drained"] is True and numbers["verify_equal"] is True
        assert numbers["writes_acknowledged"] > 10 and numbers["writes_lost"] == 0
        assert weights["legacy"] == 100.0 and weights["new"] == 0.0

        # The writes made while new owned them reached SQLite (legacy's store) too.
        records = [json.loads(line) for line in Path(_record(result)).read_text().splitlines()]
        assert {r["status"] for r in records} == {201}

        with Runbook.open(world.plan) as runbook:
            final = runbook.journal.latest(DRILL_RESULT)
            # The plan's own journal never saw a rollback: the real 'changeover run' starts clean.
            assert runbook.journal.latest(ROLLBACK_DONE) is None
        assert final is not None and final.payload["passed"] is True
        scratch = Path(numbers["scratch_journal"].removeprefix("sqlite:///"))
        assert scratch.name.startswith("rollback-")


def _record(result: Any) -> str:
    journal = Path(result.numbers["scratch_journal"].removeprefix("sqlite:///"))
    return str(journal.with_name(journal.stem + "-writes.jsonl"))
