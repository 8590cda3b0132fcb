"""The runbook report (Markdown or JSON): every item with its latest result and evidence.

Rendered from a ``RunbookState`` (a projection of the journal), in the plan's stage/section
order, with sign-offs, what is due and overdue, and the journal's head hash so that a reader
can tell which journal the report was made from. All text passes through the redactor.
"""

from __future__ import annotations

import json
from typing import Any

from changeover.engine.state import RunbookState, State, StepState, Timing
from changeover.secrets import REDACTOR

_MARK = {
    State.DONE: "✅",
    State.FAILED: "❌",
    State.PENDING: "⬜",
    State.LATER: "⏳",
}


def report_json(state: RunbookState, *, journal_head: str | None = None) -> str:
    data = state.to_json()
    data["journal_head"] = journal_head
    return json.dumps(REDACTOR.scrub_value(data), indent=2, ensure_ascii=False) + "\n"


def report_markdown(state: RunbookState, *, journal_head: str | None = None) -> str:
    plan = state.plan
    by_id = {s.step.id: s for s in state.steps}
    summary = state.summary()
    lines = [
        f"# {plan.name}",
        "",
        f"- Cutover at: {plan.cutover_at.isoformat()}",
        f"- Report made: {state.now.isoformat(timespec='seconds')}",
        f"- Journal: {state.events} events" + (f", head `{journal_head}`" if journal_head else ""),
        f"- Items: {summary['total']} — {summary['done']} done, {summary['failed']} failed, "
        f"{summary['pending']} pending, {summary['later']} automated later; "
        f"{summary['due']} due now, {summary['overdue']} overdue",
        "",
    ]
    overdue = [s for s in state.steps if s.timing == Timing.OVERDUE]
    if overdue:
        lines += ["## Overdue", ""]
        lines += [f"- **{s.step.title}** (`{s.step.id}`), due {_at(s)}" for s in overdue]
        lines.append("")

    for stage in plan.stages:
        heading = stage.title if not stage.part else f"{stage.part} — {stage.title}"
        lines += [f"## {heading}", ""]
        if stage.window is not None:
            first = by_id[next(stage.steps()).id]
            lines += [f"Window: opens {_dt(first.opens_at)}, due {_dt(first.due_at)}", ""]
        if stage.phase is not None:
            phase = stage.phase
            lines.append(f"Traffic phase: {phase.weight:g}% to the new app")
            if phase.decision is not None:
                lines.append(f"Decision point ({phase.decision.mode}): {phase.decision.title}")
            lines.append("")
        for section in stage.sections:
            lines += [f"### {section.title}", ""]
            for step in section.steps:
                lines += _item(by_id[step.id])
            lines.append("")

    for group, title in (
        ("immediate", "Immediate rollback if"),
        ("graceful", "Graceful rollback if"),
    ):
        steps = getattr(plan.rollback, group)
        if steps:
            lines += [f"## {title}", ""]
            for step in steps:
                lines += _item(by_id[step.id])
            lines.append("")
    if plan.success_criteria:
        lines += ["## Success criteria", ""]
        for step in plan.success_criteria:
            lines += _item(by_id[step.id])
        lines.append("")
    if plan.contacts:
        lines += ["## Contacts", "", "| Role | Person | Phone | Slack |", "|---|---|---|---|"]
        lines += [f"| {c.title} | {c.name} | {c.phone} | {c.slack} |" for c in plan.contacts]
        lines.append("")
    if state.notes:
        lines += ["## Notes", ""]
        lines += [f"- {n['at']} {n['by']}: {n['text']}" for n in state.notes]
        lines.append("")
    return REDACTOR.scrub("\n".join(lines))


def _item(item: StepState) -> list[str]:
    mark = _MARK[item.state]
    extra = ""
    if item.timing == Timing.OVERDUE:
        extra = " — **overdue**"
    elif item.timing == Timing.DUE:
        extra = " — due now"
    lines = [f"- {mark} {item.step.title} (`{item.step.id}`, {item.automation}){extra}"]
    result = item.last_result
    if result is not None:
        lines.append(
            f"  - {result['status'].upper()} at {item.last_checked_at}: {result['reason']}"
        )
        for probe in result.get("probes", []):
            for measure in probe.get("evidence", []):
                lines.append(f"    - {probe['probe']}: {_measure(measure)}")
    for signoff in item.signoffs:
        note = f" — {signoff.note}" if signoff.note else ""
        lines.append(f"  - signed off by {signoff.by} at {signoff.at}{note}")
    if item.state == State.PENDING and item.step.manual is not None:
        lines.append(f"  - awaiting sign-off by {item.step.manual.role}")
    return lines


def _measure(measure: dict[str, Any]) -> str:
    text = f"{measure['name']} = {measure['value']}"
    if measure.get("unit"):
        text += f" {measure['unit']}"
    if measure.get("expected") is not None:
        text += f" (expected {measure['expected']})"
    if measure.get("ok") is False:
        text += " ✗"
    return text


def _dt(value: Any) -> str:
    return value.isoformat(timespec="minutes") if value is not None else "—"


def _at(item: StepState) -> str:
    return _dt(item.due_at)
