"""``changeover export prometheus-rules``: the plan's gates and triggers as Prometheus alerts.

One rule group per stage with gates (``changeover-<stage id>``), one for the rollback triggers
and one for the success criteria. A trigger's ``sustained`` is the alert's ``for``; labels carry
the severity (immediate → critical and ``page``, graceful and phase gates → warning, success
criteria → info), the stage and the step; annotations the summary, the gate's threshold and the
command that acts. Gates with no PromQL are listed in the file's leading comment and returned
in ``skipped`` (the CLI prints them on stderr): none is dropped silently. Pure: plan → text.
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ruamel.yaml import YAML

from changeover.export.gates import PlanGate, Skipped, Watch, watch_all
from changeover.export.promql import SeriesChoice, duration
from changeover.plan.model import Plan
from changeover.units import format_duration

DEFAULT_WINDOW = timedelta(minutes=5)

_SEVERITY = {
    "immediate": "critical",
    "graceful": "warning",
    "phase": "warning",
    "stage": "info",
    "success": "info",
}
_ROLE = {
    "immediate": "Rollback trigger (immediate): while 'changeover run' runs, it moves all "
    "traffic back to legacy in one step once this has held for its sustained time.",
    "graceful": "Rollback trigger (graceful): while 'changeover run' runs, it steps traffic "
    "back to legacy once this has held for its sustained time.",
    "phase": "Phase gate: it must hold for the phase to pass; while 'changeover run' runs, a "
    "failing phase gate rolls traffic back gracefully.",
    "stage": "Stage gate: it must hold for the stage to pass.",
    "success": "Success criterion of the cutover: it must hold after the cutover.",
}


@dataclass
class RulesExport:
    """The rules file as data (``groups``) plus the gates left out of it."""

    plan_name: str
    window: timedelta
    series: SeriesChoice
    groups: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def alerts(self) -> int:
        return sum(len(group["rules"]) for group in self.groups)

    def to_yaml(self) -> str:
        """The rules file: a leading comment (what, how to check it, what is not in it)."""
        where = (
            "the built-in proxy's changeover_proxy_* series (backend label)"
            if self.series == "proxy"
            else "the applications' own series (job label = system name)"
        )
        lines = [
            f"# Prometheus alerting rules for the cutover plan {_one_line(self.plan_name)!r},",
            "# written by 'changeover export prometheus-rules'.",
            f"# Rates and quantiles over {format_duration(self.window)}, read from {where}.",
            "# Check: promtool check rules FILE; load it from rule_files: in prometheus.yml.",
        ]
        if self.skipped:
            lines.append("# not exported (no PromQL; 'changeover run' still watches them itself):")
            lines += [f"#   {_one_line(str(s))}" for s in self.skipped]
        out = io.StringIO()
        yaml = YAML()  # round-trip: keys stay in the order written (alert, expr, for, ...)
        yaml.default_flow_style = False
        yaml.width = 1 << 16  # one line per expression: promtool's errors then name the line
        yaml.dump({"groups": self.groups}, out)
        return "\n".join(lines) + "\n" + out.getvalue()


def prometheus_rules(
    plan: Plan,
    *,
    window: timedelta = DEFAULT_WINDOW,
    series: SeriesChoice = "app",
    plan_file: str | None = None,
) -> RulesExport:
    """The plan's gates as alerting rules; ``plan_file`` goes into the rollback command shown.

    ``ValueError`` when ``window`` is shorter than PromQL can say (a millisecond).
    """
    duration(window)
    export = RulesExport(plan.name, window, series)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for at, watched in watch_all(plan, series=series, window=window):
        if isinstance(watched, Skipped):
            export.skipped.append(watched)
        else:
            grouped.setdefault(_group_name(at), []).append(_rule(at, watched, plan_file))
    export.groups = [{"name": name, "rules": rules} for name, rules in grouped.items()]
    return export


def _group_name(at: PlanGate) -> str:
    return "changeover-rollback-triggers" if at.group == "rollback" else f"changeover-{at.group}"


def _rule(at: PlanGate, watched: Watch, plan_file: str | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": at.name, "expr": watched.condition}
    if at.trigger and at.gate.sustained is not None:
        rule["for"] = duration(at.gate.sustained)
    labels = {"severity": _SEVERITY[at.role], "phase": at.group, "step": at.step.id}
    if at.trigger:
        labels["rollback"] = at.role
    if at.role == "immediate":
        labels["page"] = "true"
    if at.gate.of is not None:
        labels["system"] = at.gate.of
    rule["labels"] = labels
    about = f"{at.gate.metric} of {at.gate.of}" if at.gate.of else at.gate.metric
    rule["annotations"] = {
        "summary": f"{_literal(at.step.title)} — {about}: {_shown(watched)}",
        "description": f"{_literal(_ROLE[at.role])} Watched: {about}, {_literal(watched.wording)}.",
        "threshold": _literal(watched.wording),
        "action": _literal(_command(at, plan_file)),
    }
    return rule


def _command(at: PlanGate, plan_file: str | None) -> str:
    """The exact command that rolls back for this alert (copied into a shell by a person)."""
    mode = "--immediate" if at.role == "immediate" else "--graceful"
    reason = shlex.quote(f"{at.name}: {at.step.title}")
    command = f'changeover rollback {mode} --reason {reason} --by "$USER"'
    return command + (f" --plan {shlex.quote(plan_file)}" if plan_file else "")


def _shown(watched: Watch) -> str:
    """The alert's value in the summary, formatted by Prometheus' template functions."""
    if watched.alert_value is not None:
        return watched.alert_value
    if watched.kind == "ratio":
        return "{{ $value | humanizePercentage }}"
    if watched.kind == "histogram":
        return "{{ $value | humanizeDuration }}"
    return "{{ $value | humanize }}" + (f" {watched.unit}" if watched.unit else "")


def _literal(text: str) -> str:
    """``text`` as literal template text: label and annotation values are Go templates, and a
    title with ``{{`` in it must not become one."""
    return text.replace("{{", '{{ "{{" }}')


def _one_line(text: str) -> str:
    return " ".join(text.split())
