"""``changeover watch`` (with ``watch ack``) and ``changeover stability``: the days after.

Thin adapters over ``changeover.watch``: open the plan's runbook, build the schedule from its
watch steps, run the daemon in the foreground with SIGTERM/SIGINT as a clean stop, print each
round on stderr; ``stability`` prints the verdict the journal supports.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click

from changeover.cli_common import (
    CONTEXT,
    err,
    json_option,
    out,
    plan_option,
    positive_seconds,
    print_json,
)


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@plan_option
@click.option("--once", is_flag=True, help="Run the round due now (if any) and exit.")
@click.option(
    "--compress",
    type=float,
    default=None,
    help="Run the schedule this many times faster (3600: an hour per second), from the last "
    "round done, every round in turn; for demos and tests.",
)
@json_option
@click.pass_context
def watch(ctx: click.Context, plan: Path, once: bool, compress: float | None, json_: bool) -> None:
    """Run the post-cutover checks on the plan's watch schedule; alert and escalate on failure.

    A foreground daemon for systemd (Type=simple): each round runs the checks of the stages
    holding the watch steps and is journaled; a failed round alerts the first alert role, and
    an alert nobody acknowledges within escalate_after goes to the next role. Restart it any
    time: it resumes after the last round done and never repeats one. SIGTERM stops it between
    rounds. Exit 0, or 1 when a round it ran failed.

    Example: changeover watch --plan changeover.yaml
    """
    if ctx.invoked_subcommand is not None:
        return
    from changeover.engine.runbook import Runbook
    from changeover.notify.notifier import notifier_for
    from changeover.watch.daemon import WatchDaemon, cutover_anchor
    from changeover.watch.schedule import CompressedClock, Schedule, watch_settings

    with Runbook.open(plan) as runbook:
        settings = watch_settings(runbook.plan)
        anchor, source = cutover_anchor(runbook)
        schedule = Schedule(settings.rules, anchor)
        if compress is None:
            clock = CompressedClock()
        else:
            from changeover.watch.state import KINDS, WatchState

            done = WatchState.from_events(runbook.journal.events(kinds=KINDS)).last_done
            clock = CompressedClock(max(done or anchor, anchor), compress)
        err.print(
            f"watching from {anchor.isoformat()} ({source}): stages {', '.join(settings.stages)}",
            markup=False,
        )
        notifier = notifier_for(runbook.plan, runbook.journal, base_dir=runbook.loaded.base_dir)
        if not notifier.channels:
            err.print(
                "warning: the plan has no notify channels: alerts go to the journal only",
                markup=False,
            )
        daemon = WatchDaemon(
            runbook,
            settings,
            schedule,
            clock,
            notifier,
            log=None if json_ else (lambda line: err.print(line, markup=False)),
            catch_up=compress is not None,
        )
        result = asyncio.run(_run(daemon, notifier, once))
    if json_:
        print_json(result.to_json())
    elif result.finished:
        out.print("watch schedule complete: no round left")
    elif result.next_due:
        out.print(f"next round due at {result.next_due}")
    sys.exit(1 if result.failed else 0)


async def _run(daemon: Any, notifier: Any, once: bool) -> Any:
    loop = asyncio.get_running_loop()
    for number, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        loop.add_signal_handler(number, daemon.stop, name)
    try:
        return await daemon.run(once=once)
    finally:
        await notifier.drain(timeout=10)


@watch.command("ack")
@click.argument("alert")
@click.option("--by", required=True, help="Who takes the alert on.")
@click.option("--note", help="What is being done about it (journaled).")
@plan_option
def ack(alert: str, by: str, note: str | None, plan: Path) -> None:
    """Acknowledge a watch alert: it is escalated no further.

    Example: changeover watch ack 3f9c2a1b --by alice --note "looking at the pool"
    """
    from changeover.engine.runbook import Runbook
    from changeover.watch.state import ack as acknowledge

    with Runbook.open(plan) as runbook:
        acknowledge(runbook.journal, alert, by=by, note=note)
    out.print(f"alert {alert} acknowledged by {by}")


@click.command(context_settings=CONTEXT)
@plan_option
@click.option(
    "--measure",
    type=float,
    help="First load legacy, then new, at this many requests/s (journaled) for the ratio.",
)
@click.option("--duration", default="10s", show_default=True, help="How long each load runs.")
@click.option("--path", default="/healthz", show_default=True, help="Path the load requests.")
@json_option
def stability(plan: Path, measure: float | None, duration: str, path: str, json_: bool) -> None:
    """The stability verdict since the cutover, from the journal: uptime, errors, latency,
    data verification, synthetic checks and the measured new-vs-legacy performance ratio.

    Exit 0 when every measured part is met, 1 when one is not (unmeasured parts are shown as
    such, never as met).

    Example: changeover stability --json
    """
    from changeover.engine.runbook import Runbook
    from changeover.watch.stability import judge

    with Runbook.open(plan) as runbook:
        if measure is not None:
            from changeover.watch.perf import measure as measure_load

            measure_load(
                runbook,
                rate=measure,
                duration=positive_seconds("--duration", duration),
                path=path,
                progress=lambda line: err.print(line, markup=False),
            )
        verdict = judge(runbook.loaded.plan, runbook.journal.events())
    if json_:
        print_json(verdict.to_json())
    else:
        for line in verdict.lines():
            out.print(line, markup=False)
    sys.exit(0 if verdict.ok else 1)
