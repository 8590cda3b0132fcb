"""``changeover run``, ``approve``, ``rollback``: the day-of commands (``changeover.rollout``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from changeover.cli_common import _print_json, err, json_option, out, plan_option


@click.command()
@plan_option
@click.option("--router", "router_name", help="Router system of the plan (if several).")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between evaluations."
)
@click.option("--again", is_flag=True, help="Start a new attempt after a rollback.")
@json_option
def run(plan: Path, router_name: str | None, interval: float, again: bool, json_: bool) -> None:
    """Run the plan's traffic phases: checks, actions, gates, decisions, rollback triggers.

    Resumable: run it again after any interruption and it continues where the journal says.
    Exit 0 when the cutover completed, 1 when it rolled back or a pre-check failed.

    Example: changeover run --plan changeover.yaml
    """
    from changeover.engine.runbook import Runbook
    from changeover.traffic.route import open_plan_router

    with Runbook.open(plan) as runbook:
        _, router = open_plan_router(runbook, router_name)
        result = asyncio.run(_run(runbook, router, interval, json_, again))
    if json_:
        _print_json(result.to_json())
    elif result.outcome == "completed":
        out.print(f"cutover complete: phases {', '.join(result.phases_passed)} passed")
    else:
        rollback = result.rollback or {}
        err.print(f"rolled back ({rollback.get('mode')}): {rollback.get('reason')}", markup=False)
    sys.exit(0 if result.outcome == "completed" else 1)


async def _run(runbook: Any, router: Any, interval: float, json_: bool, again: bool) -> Any:
    from changeover.notify.notifier import notifier_for
    from changeover.rollout.controller import Controller, notify_through
    from changeover.rollout.sources import metrics_for

    metrics = metrics_for(runbook, router)
    notifier = notifier_for(runbook.plan, runbook.journal, base_dir=runbook.loaded.base_dir)

    def echo(kind: str, title: str) -> None:
        err.print(f"[{kind}] {title}", markup=False)

    notify = notify_through(notifier, None if json_ else echo)
    controller = Controller(runbook, router, metrics.read, notify=notify, interval=interval)
    try:
        return await controller.run(again=again)
    finally:
        await notifier.drain(timeout=10)
        await metrics.close()
        await router.close()


@click.command()
@click.argument("phase")
@click.option("--by", required=True, help="Who approves.")
@plan_option
def approve(phase: str, by: str, plan: Path) -> None:
    """Approve a phase's manual decision; the running controller proceeds.

    Example: changeover approve canary --by alice
    """
    from changeover.engine.runbook import Runbook
    from changeover.rollout.controller import approve as approve_phase

    with Runbook.open(plan) as runbook:
        approve_phase(runbook, phase, by)
    out.print(f"approved {phase} (by {by})")


@click.command()
@click.option("--immediate", "mode", flag_value="immediate", default=True, help="All at once.")
@click.option("--graceful", "mode", flag_value="graceful", help="Step down 50 → 10 → 0 %.")
@click.option("--reason", required=True, help="Why (journaled and sent with the notification).")
@click.option("--by", required=True, help="Who asks for it.")
@plan_option
def rollback(mode: str, reason: str, by: str, plan: Path) -> None:
    """Roll back to legacy from any shell: the running controller acts on it within a second.

    Example: changeover rollback --immediate --reason "5xx spike on /checkout" --by alice
    """
    from changeover.engine.runbook import Runbook
    from changeover.rollout.controller import request_rollback

    with Runbook.open(plan) as runbook:
        request_rollback(runbook, mode, reason, by)
    out.print(
        f"{mode} rollback requested; 'changeover run' carries it out (start it if it is not "
        "running)"
    )


@click.command()
@click.argument("metric")
@click.option("--reason", required=True, help="What was seen (journaled, shown as evidence).")
@click.option("--by", required=True, help="Who (or which system) raises it.")
@click.option("--of", "of", help="The system it is about (default: any).")
@plan_option
def signal(metric: str, reason: str, by: str, of: str | None, plan: Path) -> None:
    """Raise a signal a rollback trigger watches: security_breach, critical_features.

    The plan decides what it does (the default plan: a security breach rolls back at once,
    bugs in critical features step down gracefully); the running controller sees it within a
    second. For an outside system (a SIEM, a support tool), run this from its webhook.

    Example: changeover signal security_breach --reason "WAF: credential stuffing" --by siem
    """
    from changeover.engine.runbook import Runbook
    from changeover.errors import UsageError
    from changeover.metrics.signals import SIGNALLED, raise_signal
    from changeover.plan.model import suggest

    if metric not in SIGNALLED:
        raise UsageError(
            f"no trigger is raised by hand for {metric!r}{suggest(metric, SIGNALLED)}; "
            f"signals: {', '.join(sorted(SIGNALLED))} (or: changeover rollback --reason ...)"
        )
    with Runbook.open(plan) as runbook:
        watched = [
            step.id
            for step in runbook.plan.all_steps()
            for gate in step.gates
            if gate.metric == metric and gate.check is None
        ]
        if of is not None and of not in runbook.plan.systems:
            raise UsageError(f"unknown system {of!r}{suggest(of, runbook.plan.systems)}")
        raise_signal(runbook.journal, metric, of, reason, by)
    if watched:
        out.print(f"{metric} raised (by {by}); watched by {', '.join(watched)}")
    else:
        err.print(
            f"{metric} raised (by {by}), but no gate of this plan watches it: nothing will act "
            "on it — use 'changeover rollback --reason ...' to roll back",
            markup=False,
        )


@click.command("do")
@click.argument("step_id", metavar="STEP")
@click.option("--by", required=True, help="Who runs it (journaled).")
@click.option("--again", is_flag=True, help="Run it again although it succeeded before.")
@plan_option
@json_option
def do(step_id: str, by: str, again: bool, plan: Path, json_: bool) -> None:
    """Run one action step now (outside the traffic phases): advise, archive, decommission, ...

    Journaled before and after like the controller's actions; a step that already succeeded is
    not repeated without --again. Steps inside a traffic phase belong to 'changeover run'.
    Exit 0 done, 1 the action failed, 2 not an action step here.

    Example: changeover do archive-logs --by alice
    """
    from changeover.engine.runbook import Runbook
    from changeover.errors import ChangeoverError, UsageError
    from changeover.journal import ACTION_INTENT, ACTION_OUTCOME
    from changeover.rollout import actions

    with Runbook.open(plan) as runbook:
        try:
            step = runbook.plan.step(step_id)
        except KeyError:
            from changeover.plan.model import suggest

            ids = [s.id for s in runbook.plan.all_steps()]
            raise UsageError(f"unknown step {step_id!r}{suggest(step_id, ids)}") from None
        stage = next((s for s in runbook.plan.stages if step in s.steps()), None)
        if step.action is None:
            raise UsageError(f"step {step_id!r} has no action (it is checked or signed off)")
        if stage is not None and stage.phase is not None:
            raise UsageError(
                f"step {step_id!r} is part of the traffic phase {stage.id!r}: 'changeover run' "
                "runs it, in order, with the phase's gates watching"
            )
        name, params = step.action.action, step.action.params
        if name not in actions.AUTOMATED or name == "route":
            raise UsageError(
                f"changeover cannot run {name!r} by itself: do it by hand, then "
                f"'changeover signoff {step_id} --by NAME'"
            )
        before = [
            e
            for e in runbook.journal.events(kinds=[ACTION_OUTCOME])
            if e.payload.get("step") == step_id and e.payload.get("ok")
        ]
        if before and not again:
            raise UsageError(
                f"step {step_id!r} already succeeded ({before[-1].ts}); --again runs it again"
            )
        payload = {"step": step_id, "action": name}
        runbook.journal.append(ACTION_INTENT, payload, actor=by)
        try:
            detail = asyncio.run(_do(runbook, name, params))
        except (actions.ActionFailed, ChangeoverError) as exc:
            failed = {**payload, "ok": False, "error": str(exc)}
            runbook.journal.append(ACTION_OUTCOME, failed, actor=by)
            if json_:
                _print_json({"step": step_id, "ok": False, "error": str(exc)})
            else:
                err.print(f"{step_id}: {name} failed: {exc}", markup=False)
            sys.exit(1)
        runbook.journal.append(ACTION_OUTCOME, {**payload, "ok": True, "detail": detail}, actor=by)
    if json_:
        _print_json({"step": step_id, "ok": True, "detail": detail})
    else:
        out.print(f"{step_id}: {name} done", markup=False)
        for key, value in (detail or {}).items():
            out.print(f"  {key}: {value}", markup=False)


async def _do(runbook: Any, name: str, params: Any) -> Any:
    """One action with the plan's router open (None for a plan without one) and closed after."""
    from changeover.errors import UsageError
    from changeover.rollout import actions
    from changeover.traffic.route import open_plan_router

    try:
        _, router = open_plan_router(runbook)
    except UsageError:  # no router in the plan: an action that needs one says so
        router = None
    try:
        return await actions.run(name, params, runbook, router)  # type: ignore[arg-type]
    finally:
        if router is not None:
            await router.close()
