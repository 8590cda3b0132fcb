"""``changeover drill failover`` and ``changeover drill rollback``: rehearse before the night.

Thin adapters over ``changeover.drills``: the parameters come from the plan's step that runs
the drill (``--step``, else the first ``drill.failover`` / ``drill.rollback`` step), the result
is printed as a table (or ``--json``) and journaled. Exit 0 passed, 1 failed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from changeover.cli_common import CONTEXT, err, json_option, out, plan_option, print_json
from changeover.errors import UsageError
from changeover.journal import ACTION_INTENT, ACTION_OUTCOME

_step_option = click.option(
    "--step", "step_id", help="The plan step whose parameters to use (default: the first one)."
)
_router_option = click.option("--router", "router_name", help="Router system (if several).")


@click.group(context_settings=CONTEXT)
def drill() -> None:
    """Rehearse failures before the night: lose an instance and the database, roll back."""


@drill.command()
@plan_option
@_step_option
@_router_option
@json_option
def failover(plan: Path, step_id: str | None, router_name: str | None, json_: bool) -> None:
    """Stop a new-app instance under load, then promote the PostgreSQL replica.

    Under bounded loopback load through the router: the instance is stopped (SIGTERM, then
    SIGKILL), the router must take it out within eject_within and the clients' errors stay
    within error_budget (default 0.1 %); it is started again and must be taken back. With a
    'database' parameter: the primary is stopped, the replica promoted (pg_ctl promote) and
    every instance must write again within reconnect_within. Exit 0 passed, 1 failed.

    Example: changeover drill failover --step failover-test
    """
    _drill("failover", plan, step_id, router_name, json_)


@drill.command()
@plan_option
@_step_option
@_router_option
@json_option
def rollback(plan: Path, step_id: str | None, router_name: str | None, json_: bool) -> None:
    """Cut over under load, roll back, and prove no acknowledged write was lost.

    With the sync running: weights 10 → 50 → 100 % (or the step's weights), writes handed to
    new, an immediate rollback through the rollout controller (writes handed back), then the
    sync drained, verify equal and every acknowledged write found in PostgreSQL and SQLite.
    Starts only from all traffic on legacy. Exit 0 passed, 1 failed.

    Example: changeover drill rollback --step rollback-test --json
    """
    _drill("rollback", plan, step_id, router_name, json_)


def _drill(
    name: str, plan: Path, step_id: str | None, router_name: str | None, json_: bool
) -> None:
    from changeover.drills import run_drill
    from changeover.drills.result import render
    from changeover.engine.runbook import Runbook
    from changeover.traffic.route import open_plan_router

    with Runbook.open(plan) as runbook:
        step, params = _step_params(runbook, f"drill.{name}", step_id)
        _, router = open_plan_router(runbook, router_name)
        payload = {"step": step, "action": f"drill.{name}"}
        runbook.journal.append(ACTION_INTENT, payload)
        try:
            work = run_drill(name, runbook, router, params, "changeover drill")
            result = asyncio.run(_closing(work, router))
        except Exception as exc:
            runbook.journal.append(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
            raise
        outcome = {
            "ok": result.passed,
            "detail": {k: v for k, v in result.to_json().items() if k != "steps"},
        }
        runbook.journal.append(ACTION_OUTCOME, {**payload, **outcome})
    if json_:
        print_json(result.to_json())
    else:
        out.print(render(result))
        for reason in result.reasons:
            err.print(f"drill {name} failed: {reason}", markup=False)
    sys.exit(0 if result.passed else 1)


async def _closing(work: Any, router: Any) -> Any:
    try:
        return await work
    finally:
        await router.close()


def _step_params(
    runbook: Any, action: str, step_id: str | None
) -> tuple[str | None, dict[str, Any]]:
    """The chosen (or first) step running ``action`` and its parameters; none: defaults."""
    steps = [
        s for stage in runbook.plan.stages for s in stage.steps()
        if s.action is not None and s.action.action == action
    ]  # fmt: skip
    if step_id is None:
        return (steps[0].id, dict(steps[0].action.params)) if steps else (None, {})
    for step in steps:
        if step.id == step_id:
            return step.id, dict(step.action.params)
    known = ", ".join(s.id for s in steps) or "none"
    raise UsageError(f"no step {step_id!r} runs {action} in the plan (steps that do: {known})")
