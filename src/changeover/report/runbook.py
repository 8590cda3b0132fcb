"""The runbook section of the report: every item with its latest result, evidence and sign-offs.

``runbook_groups`` lays a ``RunbookState`` out in the plan's stage/section order (then the
rollback triggers and the success criteria) as plain data the Markdown and HTML renderers both
print; ``runbook_markdown`` / ``runbook_json`` are the runbook-only report of ``changeover
report`` before the cutover report existed, kept for their callers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from changeover.engine.state import RunbookState, State, StepState, Timing
from changeover.secrets import REDACTOR

MARK = {
    State.DONE: "✅",
    State.FAILED: "❌",
    State.PENDING: "⬜",
    State.LATER: "⏳",
}


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    state: str
    mark: str
    automation: str
    timing: str  # "" | "due now" | "overdue"
    result: str | None  # "PASS at …: reason"
    evidence: list[str]
    signoffs: list[str]
    awaiting: str | None


@dataclass(frozen=True)
class Section:
    title: str | None
    items: list[Item]


@dataclass(frozen=True)
class Group:
    heading: str
    lines: list[str] = field(default_factory=list)  # window, traffic phase, decision point
    sections: list[Section] = field(default_factory=list)


def runbook_groups(state: RunbookState) -> list[Group]:
    plan = state.plan
    by_id = {s.step.id: s for s in state.steps}
    groups = []
    for stage in plan.stages:
        lines = []
        if stage.window is not None:
            first = by_id[next(stage.steps()).id]
            lines.append(f"Window: opens {_dt(first.opens_at)}, due {_dt(first.due_at)}")
        if stage.phase is not None:
            lines.append(f"Traffic phase: {stage.phase.weight:g}% to the new app")
            if stage.phase.decision is not None:
                decision = stage.phase.decision
                lines.append(f"Decision point ({decision.mode}): {decision.title}")
        sections = [
            Section(section.title, [item(by_id[step.id]) for step in section.steps])
            for section in stage.sections
        ]
        heading = stage.title if not stage.part else f"{stage.part} — {stage.title}"
        groups.append(Group(heading, lines, sections))
    for name, heading in (
        ("immediate", "Immediate rollback if"),
        ("graceful", "Graceful rollback if"),
    ):
        steps = getattr(plan.rollback, name)
        if steps:
            groups.append(Group(heading, [], [Section(None, [item(by_id[s.id]) for s in steps])]))
    if plan.success_criteria:
        items = [item(by_id[s.id]) for s in plan.success_criteria]
        groups.append(Group("Success criteria (plan steps)", [], [Section(None, items)]))
    return groups


def item(state: StepState) -> Item:
    timing = {Timing.OVERDUE: "overdue", Timing.DUE: "due now"}.get(state.timing, "")
    result = state.last_result
    shown = evidence = None
    if result is not None:
        shown = f"{result['status'].upper()} at {state.last_checked_at}: {result['reason']}"
        evidence = [
            f"{probe['probe']}: {_measure(measure)}"
            for probe in result.get("probes", [])
            for measure in probe.get("evidence", [])
        ]
    signoffs = [
        f"signed off by {s.by} at {s.at}" + (f" — {s.note}" if s.note else "")
        for s in state.signoffs
    ]
    awaiting = None
    if state.state == State.PENDING and state.step.manual is not None:
        awaiting = f"awaiting sign-off by {state.step.manual.role}"
    return Item(
        id=state.step.id,
        title=state.step.title,
        state=state.state.value,
        mark=MARK[state.state],
        automation=state.automation,
        timing=timing,
        result=shown,
        evidence=evidence or [],
        signoffs=signoffs,
        awaiting=awaiting,
    )


def item_markdown(entry: Item) -> list[str]:
    extra = {"overdue": " — **overdue**", "due now": " — due now"}.get(entry.timing, "")
    lines = [f"- {entry.mark} {entry.title} (`{entry.id}`, {entry.automation}){extra}"]
    if entry.result is not None:
        lines.append(f"  - {entry.result}")
        lines += [f"    - {line}" for line in entry.evidence]
    lines += [f"  - {line}" for line in entry.signoffs]
    if entry.awaiting:
        lines.append(f"  - {entry.awaiting}")
    return lines


def groups_markdown(groups: list[Group], level: int = 2) -> list[str]:
    lines: list[str] = []
    for group in groups:
        lines += [f"{'#' * level} {group.heading}", ""]
        if group.lines:
            lines += [*group.lines, ""]
        for section in group.sections:
            if section.title:
                lines += [f"{'#' * (level + 1)} {section.title}", ""]
            for entry in section.items:
                lines += item_markdown(entry)
            lines.append("")
    return lines


def runbook_json(state: RunbookState, *, journal_head: str | None = None) -> str:
    data = state.to_json()
    data["journal_head"] = journal_head
    return json.dumps(REDACTOR.scrub_value(data), indent=2, ensure_ascii=False) + "\n"


def runbook_markdown(state: RunbookState, *, journal_head: str | None = None) -> str:
    """The runbook alone: summary, overdue items, every stage's items, contacts and notes."""
    plan = state.plan
    lines = [f"# {plan.name}", "", *summary_lines(state, journal_head), ""]
    overdue = [s for s in state.steps if s.timing == Timing.OVERDUE]
    if overdue:
        lines += ["## Overdue", ""]
        lines += [f"- **{s.step.title}** (`{s.step.id}`), due {_dt(s.due_at)}" for s in overdue]
        lines.append("")
    lines += groups_markdown(runbook_groups(state))
    if plan.contacts:
        lines += ["## Contacts", "", "| Role | Person | Phone | Slack |", "|---|---|---|---|"]
        lines += [f"| {c.title} | {c.name} | {c.phone} | {c.slack} |" for c in plan.contacts]
        lines.append("")
    if state.notes:
        lines += ["## Notes", ""]
        lines += [f"- {n['at']} {n['by']}: {n['text']}" for n in state.notes]
        lines.append("")
    return REDACTOR.scrub("\n".join(lines))


def summary_lines(
    state: RunbookState, journal_head: str | None, *, journal: bool = True
) -> list[str]:
    summary = state.summary()
    head = f", head `{journal_head}`" if journal_head else ""
    return [
        f"- Cutover at: {state.plan.cutover_at.isoformat()}",
        f"- Report made: {state.now.isoformat(timespec='seconds')}",
        *([f"- Journal: {state.events} events{head}"] if journal else []),
        f"- Items: {summary['total']} — {summary['done']} done, {summary['failed']} failed, "
        f"{summary['pending']} pending, {summary['later']} automated later; "
        f"{summary['due']} due now, {summary['overdue']} overdue",
    ]


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
