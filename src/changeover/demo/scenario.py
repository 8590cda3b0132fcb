"""``changeover demo``: the whole cutover on this machine, on embedded defaults.

Embedded PostgreSQL (+ a streaming replica) and Redis, the legacy app on a seeded SQLite file
(≥ 100k rows), the built-in proxy and an open-model load; then the demo plan runs through the
same controller as ``changeover run``: pre-deployment checks, copy with change capture, live
sync, the canary at 10 %, 50 % and 100 % with their gates, the write handoff, post-cutover
checks. With ``--fault`` the new app misbehaves in phase 2 and the controller rolls back by
itself. At the end the load stops, the sync drains, every row is verified and every write the
load was told succeeded is looked up in PostgreSQL; the report lands next to the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live

from changeover.demo.load import LoadProcess, WriteCheck, check_writes
from changeover.demo.plan import NEW_INSTANCES, Bakes, write_demo_plan
from changeover.demo.view import NightView, emit_json
from changeover.demo.world import World, open_world
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.rollout.controller import Controller, RunResult, approve

FAULTS: dict[str, dict[str, float]] = {
    "error-spike": {"error_rate": 0.2},
    "latency": {"latency_ms": 1500.0},
    "leak": {"leak_mb_per_s": 40.0},
}
DEFAULT_USERS = 20_000  # × 5 rows each: 100,000 rows in the legacy database
OPERATOR = "demo operator (stand-in)"
OPERATOR_READS_S = 5.0  # how long the stand-in "reads" the evidence before approving
DEFAULT_RATE = 200.0  # requests/s through the proxy: what this 2-core machine carries


class DemoFailed(ChangeoverError):
    exit_code = 1


def run_demo(
    console: Console,
    *,
    json_output: bool = False,
    workdir: Path | None = None,
    fault: str | None = None,
    users: int = DEFAULT_USERS,
    rate: float = DEFAULT_RATE,
    bakes: Bakes | None = None,
) -> int:
    """Run the demo; 0 when it ended as it should (complete, or rolled back under ``fault``),
    with every row verified and no acknowledged write lost."""
    started = time.monotonic()
    emit = emit_json if json_output else None
    loop = _new_loop()
    try:
        with ExitStack() as stack:
            if workdir is None:
                # kept after the demo: the report, runbook, exports and journal are its output
                workdir = Path(tempfile.mkdtemp(prefix="changeover-demo-"))
            workdir.mkdir(parents=True, exist_ok=True)
            # Every demo starts a new night: new servers, so no journal of an earlier one.
            shutil.rmtree(workdir / ".changeover", ignore_errors=True)
            _say(console, emit, {"event": "starting", "workdir": str(workdir), "fault": fault},
                 "[bold]changeover demo[/] — starting PostgreSQL + replica, Redis, the legacy "
                 "app and the proxy …")  # fmt: skip
            world = open_world(stack, workdir, users)
            shown = f"  legacy database: {world.legacy_rows:,} rows; proxy on {world.public_url}"
            _say(console, emit, {"event": "services", **_describe(world)}, shown)
            plan = write_demo_plan(workdir, world.ports, bakes or Bakes())
            runbook = stack.enter_context(Runbook.open(plan))
            summary = loop.run_until_complete(
                _night(runbook, world, console, emit, fault=fault, rate=rate)
            )
            summary["seconds"] = round(time.monotonic() - started, 1)
            _finish(console, emit, summary, workdir)
    finally:
        loop.close()
    expected = "rolled_back" if fault else "completed"
    ok = (
        summary["outcome"] == expected
        and summary["verify"]["equal"]
        and summary["writes"]["lost"] == 0
    )
    return 0 if ok else 1


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


async def _night(
    runbook: Runbook,
    world: World,
    console: Console,
    emit: Any,
    *,
    fault: str | None,
    rate: float,
) -> dict[str, Any]:
    from changeover.metrics.registry import Metrics
    from changeover.rollout.sources import metrics_for
    from changeover.traffic.route import open_plan_router

    checks = await asyncio.to_thread(runbook.check, stage_ids=["pre-deployment"])
    failed = [o for o in checks if not o.status.ok]
    if failed:
        why = [
            f"{outcome.step.id}: {probe.result.reason}"
            for outcome in failed
            for probe in outcome.probes
            if not probe.result.status.ok
        ]
        raise DemoFailed("pre-deployment checks failed — " + "; ".join(why or ["no reason given"]))
    _say(console, emit, {"event": "checks", "results": [o.to_json() for o in checks]},
         f"pre-deployment checks: {len(checks)} passed")  # fmt: skip

    view = NightView(runbook.journal, emit)
    load = LoadProcess(world.public_url, rate, world.workdir, world.session_secret)
    await load.start()
    view.load_of = load
    _, router = open_plan_router(runbook)
    metrics: Metrics = metrics_for(runbook, router)
    controller = Controller(
        runbook, router, metrics.read, interval=1.0, graceful_step_s=3.0, actor="changeover demo"
    )
    watcher = asyncio.create_task(_watch(view, router, world, console, emit))
    injector = asyncio.create_task(_inject(controller, world, fault)) if fault else None
    operator = asyncio.create_task(_operator(controller))
    try:
        result: RunResult = await controller.run()
    finally:
        load_result = await load.stop()
        for task in (watcher, injector, operator):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        weights = await router.weights()
        await metrics.close()
        await router.close()
    view.follow()

    post = []
    if result.outcome == "completed":
        post = await asyncio.to_thread(runbook.check, stage_ids=["post-cutover"])
    drained = await asyncio.to_thread(_drain, runbook)
    verify = await asyncio.to_thread(_verify, runbook)
    writes: WriteCheck = await asyncio.to_thread(
        check_writes, load.record, world.services.postgres.url
    )
    return {
        "outcome": result.outcome,
        "phases_passed": result.phases_passed,
        "rollback": _rollback(result.rollback),
        "weights": dict(weights.percent),
        "post_checks": {o.step.id: o.status.value for o in post},
        "sync_drained": drained,
        "verify": verify,
        "writes": writes.to_json(),
        "load": load_result,
    }


async def _watch(view: NightView, router: Any, world: World, console: Console, emit: Any) -> None:
    """Follow the journal, weights and sync lag every second, and draw them."""
    live = Live(view.render(), console=console, refresh_per_second=2) if emit is None else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            view.follow()
            with contextlib.suppress(Exception):  # a view must never stop the cutover
                view.weights = dict((await router.weights()).percent)
                view.lag = await asyncio.to_thread(_lag, world)
            view.tick()
            if live is not None:
                live.update(view.render())
            await asyncio.sleep(1.0)


def _lag(world: World) -> dict[str, Any] | None:
    from changeover.migrate.apply import pending_forward

    lag = pending_forward(world.legacy_db, world.services.postgres.url, "public")
    return lag.to_json() if lag is not None else None


async def _operator(controller: Controller) -> None:
    """The demo's stand-in for the operator. Gates that are still undecided when a phase's
    maximum bake time is up ask a human (as they would on the night); a demo must end, so after
    a few seconds to read the evidence the stand-in approves — journaled under its own name. A
    failed gate never gets here: it rolls back by itself."""
    while True:
        state = controller.state()
        for phase in state.decision_asked:
            if phase not in state.approved:
                await asyncio.sleep(OPERATOR_READS_S)
                approve(controller.runbook, phase, by=OPERATOR)
        await asyncio.sleep(0.5)


async def _inject(controller: Controller, world: World, fault: str) -> None:
    """Once phase 2 is being watched, make every running new instance misbehave."""
    while "staged" not in controller.state().window:
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)
    headers = {"Authorization": f"Bearer {world.admin_token}"}
    async with httpx.AsyncClient(timeout=5) as client:
        for port in world.ports.new[:2]:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(
                    f"http://127.0.0.1:{port}/admin/faults", json=FAULTS[fault], headers=headers
                )
    controller.journal.append(
        "note", {"text": f"demo: fault {fault} injected into {', '.join(NEW_INSTANCES[:2])}"},
        actor="changeover demo",
    )  # fmt: skip


def _drain(runbook: Runbook, timeout: float = 60.0) -> bool:
    """Wait until the sync has applied every captured change, whichever way it runs."""
    from changeover.migrate.status import migration_status
    from changeover.rollout.actions import migration_endpoints

    source, url, plan = migration_endpoints(runbook)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = migration_status(source, url, plan)
        pending = [(status.get(side) or {}).get("rows", 0) for side in ("forward", "reverse")]
        if not any(pending):
            return True
        time.sleep(0.2)
    return False


def _verify(runbook: Runbook) -> dict[str, Any]:
    from changeover.migrate.verify import verify_database
    from changeover.rollout.actions import migration_endpoints

    source, url, plan = migration_endpoints(runbook)
    report = verify_database(source, url, plan)
    rows = sum(t.source_rows for t in report.tables)
    differing = sum(t.missing + t.extra + t.different for t in report.tables)
    return {
        "equal": report.equal,
        "rows": rows,
        "differing": differing,
        "percent_equal": round(100.0 * (rows - differing) / rows, 4) if rows else 100.0,
        "seconds": round(report.seconds, 2),
    }


def _rollback(rollback: dict[str, Any] | None) -> dict[str, Any] | None:
    if rollback is None:
        return None
    return {k: rollback.get(k) for k in ("mode", "reason", "seconds", "writes")}


def _describe(world: World) -> dict[str, Any]:
    services = world.services
    return {
        "postgres": f"127.0.0.1:{services.postgres.port} (PostgreSQL {services.postgres.version})",
        "replica": f"127.0.0.1:{services.replica.port}",
        "redis": f"127.0.0.1:{services.redis.port}",
        "legacy": f"127.0.0.1:{world.ports.legacy}",
        "proxy": world.public_url,
        "legacy_rows": world.legacy_rows,
    }


def _say(console: Console, emit: Any, event: dict[str, Any], text: str) -> None:
    if emit is not None:
        emit(event)
    else:
        console.print(text)


def _documents(plan: Any, workdir: Path) -> dict[str, str]:
    """The night's plan as the documents a team keeps: the runbook, Prometheus alerting rules
    and a Grafana dashboard (the demo's metrics are the built-in proxy's series)."""
    from changeover.documents.runbook import runbook_markdown
    from changeover.export import grafana_dashboard, prometheus_rules

    plan_file = workdir / "changeover.yaml"
    written = {
        "runbook": (workdir / "RUNBOOK.md", runbook_markdown(plan, plan_file)),
        "prometheus_rules": (
            workdir / "prometheus-rules.yml",
            prometheus_rules(plan, series="proxy", plan_file=str(plan_file)).to_yaml(),
        ),
        "grafana_dashboard": (
            workdir / "grafana-dashboard.json",
            grafana_dashboard(plan, series="proxy").to_json(),
        ),
    }
    for path, text in written.values():
        path.write_text(text, encoding="utf-8")
    return {name: str(path) for name, (path, _) in written.items()}


def _finish(console: Console, emit: Any, summary: dict[str, Any], workdir: Path) -> None:
    from changeover.journal import ACTION_OUTCOME
    from changeover.report import make_report, render
    from changeover.report.timeline import LOAD_RESULT

    with Runbook.open(workdir / "changeover.yaml") as runbook:
        # The night's last evidence goes into the journal, so that the report — and anyone
        # reading the journal later — has the final verify and the write check, not just stdout.
        verify = summary["verify"]
        final = {"step": "final-verify", "action": "migrate.verify", "ok": bool(verify["equal"])}
        runbook.journal.append(ACTION_OUTCOME, {**final, "detail": verify}, actor="changeover demo")
        runbook.journal.append(
            LOAD_RESULT,
            {"load": summary["load"] or {}, "writes": summary["writes"]},
            actor="changeover demo",
        )
        report = make_report(runbook)
        plan = runbook.plan
    paths: dict[str, Path] = {}
    for format_ in ("html", "md"):
        paths[format_] = workdir / f"report.{format_}"
        paths[format_].write_text(render(report, format_), encoding="utf-8")
    summary["report"] = str(paths["html"])
    summary["report_md"] = str(paths["md"])
    summary["documents"] = _documents(plan, workdir)
    summary["criteria"] = report.counts()
    summary["journal_ok"] = report.journal.ok
    if emit is not None:
        emit({"event": "done", **summary})
        return
    verify, writes, load = summary["verify"], summary["writes"], summary["load"] or {}
    if summary["outcome"] == "completed":
        console.print(
            f"[bold green]cutover complete[/]: phases {', '.join(summary['phases_passed'])} "
            f"passed; weights {summary['weights']}"
        )
    else:
        rollback = summary["rollback"] or {}
        console.print(
            f"[bold yellow]rolled back[/] ({rollback.get('mode')}, {rollback.get('seconds')} s): "
            f"{rollback.get('reason')}"
        )
    console.print(
        f"verify: {verify['percent_equal']}% of {verify['rows']:,} rows equal; writes "
        f"acknowledged {writes['acknowledged']:,}, lost {writes['lost']}; load "
        f"{load.get('achieved_rate', 0)} req/s, p95 {(load.get('latency_ms') or {}).get('p95')}"
        f" ms, errors {load.get('errors', 0)}"
    )
    counts = summary["criteria"]
    console.print(
        f"success criteria: {counts['PASS']} pass, {counts['FAIL']} fail, {counts['UNKNOWN']} "
        f"unknown (no evidence is not a pass)"
    )
    console.print(f"report: {summary['report']}")
    console.print(f"        {summary['report_md']}")
    documents = summary["documents"]
    console.print(
        f"runbook: {documents['runbook']}; alert rules: {documents['prometheus_rules']}; "
        f"Grafana dashboard: {documents['grafana_dashboard']}"
    )
    console.print(
        f"the journal stays: changeover report / status / dashboard --plan "
        f"{workdir / 'changeover.yaml'}"
    )
    console.print(f"(journal chain ok={summary['journal_ok']}; {summary['seconds']} s)")
