"""Drills: rehearse the night's failures before the night (``changeover drill``).

``failover`` stops a new-app instance under load and promotes the PostgreSQL replica;
``rollback`` cuts over under load, rolls back through the rollout controller and proves no
acknowledged write was lost. Each journals its steps (``drill.step``) and its verdict
(``drill.result``: passed, numbers, reasons); ``run_drill`` is the entry point of both.
"""

from __future__ import annotations

from typing import Any

from changeover.drills.result import DrillResult
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.traffic.router import Router

DRILLS = ("failover", "rollback")


class DrillNotPassed(ChangeoverError):
    """A drill ran and did not pass; ``str()`` gives its reasons (exit 1, like a failed check)."""

    exit_code = 1

    def __init__(self, result: DrillResult) -> None:
        super().__init__(f"drill {result.drill} failed: " + "; ".join(result.reasons))
        self.result = result


async def run_drill(
    name: str, runbook: Runbook, router: Router, params: dict[str, Any], actor: str
) -> DrillResult:
    """Run the drill ``name`` ("failover" or "rollback") with the plan step's ``params``."""
    if name == "failover":
        from changeover.drills.failover import run_failover

        return await run_failover(runbook, router, params, actor)
    from changeover.drills.rollback import run_rollback

    return await run_rollback(runbook, router, params, actor)


async def drill_action(
    name: str, params: dict[str, Any], runbook: Runbook, router: Router
) -> dict[str, Any]:
    """The ``drill.failover`` / ``drill.rollback`` actions of a plan step: the result's JSON,
    or ``DrillNotPassed`` naming the reasons."""
    result = await run_drill(name.removeprefix("drill."), runbook, router, params, "changeover run")
    if not result.passed:
        raise DrillNotPassed(result)
    return result.to_json()


__all__ = ["DRILLS", "DrillNotPassed", "DrillResult", "drill_action", "run_drill"]
