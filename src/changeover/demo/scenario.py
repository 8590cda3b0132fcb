"""The demo scenario: embedded servers, the default plan's checks, then a traffic shift.

Starts PostgreSQL (+ a streaming replica) and Redis in a temporary directory, writes the default
plan next to a fresh journal, points the plan's ``${PG_URL}``/``${REDIS_URL}`` references at the
embedded servers and runs the pre-deployment stage's checks, printing the table (or JSON lines).
Then a seeded legacy SQLite database moves into PostgreSQL live (copy with capture, sync under
writes, verify, handoff, reverse sync), and the built-in proxy shifts two stand-in apps
10 → 50 → 100 % with counted requests. Later capabilities grow this into the whole cutover.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from changeover.demo.data import move_data
from changeover.demo.prepare import prepare_demo_servers
from changeover.demo.traffic import shift_traffic
from changeover.engine.check import StepOutcome
from changeover.engine.runbook import Runbook
from changeover.plan.default import write_default_plan
from changeover.secrets import REDACTOR
from changeover.services import Services, start_demo_services
from changeover.services.binaries import find_postgres_bin_dir, find_redis_server
from changeover.ui import check_table, data_table, live_progress, traffic_table

DEMO_STAGE = "pre-deployment"


def run_demo(console: Console, *, json_output: bool = False, workdir: Path | None = None) -> int:
    started = time.monotonic()
    emit = _json_emitter() if json_output else None
    keep = workdir is not None
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
        # The servers keep their files in their own temporary directories, which they make
        # reachable for the unprivileged user PostgreSQL runs as when we are root.
        services = stack.enter_context(start_demo_services())
        os.environ.update(services.environ())
        prepare_demo_servers(services.postgres.url, services.redis.url)
        described = describe(services)
        if emit:
            emit({"event": "services", **described})
        else:
            for name, where in described.items():
                console.print(f"  {name}: {where}")

        plan_path = write_default_plan(workdir, force=True)
        with Runbook.open(plan_path) as runbook:
            live = not emit and console.is_terminal
            with live_progress(console, enabled=live) as progress:
                outcomes = runbook.check(stage_ids=[DEMO_STAGE], progress=progress)
            verified = runbook.journal.verify()

        if emit:
            emit(
                {"event": "checks", "stage": DEMO_STAGE, "results": [o.to_json() for o in outcomes]}
            )
        else:
            console.print("moving the legacy SQLite data into PostgreSQL, live …")
        data = move_data(workdir, services.postgres.url)
        rows = asyncio.run(shift_traffic(workdir))
        summary = _summary(outcomes)
        if emit:
            emit({"event": "data", **data})
            emit({"event": "traffic", "steps": rows})
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
            passed = ", ".join(o.step.id for o in outcomes if o.status.ok) or "none"
            console.print(
                f"{summary['pass']} passed, {summary['warn']} warned, {summary['fail']} failed, "
                f"{summary['error']} could not run. Passed: {passed}. The failures name what this"
                " machine does not have (apps, Go toolchain, registry, Prometheus, secrets) —"
                " what `changeover check` tells you on the night."
            )
            where = (
                f"plan and journal kept in {workdir}"
                if keep
                else ("plan and journal were temporary (keep them with --workdir DIR)")
            )
            console.print(data_table(data))
            console.print(traffic_table(rows))
            console.print(
                f"journal: {verified.count} events, chain ok={verified.ok}; {where}"
                f" ({time.monotonic() - started:.1f}s)"
            )
    return 0


def describe(services: Services) -> dict[str, str]:
    """Where each embedded server listens and which binaries it runs (no passwords)."""
    pg_bin = find_postgres_bin_dir()
    redis_bin = find_redis_server()
    return {
        "postgres": f"127.0.0.1:{services.postgres.port} (PostgreSQL {services.postgres.version}"
        f", {pg_bin})",
        "replica": f"127.0.0.1:{services.replica.port} (streaming from the primary)",
        "redis": f"127.0.0.1:{services.redis.port} ({redis_bin})",
    }


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
