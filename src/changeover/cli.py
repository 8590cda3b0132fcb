"""The command line: a thin adapter over the library (``changeover.engine.runbook``).

Each command is a few lines over a library call; everything printed as a table can be printed
as ``--json``. ``main`` is the error boundary: a ``ChangeoverError`` becomes its message on
stderr and its exit code (0 ok, 1 a required check failed, 2 bad input, 3 environment failure,
4 journal tampering detected, 130 interrupted) — never a traceback.

Built on click directly: typer 0.29 vendors its own copy of click, and mixing the two breaks
exception handling at the boundary.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from changeover import __version__
from changeover.cli_common import (
    CONTEXT,
    DEFAULT_PLAN,
    _print_json,
    err,
    json_option,
    out,
    plan_option,
)
from changeover.errors import ChangeoverError
from changeover.secrets import REDACTOR


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.scrub(super().format(record))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="changeover")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging (secrets are scrubbed).")
def cli(verbose: bool) -> None:
    """Run a production cutover as an executable runbook: checks, sign-offs, journal, report."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), default=".")
@click.option("--force", is_flag=True, help="Overwrite an existing changeover.yaml.")
def init(directory: Path, force: bool) -> None:
    """Write changeover.yaml: the complete default plan made from the seed checklist.

    Example: changeover init ./cutover
    """
    from changeover.plan.default import write_default_plan

    path = write_default_plan(directory, force=force)
    out.print(f"wrote {path} — edit systems and contacts, then: changeover validate {path}")


@cli.command()
@click.argument("plan", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_PLAN)
@json_option
def validate(plan: Path, json_: bool) -> None:
    """Validate a plan; errors name file:line:col and exit 2.

    Example: changeover validate changeover.yaml
    """
    from changeover.plan.load import load_plan

    loaded = load_plan(plan)
    steps = list(loaded.plan.all_steps())
    if json_:
        _print_json({"valid": True, "plan": str(plan), "steps": len(steps)})
    else:
        out.print(f"{plan}: valid — {len(loaded.plan.stages)} stages, {len(steps)} steps")


@cli.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file.")
def schema(output: Path | None) -> None:
    """Print the plan's JSON Schema (for editor completion).

    Example: changeover schema -o changeover.schema.json
    """
    from changeover.plan.schema import plan_json_schema

    text = json.dumps(plan_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


@cli.command()
@plan_option
@click.option("--stage", "stages", multiple=True, help="Only this stage (repeatable).")
@click.option("--step", "steps", multiple=True, help="Only this step (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@json_option
def check(
    plan: Path, stages: tuple[str, ...], steps: tuple[str, ...], concurrency: int, json_: bool
) -> None:
    """Run the plan's automated checks in parallel and journal every result.

    Exit 0 when every required check passed, 1 when one failed, 2 on bad input.

    Example: changeover check --stage pre-deployment
    """
    from changeover.engine.check import exit_code
    from changeover.engine.runbook import Runbook
    from changeover.ui import check_table, live_progress

    live = live_progress(out, enabled=not json_ and out.is_terminal)
    with Runbook.open(plan) as runbook, live as progress:
        outcomes = runbook.check(
            stage_ids=stages, step_ids=steps, concurrency=concurrency, progress=progress
        )
    code = exit_code(outcomes)
    if json_:
        _print_json({"results": [o.to_json() for o in outcomes], "exit_code": code})
    else:
        out.print(check_table(outcomes))
    sys.exit(code)


@cli.command()
@click.argument("step")
@click.option("--by", required=True, help="Who signs off.")
@click.option("--note", help="Why / what was checked.")
@plan_option
@json_option
def signoff(step: str, by: str, note: str | None, plan: Path, json_: bool) -> None:
    """Sign off a step (a manual item, or accept a failed check), journaled with who and when.

    Example: changeover signoff war-room --by "Ana (deployment lead)" --note "bridge open"
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        event = runbook.signoff(step, by=by, note=note)
    if json_:
        _print_json({"seq": event.seq, "hash": event.hash, "step": step, "by": by})
    else:
        out.print(f"signed off {step} by {by} (journal event {event.seq})")


@cli.command()
@click.argument("text")
@click.option("--by", required=True, help="Who writes the note.")
@plan_option
def note(text: str, by: str, plan: Path) -> None:
    """Add a note to the journal (the checklist's "space for cutover notes"); shown in reports.

    Example: changeover note "DNS TTL lowered to 60s" --by Ana
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        event = runbook.note(text, by=by)
    out.print(f"noted (journal event {event.seq})")


@cli.command()
@click.argument("name", required=False)
@json_option
def probes(name: str | None, json_: bool) -> None:
    """List the probes a plan can use, or one probe's parameters.

    Example: changeover probes postgres.replication
    """
    from changeover.probes.base import load_all
    from changeover.ui import probe_table, probe_view

    registry = load_all()
    if name is not None and name not in registry:
        from changeover.errors import UsageError
        from changeover.plan.model import suggest

        raise UsageError(f"unknown probe {name!r}{suggest(name, registry)}")
    chosen = [registry[name]] if name else [registry[n] for n in sorted(registry)]
    if json_:
        _print_json(
            [
                {
                    "name": p.name,
                    "summary": p.summary,
                    "system_kinds": list(p.system_kinds),
                    "parameters": p.Params.model_json_schema(),
                }
                for p in chosen
            ]
        )
    elif name:
        probe_view(out, chosen[0])
    else:
        out.print(probe_table(chosen))


@cli.command()
@plan_option
@click.option("--all", "all_", is_flag=True, help="List every step, not only open ones.")
@json_option
def status(plan: Path, all_: bool, json_: bool) -> None:
    """Show what is done, failed, due now and overdue, relative to cutover_at.

    Example: changeover status --all
    """
    from changeover.engine.runbook import Runbook
    from changeover.ui import status_view

    with Runbook.open(plan) as runbook:
        state = runbook.state()
    if json_:
        _print_json(state.to_json())
    else:
        status_view(out, state, show_all=all_)


@cli.command()
@plan_option
@click.option(
    "--format",
    "-f",
    "format_",
    type=click.Choice(["html", "md", "json"]),
    help="html (one self-contained file), md or json [default: from -o's suffix, else md].",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (default: stdout).",
)
@click.option(
    "--journal",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Report from this `changeover journal export` file instead of the plan's journal.",
)
def report(plan: Path, format_: str | None, output: Path | None, journal: Path | None) -> None:
    """Write the cutover report: the 13 success criteria PASS/FAIL/UNKNOWN with evidence, charts,
    phases, timeline, decisions, rollbacks, incidents, sign-offs, notes and every runbook item.

    Exit 0 when written, 2 when there is no journal; 4 (the report is still written, marked)
    when the journal's hash chain is broken.

    Example: changeover report --format html -o report.html
    """
    from changeover.report import render
    from changeover.report.build import load_report

    if format_ is None:
        suffix = output.suffix.lower().lstrip(".") if output is not None else ""
        format_ = {"htm": "html", "html": "html", "json": "json"}.get(suffix, "md")
    made = load_report(plan, journal=journal)
    text = render(made, format_)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            from changeover.errors import UsageError

            raise UsageError(f"cannot write the report to {output}: {exc.strerror}") from exc
        counts = made.counts()
        out.print(
            f"wrote {output}: {made.outcome}; criteria {counts['PASS']} pass, "
            f"{counts['FAIL']} fail, {counts['UNKNOWN']} unknown",
            markup=False,
        )
    if not made.journal.ok:
        err.print(f"journal TAMPERED: {made.journal.problem}", markup=False)
        sys.exit(4)


@cli.group(context_settings=CONTEXT)
def journal() -> None:
    """Verify or export the journal (the hash-chained log of everything done)."""


@journal.command("verify")
@plan_option
@json_option
def journal_verify(plan: Path, json_: bool) -> None:
    """Check the journal's hash chain; exit 4 naming the first bad event if it was tampered with.

    Example: changeover journal verify
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        result = runbook.journal.verify()
    if json_:
        _print_json(result.to_json())
    elif result.ok:
        out.print(f"journal ok: {result.count} events, head {result.head_hash}")
    else:
        err.print(f"journal TAMPERED: {result.problem}", markup=False)
    if not result.ok:
        sys.exit(4)


@journal.command("export")
@plan_option
@click.option("--output", "-o", type=click.Path(path_type=Path), help="JSONL file to write.")
def journal_export(plan: Path, output: Path | None) -> None:
    """Write every journal event as JSON Lines.

    Example: changeover journal export -o journal.jsonl
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        if output is None:
            runbook.journal.export(sys.stdout)
            return
        with output.open("w", encoding="utf-8") as fp:
            count = runbook.journal.export(fp)
    out.print(f"wrote {count} events to {output}")


@cli.group(context_settings=CONTEXT)
def notify() -> None:
    """Notifications to the plan's channels (Slack, PagerDuty, email, webhooks)."""


@notify.command("test")
@plan_option
@json_option
def notify_test(plan: Path, json_: bool) -> None:
    """Send a test notification to every channel of the plan's notify: list; exit 1 if one fails.

    Example: changeover notify test
    """
    import asyncio

    from changeover.engine.runbook import Runbook
    from changeover.errors import UsageError
    from changeover.notify import Notification, notifier_for

    with Runbook.open(plan) as runbook:
        if not runbook.plan.notify:
            raise UsageError("the plan has no notification channels: add notify: ['${SLACK_URL}']")
        # One quick retry: an operator testing channels wants the answer in seconds.
        notifier = notifier_for(
            runbook.plan, runbook.journal, base_dir=runbook.loaded.base_dir, retry_delays=(1.0,)
        )
        message = Notification("test", f"{runbook.plan.name}: notification test", "Test message.")
        deliveries = asyncio.run(notifier.deliver(message))
    if json_:
        _print_json([d.to_json() for d in deliveries])
    else:
        for d in deliveries:
            tries = f" after {d.attempt} attempts" if d.attempt > 1 else ""
            failed = f"FAILED     {d.channel}{tries}: {d.reason}"
            out.print(f"delivered  {d.channel}" if d.ok else failed, markup=False)
    if not all(d.ok for d in deliveries):
        sys.exit(1)


@cli.group(context_settings=CONTEXT)
def route() -> None:
    """Show or set the traffic split through the plan's router (built-in, HAProxy or nginx)."""


@route.command("show")
@plan_option
@click.option("--router", "router_name", help="Router system of the plan (if several).")
@json_option
def route_show(plan: Path, router_name: str | None, json_: bool) -> None:
    """Show the weights the router applies now and its per-server counters.

    Example: changeover route show
    """
    import asyncio

    from changeover.engine.runbook import Runbook
    from changeover.traffic.route import open_plan_router
    from changeover.ui import route_table

    async def read() -> tuple[Any, Any]:
        router = open_plan_router(runbook, router_name)[1]
        try:
            return await router.weights(), await router.stats()
        finally:
            await router.close()

    with Runbook.open(plan) as runbook:
        weights, stats = asyncio.run(read())
    if json_:
        _print_json(
            {
                "weights": dict(weights.percent),
                "servers": dict(weights.servers),
                "instances": [vars(i) | {"responses": dict(i.responses)} for i in stats.instances],
            }
        )
    else:
        out.print(f"weights: {weights.describe()}")
        out.print(route_table(stats))


@route.command("set")
@click.argument("weights", nargs=-1, required=True)
@plan_option
@click.option("--router", "router_name", help="Router system of the plan (if several).")
@json_option
def route_set(weights: tuple[str, ...], plan: Path, router_name: str | None, json_: bool) -> None:
    """Set the traffic split, e.g. legacy=90 new=10; read back and journaled.

    Example: changeover route set legacy=90 new=10
    """
    import asyncio

    from changeover.engine.runbook import Runbook
    from changeover.traffic.route import open_plan_router, parse_weights, set_route

    async def apply() -> Any:
        name, router = open_plan_router(runbook, router_name)
        try:
            backends = [s for s, sys_ in runbook.plan.systems.items() if sys_.kind == "app"]
            return await set_route(runbook, router, name, parse_weights(weights, backends))
        finally:
            await router.close()

    with Runbook.open(plan) as runbook:
        observed = asyncio.run(apply())
    if json_:
        _print_json({"weights": dict(observed.percent), "servers": dict(observed.servers)})
    else:
        out.print(f"router now applies: {observed.describe()}")


@cli.group(context_settings=CONTEXT)
def proxy() -> None:
    """The built-in proxy: changeover's own data plane (weights, write owner, hold, mirror)."""


@proxy.command("serve")
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Proxy config file (YAML).",
)
def proxy_serve(config: Path) -> None:
    """Run the built-in proxy until SIGTERM/SIGINT, then drain in-flight requests.

    Example: changeover proxy serve --config proxy.yaml
    """
    import asyncio

    from changeover.proxy.app import serve
    from changeover.proxy.config import load_proxy_config

    loaded = load_proxy_config(config)

    def ready(server: Any, token_path: Path | None) -> None:
        listen = loaded.config.listen
        admin = loaded.config.admin
        out.print(
            f"proxy listening on {listen.host}:{server.port}; admin API on "
            f"{admin.host}:{server.admin_port}"
            + (f"; admin token in {token_path}" if token_path else "")
        )
        sys.stdout.flush()

    try:
        import uvloop

        uvloop.run(serve(loaded, ready=ready))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(serve(loaded, ready=ready))


@cli.command()
@click.option("--json", "json_", is_flag=True, help="Progress and results as JSON lines.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo's plan, journal, logs and report here (default: a temporary directory).",
)
@click.option(
    "--fault",
    type=click.Choice(["error-spike", "latency", "leak"]),
    help="Make the new app misbehave in phase 2 and watch the automatic rollback.",
)
def demo(json_: bool, workdir: Path | None, fault: str | None) -> None:
    """The whole cutover on this machine: embedded PostgreSQL and Redis, a legacy and a new
    app, the built-in proxy and load; checks, migration, live sync, 10 → 50 → 100 %, handoff,
    verification and a report. Exit 0 when it ended as it should with nothing lost.

    Example: changeover demo --fault error-spike
    """
    from changeover.demo.scenario import run_demo

    sys.exit(run_demo(out, json_output=json_, workdir=workdir, fault=fault))


from changeover.cli_advise import advise  # noqa: E402
from changeover.cli_dashboard import dashboard  # noqa: E402
from changeover.cli_documents import runbook as runbook_document  # noqa: E402
from changeover.cli_drill import drill  # noqa: E402
from changeover.cli_export import export  # noqa: E402
from changeover.cli_loadtest import loadtest  # noqa: E402
from changeover.cli_migrate import migrate  # noqa: E402  (registered after cli exists)
from changeover.cli_rollout import approve, do, rollback, run, signal  # noqa: E402
from changeover.cli_watch import stability, watch  # noqa: E402

cli.add_command(migrate)
cli.add_command(run)
cli.add_command(approve)
cli.add_command(rollback)
cli.add_command(signal)
cli.add_command(do)
cli.add_command(loadtest)
cli.add_command(drill)
cli.add_command(export)
cli.add_command(runbook_document)
cli.add_command(dashboard)
cli.add_command(watch)
cli.add_command(stability)
cli.add_command(advise)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: the error boundary and exit codes."""
    try:
        result = cli.main(args=argv, prog_name="changeover", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("interrupted")
        return 130
    except click.ClickException as exc:
        err.print(f"error: {REDACTOR.scrub(exc.format_message())}", markup=False)
        return 2  # every click error is a problem with the command line: bad input
    except ChangeoverError as exc:
        err.print(f"error: {REDACTOR.scrub(str(exc))}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
