"""The command line: a thin adapter over the library (``changeover.engine.runbook``).

Each command is a few lines over a library call; everything printed as a table can be printed
as ``--json``. ``main`` is the error boundary: a ``ChangeoverError`` becomes its message on
stderr and its exit code (0 ok, 1 a required check failed, 2 bad input, 3 environment failure,
4 journal tampering detected, 130 interrupted) — never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console

from changeover import __version__
from changeover.errors import ChangeoverError
from changeover.secrets import REDACTOR

app = typer.Typer(
    name="changeover",
    help="Run a production cutover as an executable runbook: checks, sign-offs, journal, report.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
journal_app = typer.Typer(
    help="Verify or export the journal (the hash-chained log of everything done).",
    no_args_is_help=True,
)
app.add_typer(journal_app, name="journal")

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column fallback.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PlanOption = Annotated[
    Path,
    typer.Option(
        "--plan",
        "-p",
        envvar="CHANGEOVER_PLAN",
        help="Plan file (env CHANGEOVER_PLAN).",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_PLAN = Path("changeover.yaml")


class ReportFormat(StrEnum):
    md = "md"
    json = "json"


def _print_json(data: Any) -> None:
    text = json.dumps(REDACTOR.scrub_value(data), indent=2, ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write changeover.yaml.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing changeover.yaml.")] = False,
) -> None:
    """Write changeover.yaml: the complete default plan made from the seed checklist.

    Example: changeover init ./cutover
    """
    from changeover.plan.default import write_default_plan

    path = write_default_plan(directory, force=force)
    out.print(f"wrote {path} — edit systems and contacts, then: changeover validate {path}")


@app.command()
def validate(
    plan: Annotated[Path, typer.Argument(help="Plan file.")] = DEFAULT_PLAN,
    json_: JsonOption = False,
) -> None:
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


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
) -> None:
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


@app.command()
def check(
    plan: PlanOption = DEFAULT_PLAN,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="Only this stage (repeatable).")
    ] = None,
    step: Annotated[
        list[str] | None, typer.Option("--step", help="Only this step (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Probes run at once.")] = 16,
    json_: JsonOption = False,
) -> None:
    """Run the plan's automated checks in parallel and journal every result.

    Exit 0 when every required check passed, 1 when one failed, 2 on bad input.

    Example: changeover check --stage pre-deployment
    """
    from changeover.engine.runbook import Runbook
    from changeover.ui import check_table, live_progress

    with Runbook.open(plan) as runbook:
        show_live = not json_ and out.is_terminal
        with live_progress(out, enabled=show_live) as progress:
            outcomes = runbook.check(
                stage_ids=stage or (),
                step_ids=step or (),
                concurrency=concurrency,
                progress=progress,
            )
    from changeover.engine.check import exit_code

    if json_:
        _print_json({"results": [o.to_json() for o in outcomes], "exit_code": exit_code(outcomes)})
    else:
        out.print(check_table(outcomes))
    raise typer.Exit(exit_code(outcomes))


@app.command()
def signoff(
    step: Annotated[str, typer.Argument(help="Id of the step to sign off.")],
    by: Annotated[str, typer.Option("--by", help="Who signs off.")],
    note: Annotated[str | None, typer.Option("--note", help="Why / what was checked.")] = None,
    plan: PlanOption = DEFAULT_PLAN,
    json_: JsonOption = False,
) -> None:
    """Sign off a step (a manual item, or accept a failed check) — journaled with who and when.

    Example: changeover signoff war-room --by "Ana (deployment lead)" --note "bridge open"
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        event = runbook.signoff(step, by=by, note=note)
    if json_:
        _print_json({"seq": event.seq, "hash": event.hash, "step": step, "by": by})
    else:
        out.print(f"signed off {step} by {by} (journal event {event.seq})")


@app.command()
def status(
    plan: PlanOption = DEFAULT_PLAN,
    all_: Annotated[
        bool, typer.Option("--all", help="List every step, not only open ones.")
    ] = False,
    json_: JsonOption = False,
) -> None:
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


@app.command()
def report(
    plan: PlanOption = DEFAULT_PLAN,
    format_: Annotated[ReportFormat, typer.Option("--format", "-f", help="md or json.")] = (
        ReportFormat.md
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
) -> None:
    """Write the runbook report: every item with its latest result, evidence and sign-offs.

    Example: changeover report --format md -o REPORT.md
    """
    from changeover.engine.report import report_json, report_markdown
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        state = runbook.state()
        head = runbook.journal.verify().head_hash
    text = (
        report_json(state, journal_head=head)
        if format_ == "json"
        else report_markdown(state, journal_head=head)
    )
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


@journal_app.command("verify")
def journal_verify(plan: PlanOption = DEFAULT_PLAN, json_: JsonOption = False) -> None:
    """Check the journal's hash chain; exit 4 and name the first bad event if it was tampered with.

    Example: changeover journal verify
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        result = runbook.journal.verify()
    if json_:
        _print_json(
            {
                "ok": result.ok,
                "count": result.count,
                "head_hash": result.head_hash,
                "first_bad_seq": result.first_bad_seq,
                "problem": result.problem,
            }
        )
    elif result.ok:
        out.print(f"journal ok: {result.count} events, head {result.head_hash}")
    else:
        err.print(f"journal TAMPERED: {result.problem}")
    if not result.ok:
        raise typer.Exit(4)


@journal_app.command("export")
def journal_export(
    plan: PlanOption = DEFAULT_PLAN,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL file.")] = None,
) -> None:
    """Write every journal event as JSON Lines.

    Example: changeover journal export -o journal.jsonl
    """
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        if output is None:
            runbook.journal.export(sys.stdout)
        else:
            with output.open("w", encoding="utf-8") as fp:
                runbook.journal.export(fp)
            out.print(f"wrote {output}")


@app.command()
def demo(
    json_: Annotated[
        bool, typer.Option("--json", help="Progress and result as JSON lines.")
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's plan and journal here (default: a temporary dir)."),
    ] = None,
) -> None:
    """Start embedded PostgreSQL (+ replica) and Redis and run the default plan's checks.

    Example: changeover demo
    """
    from changeover.demo.scenario import run_demo

    run_demo(out, json_output=json_, workdir=workdir)


def _version(value: bool) -> None:
    if value:
        out.print(f"changeover {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _configure_logging(verbose)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.scrub(super().format(record))


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: the error boundary and exit codes."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="changeover", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("interrupted")
        return 130
    except click.ClickException as exc:
        err.print(f"error: {REDACTOR.scrub(exc.format_message())}")
        return 2
    except ChangeoverError as exc:
        err.print(f"error: {REDACTOR.scrub(str(exc))}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
