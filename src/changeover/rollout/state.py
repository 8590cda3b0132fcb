"""The rollout's journal events and what they add up to (pure): where a cutover stands.

The controller writes every step before and after it happens; ``RolloutState.from_events``
folds the journal back into the position a restarted controller resumes from: the phases
passed, the actions already done (never repeated), the monitoring time already observed, the
window's starting counters, approvals, and any rollback asked for from another shell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from changeover.journal import ACTION_OUTCOME, SIGNOFF
from changeover.journal.events import Event

PHASE_STARTED = "rollout.phase-started"
MONITORING = "rollout.monitoring"  # the window's starting observations
BAKE = "rollout.bake"  # heartbeat: monitoring seconds observed so far in the phase
VERDICT = "rollout.verdict"
DECISION_NEEDED = "rollout.decision-needed"
APPROVED = "rollout.approved"
PHASE_PASSED = "rollout.phase-passed"
ROLLBACK_REQUESTED = "rollback.requested"
ROLLBACK_STARTED = "rollback.started"
ROLLBACK_DONE = "rollback.done"
DONE = "rollout.done"
RESTARTED = "rollout.restarted"  # `changeover run --again`: a new attempt after a rollback


@dataclass
class RolloutState:
    phase: str | None = None  # the phase in progress
    passed: list[str] = field(default_factory=list)
    actions_done: set[str] = field(default_factory=set)  # step ids whose action succeeded
    signed_off: set[str] = field(default_factory=set)
    observed_s: dict[str, float] = field(default_factory=dict)
    window: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase → start readings
    approved: dict[str, str] = field(default_factory=dict)  # phase → who
    decision_asked: set[str] = field(default_factory=set)
    rollback_request: dict[str, Any] | None = None  # asked for, not yet started
    rolled_back: dict[str, Any] | None = None  # the rollback that ended the rollout
    rollback_in_progress: dict[str, Any] | None = None
    done: bool = False
    last_heartbeat: str | None = None  # ts of the newest BAKE event
    seq: int = 0  # the newest event folded in

    @property
    def finished(self) -> bool:
        return self.done or self.rolled_back is not None

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> RolloutState:
        state = cls()
        state.update(events)
        return state

    def update(self, events: Iterable[Event]) -> RolloutState:
        """Fold more events in (the controller reads only events newer than ``seq``)."""
        for event in events:
            self.apply(event)
        return self

    def apply(self, event: Event) -> None:
        payload = event.payload
        kind = event.kind
        self.seq = max(self.seq, event.seq)
        if kind == RESTARTED:
            signed_off = self.signed_off  # a new attempt: only sign-offs carry over
            vars(self).update(vars(RolloutState()))
            self.signed_off, self.seq = signed_off, event.seq
        elif kind == PHASE_STARTED:
            self.phase = payload["phase"]
        elif kind == ACTION_OUTCOME and payload.get("ok") and "step" in payload:
            self.actions_done.add(payload["step"])
        elif kind == SIGNOFF and "step" in payload:
            self.signed_off.add(payload["step"])
        elif kind == MONITORING:
            self.window[payload["phase"]] = payload["start"]
        elif kind == BAKE:
            self.observed_s[payload["phase"]] = float(payload["observed_s"])
            self.last_heartbeat = event.ts
        elif kind == DECISION_NEEDED:
            self.decision_asked.add(payload["phase"])
        elif kind == APPROVED:
            self.approved[payload["phase"]] = event.actor
        elif kind == PHASE_PASSED:
            self.passed.append(payload["phase"])
            self.phase = None
        elif kind == ROLLBACK_REQUESTED:
            self.rollback_request = {**payload, "by": event.actor}
        elif kind == ROLLBACK_STARTED:
            self.rollback_in_progress = dict(payload)
            self.rollback_request = None
        elif kind == ROLLBACK_DONE:
            self.rolled_back = {**(self.rollback_in_progress or {}), **payload}
            self.rollback_in_progress = None
        elif kind == DONE:
            self.done = True
