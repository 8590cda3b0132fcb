"""The demo scenario: embedded servers, the default plan, its pre-deployment checks.

Starts PostgreSQL (+ a streaming replica) and Redis in a temporary directory, writes the default
plan next to a fresh journal, points the plan's ``${PG_URL}``/``${REDIS_URL}`` references at the
embedded servers and runs the pre-deployment stage's checks, printing the table (or JSON lines).
Later capabilities grow this into the whole cutover.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from changeover.engine.check import StepOutcome
from changeover.engine.runbook import Runbook
from changeover.plan.default import write_default_plan
from changeover.secrets import REDACTOR
from changeover.services import start_demo_services
from changeover.ui import check_table, live_progress

DEMO_STAGE = "pre-deployment"


def run_demo(console: Console, *, json_output: bool = False, workdir: Path | None = None) -> int:
    started = time.monotonic()
    emit = _json_emitter() if json_output else None
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="changeover-demo-"))
            )
        workdir.mkdir(parents=True, exist_ok=True)
        if emit:
            emit({"event": "starting", "workdir": str(workdir)})
        else:
            console.print(
                "[bold]changeover demo[/] — starting embedded PostgreSQL + replica + Redis …"
            )
        services = stack.enter_context(start_demo_services(workdir / "services"))
        os.environ.update(services.environ())
        if emit:
            emit({"event": "services", **services.describe()})
        else:
            for line in services.describe_lines():
                console.print(f"  {line}")

        plan_path = write_default_plan(workdir, force=True)
        with Runbook.open(plan_path) as runbook:
            live = not emit and console.is_terminal
            with live_progress(console, enabled=live) as progress:
                outcomes = runbook.check(stage_ids=[DEMO_STAGE], progress=progress)
            verified = runbook.journal.verify()

        summary = _summary(outcomes)
        if emit:
            emit(
                {"event": "checks", "stage": DEMO_STAGE, "results": [o.to_json() for o in outcomes]}
            )
            emit(
                {
                    "event": "done",
                    "summary": summary,
                    "journal_ok": verified.ok,
                    "journal_events": verified.count,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        else:
            console.print(check_table(outcomes, title=f"{DEMO_STAGE}: checks of the default plan"))
            console.print(
                f"{summary['pass']} passed, {summary['fail']} failed, {summary['error']} errors, "
                f"{summary['warn']} warnings. Checks against the embedded PostgreSQL and Redis pass;"
                " failures name what this machine does not have (Go toolchain, registry, Prometheus,"
                " the apps) — what `changeover check` would tell you on the night."
            )
            console.print(
                f"journal: {verified.count} events, chain ok={verified.ok}; plan: {plan_path}"
                f" ({time.monotonic() - started:.1f}s)"
            )
    return 0


def _summary(outcomes: list[StepOutcome]) -> dict[str, int]:
    counts = {"pass": 0, "warn": 0, "fail": 0, "error": 0}
    for outcome in outcomes:
        counts[outcome.status.value] += 1
    return counts


def _json_emitter() -> Any:
    def emit(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(REDACTOR.scrub_value(data), default=str) + "\n")
        sys.stdout.flush()

    return emit
