"""The drills' verdicts as pure functions of the numbers, their parameters' validation, and the
plan action's dispatch — no servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from changeover.drills.failover import FailoverParams, judge_failover
from changeover.drills.result import DrillFailed, parse_params
from changeover.drills.rollback import RollbackParams, acknowledged_keys, judge_rollback
from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.rollout import actions
from changeover.traffic.builtin import BuiltinRouter

GOOD_FAILOVER = {
    "ejected_after_s": 0.5,
    "readmitted_after_s": 4.0,
    "requests": 1000,
    "errors": 1,
}
GOOD_ROLLBACK = {
    "rolled_back": True,
    "legacy_share_after": 100.0,
    "writes_owner": "legacy (handed back)",
    "drained": True,
    "verify_equal": True,
    "writes_acknowledged": 50,
    "writes_lost": 0,
    "requests": 300,
    "errors": 0,
}


def test_failover_passes_at_the_error_budget_and_fails_just_above_it() -> None:
    params = FailoverParams()
    assert judge_failover(dict(GOOD_FAILOVER), params) == []
    reasons = judge_failover({**GOOD_FAILOVER, "errors": 2}, params)
    assert reasons == [
        "2 of 1000 requests failed (0.200 %) while the instance was down; the error budget is 0.1 %"
    ]


def test_failover_names_a_late_or_missing_ejection_and_no_readmission() -> None:
    params = FailoverParams(eject_within="1s")
    late = judge_failover({**GOOD_FAILOVER, "ejected_after_s": 1.25}, params)
    assert late == ["the router took the stopped instance out after 1.25 s; the bound is 1 s"]
    never = judge_failover({**GOOD_FAILOVER, "ejected_after_s": None}, params)
    assert never == ["the router never took the stopped instance out (waited 1 s)"]
    gone = judge_failover({**GOOD_FAILOVER, "readmitted_after_s": None}, params)
    assert gone == ["the restarted instance was not taken back within 30 s"]


def test_failover_with_a_database_needs_the_app_to_write_again_in_time() -> None:
    params = FailoverParams.model_validate(
        {"database": {"replica": "r", "reconnect_within": "5s", "primary_data_dir": "/d"}}
    )
    assert judge_failover({**GOOD_FAILOVER, "reconnect_s": 4.9}, params) == []
    assert judge_failover({**GOOD_FAILOVER, "reconnect_s": 6.0}, params) == [
        "the app wrote again 6.00 s after the promotion; the bound is 5 s"
    ]
    assert judge_failover({**GOOD_FAILOVER, "reconnect_s": None}, params) == [
        "the app did not write through the promoted server within 5 s"
    ]


def test_rollback_fails_on_a_lost_write_a_difference_or_writes_not_handed_back() -> None:
    params = RollbackParams.model_validate({"write": {"path": "/o", "table": "orders"}})
    assert judge_rollback(dict(GOOD_ROLLBACK), params) == []
    lost = judge_rollback({**GOOD_ROLLBACK, "writes_lost": 2, "writes_lost_ids": [7, 9]}, params)
    assert lost == ["2 acknowledged writes are missing after the rollback (first ids: [7, 9])"]
    differ = judge_rollback({**GOOD_ROLLBACK, "verify_equal": False, "verify_differing": 3}, params)
    assert "SQLite and PostgreSQL differ after the rollback: 3 rows" in differ[0]
    stuck = judge_rollback({**GOOD_ROLLBACK, "writes_owner": "NOT handed back: x"}, params)
    assert stuck == ["writes were not handed back: NOT handed back: x"]
    none = judge_rollback({**GOOD_ROLLBACK, "writes_acknowledged": 0}, params)
    assert none == ["no write of the drill's load was acknowledged, so none could be checked"]


def test_parameters_are_checked_with_one_plain_line_naming_the_parameter() -> None:
    with pytest.raises(UsageError, match=r"drill.failover: error_budget: .*ratio"):
        parse_params(FailoverParams, {"error_budget": "lots"}, "drill.failover")
    with pytest.raises(UsageError, match=r"drill.rollback: wieghts: Extra inputs"):
        parse_params(RollbackParams, {"wieghts": [10]}, "drill.rollback")
    with pytest.raises(UsageError, match=r"weights: Value error, a list of percentages"):
        parse_params(RollbackParams, {"weights": [10, 150]}, "drill.rollback")
    assert RollbackParams(weight=30).steps() == [30]


def test_acknowledged_writes_are_the_2xx_answers_and_need_the_key(tmp_path: Path) -> None:
    record = tmp_path / "writes.jsonl"
    lines: list[dict[str, Any]] = [
        {"status": 201, "body": json.dumps({"id": 5})},
        {"status": 503, "body": "{}"},
        {"status": None, "body": "", "error": "reset"},
    ]
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert acknowledged_keys(record, "id") == [5]
    with pytest.raises(DrillFailed, match="has no 'order_id' field"):
        acknowledged_keys(record, "order_id")


def test_the_plan_action_runs_the_drill_and_refuses_an_unknown_instance(tmp_path: Path) -> None:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        json.dumps(
            {
                "version": 1,
                "name": "t",
                "cutover_at": "2026-12-01T02:00:00Z",
                "systems": {
                    "new": {
                        "kind": "app",
                        "instances": [{"name": "a", "url": "http://127.0.0.1:9"}],
                    },
                    "public": {"kind": "http", "url": "http://127.0.0.1:9"},
                },
                "stages": [],
            }
        )
    )
    assert "drill.failover" in actions.AUTOMATED and "drill.rollback" in actions.AUTOMATED
    router = BuiltinRouter("http://127.0.0.1:9", None)

    async def go() -> None:
        with Runbook.open(plan) as runbook:
            await actions.run("drill.failover", {"instance": "b"}, runbook, router)

    with pytest.raises(UsageError, match="new has no instance 'b' \\(instances: a\\)"):
        asyncio.run(go())


def test_the_table_shows_each_step_number_and_reason() -> None:
    from rich.console import Console

    from changeover.drills.result import DrillResult, Step, render

    result = DrillResult(
        "failover",
        False,
        {"ejected_after_s": 0.512, "errors": 3},
        ["3 of 100 requests failed (3.000 %) while the instance was down"],
        ["rebuild the old primary"],
        [Step("instance-stopped", True, 0.4, {"how": "pid 7 exited"})],
    )
    console = Console(record=True, width=200)
    console.print(render(result))
    text = console.export_text()
    assert "drill failover: FAILED" in text
    assert "instance-stopped" in text and "how=pid 7 exited" in text
    assert "ejected_after_s" in text and "0.512" in text
    assert "3 of 100 requests failed" in text and "rebuild the old primary" in text
