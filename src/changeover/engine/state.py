"""The runbook's state as a projection of the journal: what is done, failed, due and overdue.

``project(plan, events, now)`` is pure: it folds ``check.result`` and ``signoff`` events into one
``StepState`` per step and places each against its stage's window (relative to ``cutover_at``).
``status`` and ``report`` render this projection; nothing here reads or writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from changeover.actions import ACTIONS
from changeover.engine.gatecheck import checkable
from changeover.journal import CHECK_RESULT, NOTE, SIGNOFF
from changeover.plan.model import Plan, Stage, Step


class State(StrEnum):
    DONE = "done"  # checked and passed, or signed off
    FAILED = "failed"  # the latest check failed or errored
    PENDING = "pending"  # not checked / not signed off yet
    LATER = "later"  # automated by a capability that is not part of this release yet


class Timing(StrEnum):
    UPCOMING = "upcoming"  # its window has not opened
    DUE = "due"  # window open, not done
    OVERDUE = "overdue"  # past due, not done
    UNSCHEDULED = "unscheduled"  # no window (traffic phases run when the rollout gets there)
    COMPLETE = "complete"


@dataclass(frozen=True)
class Signoff:
    by: str
    at: str
    note: str | None
    seq: int


@dataclass
class StepState:
    step: Step
    stage: Stage | None
    state: State
    timing: Timing
    last_result: dict[str, Any] | None = None
    last_checked_at: str | None = None
    signoffs: list[Signoff] = field(default_factory=list)
    opens_at: datetime | None = None
    due_at: datetime | None = None

    @property
    def automation(self) -> str:
        """How the step is done: ``probe``, ``action:<capability>``, ``gate`` or ``manual``."""
        step = self.step
        if step.kind == "check":
            return "probe"
        if step.kind == "action" and step.action is not None:
            kind = ACTIONS.get(step.action.action)
            return f"action:{kind.capability}" if kind else "action"
        return step.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.step.id,
            "title": self.step.title,
            "stage": self.stage.id if self.stage else None,
            "kind": self.step.kind,
            "automation": self.automation,
            "required": self.step.required,
            "state": self.state.value,
            "timing": self.timing.value,
            "opens_at": self.opens_at.isoformat() if self.opens_at else None,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "last_checked_at": self.last_checked_at,
            "last_result": self.last_result,
            "signoffs": [
                {"by": s.by, "at": s.at, "note": s.note, "seq": s.seq} for s in self.signoffs
            ],
        }


@dataclass
class RunbookState:
    plan: Plan
    now: datetime
    steps: list[StepState]
    notes: list[dict[str, Any]]
    events: int

    def by_id(self, step_id: str) -> StepState:
        for state in self.steps:
            if state.step.id == step_id:
                return state
        raise KeyError(step_id)

    def count(self, **conditions: Any) -> int:
        return sum(1 for s in self.steps if all(getattr(s, k) == v for k, v in conditions.items()))

    def summary(self) -> dict[str, int]:
        out = {state.value: self.count(state=state) for state in State}
        out["due"] = self.count(timing=Timing.DUE)
        out["overdue"] = self.count(timing=Timing.OVERDUE)
        out["total"] = len(self.steps)
        return out

    def stage_summaries(self) -> list[dict[str, Any]]:
        """Per stage: its window, how many items are done, and whether it is open or late."""
        rows = []
        for stage in self.plan.stages:
            items = [s for s in self.steps if s.stage is stage]
            opens_at = items[0].opens_at if items else None
            due_at = items[0].due_at if items else None
            if opens_at is None:
                window = "unscheduled"
            elif self.now < opens_at:
                window = "upcoming"
            elif due_at is not None and self.now > due_at:
                window = "closed"
            else:
                window = "open"
            rows.append(
                {
                    "stage": stage.id,
                    "title": stage.title,
                    "opens_at": opens_at.isoformat() if opens_at else None,
                    "due_at": due_at.isoformat() if due_at else None,
                    "window": window,
                    "total": len(items),
                    "done": sum(1 for s in items if s.state == State.DONE),
                    "failed": sum(1 for s in items if s.state == State.FAILED),
                    "later": sum(1 for s in items if s.state == State.LATER),
                    "overdue": sum(1 for s in items if s.timing == Timing.OVERDUE),
                }
            )
        return rows

    def next_opening(self) -> tuple[Stage, datetime] | None:
        """The next stage whose window has not opened yet."""
        upcoming = [
            (s.opens_at, s.stage)
            for s in self.steps
            if s.stage is not None and s.opens_at is not None and s.opens_at > self.now
        ]
        if not upcoming:
            return None
        opens_at, stage = min(upcoming, key=lambda pair: pair[0])
        return stage, opens_at

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.name,
            "cutover_at": self.plan.cutover_at.isoformat(),
            "now": self.now.isoformat(),
            "events": self.events,
            "summary": self.summary(),
            "stages": self.stage_summaries(),
            "steps": [s.to_json() for s in self.steps],
            "notes": self.notes,
        }


def project(plan: Plan, events: Iterable[Any], now: datetime) -> RunbookState:
    """Fold journal events into the state of every step of the plan."""
    results: dict[str, tuple[str, dict[str, Any]]] = {}
    signoffs: dict[str, list[Signoff]] = {}
    notes: list[dict[str, Any]] = []
    count = 0
    for event in events:
        count += 1
        payload = event.payload
        if event.kind == CHECK_RESULT and "step" in payload:
            results[payload["step"]] = (event.ts, payload)
        elif event.kind == SIGNOFF and "step" in payload:
            signoffs.setdefault(payload["step"], []).append(
                Signoff(payload.get("by", event.actor), event.ts, payload.get("note"), event.seq)
            )
        elif event.kind == NOTE:
            notes.append({"at": event.ts, "by": event.actor, "text": payload.get("text", "")})

    states = []
    for _, stage, step in plan.located_steps():
        last = results.get(step.id)
        state = _state(step, stage, last[1] if last else None, bool(signoffs.get(step.id)))
        opens_at = due_at = None
        if stage is not None and stage.window is not None:
            opens_at = plan.cutover_at + stage.window.opens
            if stage.window.due is not None:
                due_at = plan.cutover_at + stage.window.due
        states.append(
            StepState(
                step=step,
                stage=stage,
                state=state,
                timing=_timing(state, opens_at, due_at, now),
                last_result=last[1] if last else None,
                last_checked_at=last[0] if last else None,
                signoffs=signoffs.get(step.id, []),
                opens_at=opens_at,
                due_at=due_at,
            )
        )
    return RunbookState(plan, now, states, notes, count)


def _state(step: Step, stage: Stage | None, last: dict[str, Any] | None, signed: bool) -> State:
    if signed:
        return State.DONE
    # a gate outside a traffic phase is checked like a probe (``engine.gatecheck``)
    if step.kind == "check" or checkable(stage, step):
        if last is None:
            return State.PENDING
        return State.DONE if last.get("status") in ("pass", "warn") else State.FAILED
    if step.kind == "manual":
        return State.PENDING
    return State.LATER


def _timing(
    state: State, opens_at: datetime | None, due_at: datetime | None, now: datetime
) -> Timing:
    if state == State.DONE:
        return Timing.COMPLETE
    if opens_at is None:
        return Timing.UNSCHEDULED
    if now < opens_at:
        return Timing.UPCOMING
    if due_at is not None and now > due_at:
        return Timing.OVERDUE
    return Timing.DUE
