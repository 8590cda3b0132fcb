"""``changeover export prometheus-rules`` and ``grafana-dashboard``: the plan for the monitoring.

Thin adapters over ``changeover.export``: load the plan as ``validate`` does, write the file (or
stdout), and print each gate left out of Prometheus on stderr as ``not exported: ...``.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import click

from changeover.cli_common import CONTEXT, err, plan_option
from changeover.errors import UsageError
from changeover.export.promql import SeriesChoice
from changeover.units import parse_duration

_output_option = click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (default: stdout).",
)
_window_option = click.option(
    "--window",
    default="5m",
    show_default=True,
    help="Rate and quantile window (rate(x[5m])); at least 4 scrape intervals.",
)
_series_option = click.option(
    "--series",
    type=click.Choice(["app", "proxy"]),
    default="app",
    show_default=True,
    help="app: the apps' own http_requests_total etc. (job = system name); proxy: the built-in "
    "proxy's changeover_proxy_* series (backend = system name).",
)


@click.group(context_settings=CONTEXT)
def export() -> None:
    """Export the plan for the monitoring around the cutover: alert rules, a dashboard."""


@export.command("prometheus-rules")
@plan_option
@_output_option
@_window_option
@_series_option
def prometheus_rules(plan: Path, output: Path | None, window: str, series: str) -> None:
    """Alerting rules from the plan's gates and rollback triggers (check with promtool).

    A group per phase, one for the rollback triggers; a trigger's sustained time is the alert's
    'for'. Gates Prometheus cannot see (synthetic checks, signals, PostgreSQL/Redis sources)
    are listed on stderr and in the file's leading comment.

    Example: changeover export prometheus-rules -o cutover-rules.yml
    """
    from changeover.export import prometheus_rules as export_rules
    from changeover.plan.load import load_plan

    loaded = load_plan(plan)
    try:
        rules = export_rules(
            loaded.plan, window=_window(window), series=_series(series), plan_file=str(plan)
        )
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from exc
    _write(rules.to_yaml(), output)
    _report(rules.skipped, f"{rules.alerts} alerts in {len(rules.groups)} groups", output)


@export.command("grafana-dashboard")
@plan_option
@_output_option
@_window_option
@_series_option
def grafana_dashboard(plan: Path, output: Path | None, window: str, series: str) -> None:
    """A Grafana dashboard JSON model: a row per phase with a panel per gate, a row per backend.

    Import it in Grafana (Dashboards → New → Import) and pick the Prometheus data source.

    Example: changeover export grafana-dashboard -o cutover-dashboard.json
    """
    from changeover.export import grafana_dashboard as export_dashboard
    from changeover.plan.load import load_plan

    loaded = load_plan(plan)
    try:
        dashboard = export_dashboard(loaded.plan, window=_window(window), series=_series(series))
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from exc
    _write(dashboard.to_json(), output)
    panels = len(dashboard.dashboard["panels"])
    _report(dashboard.skipped, f"{panels} panels", output)


def _window(text: str) -> timedelta:
    try:
        window = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from exc
    if window <= timedelta(0):
        raise UsageError(f"--window must be positive (got {text!r})")
    return window


def _series(choice: str) -> SeriesChoice:
    return cast(SeriesChoice, choice)  # click.Choice allowed only "app" and "proxy"


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc


def _report(skipped: list[Any], what: str, output: Path | None) -> None:
    for item in skipped:
        err.print(f"not exported: {item}", markup=False)
    if output is not None:
        err.print(f"wrote {output}: {what}", markup=False)
