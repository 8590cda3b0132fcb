"""``changeover runbook``: documents generated from the plan (``changeover.documents``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from changeover.cli_common import out, plan_option


@click.command()
@plan_option
@click.option(
    "--output", "-o", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file."
)
def runbook(plan: Path, output: Path | None) -> None:
    """Write the runbook document: every step with what runs it and how to do it by hand,
    rollback procedures, contacts, dashboards, credential and communication plans.

    Made from the plan alone: nothing is checked or resolved, and no secret's value is in it.

    Example: changeover runbook -o RUNBOOK.md
    """
    from changeover.documents import runbook_markdown
    from changeover.errors import UsageError
    from changeover.plan.load import load_plan

    loaded = load_plan(plan)
    text = runbook_markdown(loaded.plan, loaded.path)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc
    out.print(f"wrote {output}", markup=False)
