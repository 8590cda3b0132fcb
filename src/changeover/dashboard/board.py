"""What the dashboard shows, as a projection of the journal (pure): one fold, small updates.

``Board`` folds journal events, in seq order, into the page's sections — the stage timeline and
checklist (``engine.state.project``), the rollout's position (``rollout.state.RolloutState``),
weights, each gate's latest value and verdict, the decision log, sync lag, contacts — plus the
charts' samples, phase and rollback marks, and the journal tail. ``update`` returns only what
changed since the previous call (the poller pushes that to every page); ``snapshot`` is
everything, for a page that (re)connects. Nothing here reads or writes anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changeover.engine.state import project
from changeover.journal import ACTION_OUTCOME, CHECK_RESULT, NOTE, SIGNOFF
from changeover.journal.events import Event, utc_timestamp
from changeover.plan.model import Gate, Plan, Stage, Step
from changeover.rollout.samples import SAMPLE
from changeover.rollout.state import (
    APPROVED,
    BAKE,
    DECISION_NEEDED,
    DONE,
    MONITORING,
    PHASE_PASSED,
    PHASE_STARTED,
    RESTARTED,
    ROLLBACK_DONE,
    ROLLBACK_REQUESTED,
    ROLLBACK_STARTED,
    VERDICT,
    RolloutState,
)
from changeover.units import format_duration

TAIL = 200  # journal lines a page keeps
SAMPLES = 1440  # chart points a page keeps: two hours at one sample every 5 s
DECISIONS = 100
MARKS = 200
# Not shown in the tail: the controller's heartbeat, the charted samples, raw window counters.
QUIET = frozenset({BAKE, SAMPLE, MONITORING})
DECISION_KINDS = frozenset(
    {
        PHASE_STARTED,
        DECISION_NEEDED,
        APPROVED,
        PHASE_PASSED,
        ROLLBACK_REQUESTED,
        ROLLBACK_STARTED,
        ROLLBACK_DONE,
        DONE,
        RESTARTED,
    }
)
_CHECKLIST_KINDS = frozenset({CHECK_RESULT, SIGNOFF, NOTE})


@dataclass
class Update:
    """One message to the page: changed sections, and new tail lines, samples and marks."""

    seq: int
    now: str
    sections: dict[str, Any] = field(default_factory=dict)
    tail: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    full: bool = False  # a snapshot: the page starts over from it

    @property
    def empty(self) -> bool:
        return not (self.sections or self.tail or self.samples or self.marks)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "now": self.now,
            "full": self.full,
            "sections": self.sections,
            "tail": self.tail,
            "samples": self.samples,
            "marks": self.marks,
        }


class Board:
    """The page's state, folded from the journal; feed it every event once, in order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.seq = 0
        self.rollout = RolloutState()
        self.live_lag: dict[str, Any] | None = None  # set by the poller's lag reader
        self.journal_error: str | None = None  # set by the poller when a read failed
        self.unreadable: list[str] = []  # events whose payload this page cannot show (why)
        self._checklist: list[Event] = []
        self._tail: deque[dict[str, Any]] = deque(maxlen=TAIL)
        self._samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES)
        self._marks: deque[dict[str, Any]] = deque(maxlen=MARKS)
        self._decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS)
        self._verdicts: dict[str, tuple[int, dict[str, Any]]] = {}  # gate → (seq, full verdict)
        self._sampled: dict[str, tuple[int, dict[str, Any]]] = {}  # gate → (seq, sample summary)
        self._weights: dict[str, Any] | None = None
        self._journal_lag: dict[str, Any] | None = None
        self._new: dict[str, list[dict[str, Any]]] = {"tail": [], "samples": [], "marks": []}
        self._sent: dict[str, Any] = {}

    # --- folding ---------------------------------------------------------------------------

    def fold(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.seq <= self.seq:
                continue  # read twice (a poll racing a snapshot): already folded
            try:
                self._apply(event)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # An event of a known kind with a payload of another shape (written by another
                # version or tool) is named on the page; the page goes on with the rest.
                why = f"event {event.seq} ({event.kind}) cannot be shown: {exc!r}"
                self.unreadable = [*self.unreadable[-9:], why]
            self.seq = event.seq

    def _apply(self, event: Event) -> None:
        kind, payload = event.kind, event.payload
        self.rollout.apply(event)
        if kind in _CHECKLIST_KINDS:
            self._checklist.append(event)
        if kind not in QUIET:
            self._add("tail", self._tail, line(event))
        if kind in DECISION_KINDS:
            self._decisions.append(decision(event))
        if kind in (PHASE_STARTED, RESTARTED):
            self._verdicts.clear()
            self._sampled.clear()
        if kind in (PHASE_STARTED, ROLLBACK_STARTED, ROLLBACK_DONE, RESTARTED):
            self._add("marks", self._marks, mark(event))
        if kind == VERDICT and isinstance(payload.get("verdict"), dict):
            verdict = payload["verdict"]
            self._verdicts[str(verdict.get("gate"))] = (event.seq, verdict)
        elif kind == SAMPLE:
            self._add("samples", self._samples, chart_point(event))
            for gate in payload.get("gates") or []:
                self._sampled[str(gate.get("gate"))] = (event.seq, gate)
            if payload.get("weights"):
                self._weights = {"percent": payload["weights"], "at": event.ts, "from": "sample"}
        elif kind == ACTION_OUTCOME and payload.get("ok"):
            if payload.get("action") == "route" and isinstance(payload.get("observed"), dict):
                self._weights = {"percent": payload["observed"], "at": event.ts, "from": "router"}
            detail = payload.get("detail")
            lag = detail.get("lag") if isinstance(detail, dict) else None
            if payload.get("action") == "migrate.sync" and isinstance(lag, dict):
                self._journal_lag = {**lag, "at": event.ts}

    def _add(self, name: str, kept: deque[dict[str, Any]], item: dict[str, Any]) -> None:
        kept.append(item)
        self._new[name].append(item)

    # --- what the page gets ----------------------------------------------------------------

    def sections(self, now: datetime) -> dict[str, Any]:
        """Every section of the page as JSON-able data."""
        runbook = project(self.plan, self._checklist, now)
        return {
            "plan": {"name": self.plan.name, "cutover_at": self.plan.cutover_at.isoformat()},
            "health": {"journal_error": self.journal_error, "unreadable": self.unreadable},
            "timeline": {
                "summary": runbook.summary(),
                "stages": [
                    {**row, "phase": _phase_state(self.plan.stage(row["stage"]), self.rollout)}
                    for row in runbook.stage_summaries()
                ],
            },
            "rollout": self._rollout_section(),
            "gates": self._gates_section(),
            "decisions": list(self._decisions),
            "checklist": [_step_json(s.to_json(), s.step) for s in runbook.steps],
            "notes": runbook.notes[-20:],
            "sync": {"journal": self._journal_lag, "live": self.live_lag},
            "contacts": [c.model_dump() for c in self.plan.contacts],
            "war_room": self.plan.war_room.model_dump(),
        }

    def update(self, now: datetime) -> Update:
        """What changed since the previous ``update``: sections that differ, new lines."""
        current = self.sections(now)
        changed = {k: v for k, v in current.items() if self._sent.get(k) != v}
        self._sent = current
        new, self._new = self._new, {"tail": [], "samples": [], "marks": []}
        return Update(
            self.seq,
            utc_timestamp(now),
            changed,
            tail=new["tail"],
            samples=new["samples"],
            marks=new["marks"],
        )

    def snapshot(self, now: datetime) -> Update:
        """Everything, for a page that (re)connects; does not disturb ``update``'s bookkeeping."""
        return Update(
            self.seq,
            utc_timestamp(now),
            self.sections(now),
            list(self._tail),
            list(self._samples),
            list(self._marks),
            full=True,
        )

    def _rollout_section(self) -> dict[str, Any]:
        state = self.rollout
        current = self.plan.stage(state.phase) if state.phase in self._phase_ids() else None
        phase = current.phase if current is not None else None
        return {
            "status": rollout_status(state),
            "phase": state.phase,
            "phase_title": current.title if current is not None else None,
            "weights": self._weights,
            "observed_s": state.observed_s.get(state.phase or ""),
            "bake": (
                {
                    "min_s": phase.bake.min.total_seconds(),
                    "max_s": phase.bake.max.total_seconds(),
                }
                if phase is not None and phase.bake is not None
                else None
            ),
            "decision": phase.decision.model_dump() if phase and phase.decision else None,
            "awaiting_approval": sorted(state.decision_asked - set(state.approved)),
            "approved": state.approved,
            "passed": state.passed,
            "rollback_request": state.rollback_request,
            "rollback_in_progress": state.rollback_in_progress,
            "rolled_back": state.rolled_back,
            "last_heartbeat": state.last_heartbeat,
            "phases": [
                {
                    "id": s.id,
                    "title": s.title,
                    "weight": s.phase.weight if s.phase else None,
                    "state": _phase_state(s, state),
                }
                for s in self.plan.stages
                if s.phase is not None
            ],
        }

    def _phase_ids(self) -> set[str]:
        return {s.id for s in self.plan.stages if s.phase is not None}

    def _gates_section(self) -> list[dict[str, Any]]:
        """The current phase's gates, then the rollback triggers: condition, latest numbers."""
        rows: list[dict[str, Any]] = []
        phase = self.rollout.phase
        if phase in self._phase_ids():
            for step in self.plan.stage(str(phase)).steps():
                rows += [self._gate_row(step, gate, "phase gate") for gate in step.gates]
        for group, steps in (
            ("rollback: immediate", self.plan.rollback.immediate),
            ("rollback: graceful", self.plan.rollback.graceful),
        ):
            for step in steps:
                rows += [self._gate_row(step, gate, group) for gate in step.gates]
        return rows

    def _gate_row(self, step: Step, gate: Gate, role: str) -> dict[str, Any]:
        sampled = self._sampled.get(step.id)
        verdict = self._verdicts.get(step.id)
        # The newer of the two: samples carry fresh numbers, verdicts the reason (on change).
        latest = max((x for x in (sampled, verdict) if x is not None), key=_seq, default=None)
        numbers = latest[1] if latest is not None else {}
        limit = gate.below if gate.below is not None else gate.above
        # A rate is judged as a fraction (unit ""): shown as the percentage the plan wrote.
        percent = isinstance(limit, str) and limit.strip().endswith("%")
        return {
            "gate": step.id,
            "title": step.title,
            "role": role,
            "condition": condition(gate),
            "outcome": numbers.get("outcome"),
            "observed": numbers.get("observed"),
            "bound": numbers.get("bound"),
            "threshold": numbers.get("threshold"),
            "unit": numbers.get("unit", ""),
            "percent": percent and not numbers.get("unit"),
            "samples": numbers.get("samples"),
            "reason": verdict[1].get("reason") if verdict is not None else None,
        }


def rollout_status(state: RolloutState) -> str:
    """One word for the headline: where the cutover stands."""
    if state.rolled_back is not None:
        return "rolled-back"
    if state.rollback_in_progress is not None:
        return "rolling-back"
    if state.rollback_request is not None:
        return "rollback-requested"
    if state.done:
        return "complete"
    if state.phase is not None:
        waiting = state.phase in state.decision_asked and state.phase not in state.approved
        return "awaiting-approval" if waiting else "watching"
    return "between-phases" if state.passed else "not-started"


def _phase_state(stage: Stage, state: RolloutState) -> str | None:
    if stage.phase is None:
        return None
    if stage.id in state.passed:
        return "passed"
    if stage.id == state.phase:
        if state.rolled_back is not None:
            return "rolled-back"
        if stage.id in state.decision_asked and stage.id not in state.approved:
            return "awaiting-approval"
        return "current"
    return "pending"


def condition(gate: Gate) -> str:
    """The plan's condition in words: ``error_rate of new < 3%``."""
    subject = gate.metric + (f" of {gate.of}" if gate.of else "")
    if gate.below is not None:
        text = f"{subject} < {gate.below}"
    elif gate.above is not None:
        text = f"{subject} > {gate.above}"
    elif gate.ratio is not None:
        text = f"{subject} ≤ {gate.ratio:g}× {gate.max_ratio_to}"
    elif gate.check is not None:
        text = f"{subject}: synthetic checks pass"
    else:
        text = f"{subject}: none observed"
    if gate.sustained is not None:
        text += f" (sustained {format_duration(gate.sustained)})"
    return text


def _step_json(data: dict[str, Any], step: Step) -> dict[str, Any]:
    """A checklist row without the probes' bulky evidence."""
    result = data.pop("last_result", None)
    if isinstance(result, dict):
        data["result"] = {"status": result.get("status"), "reason": result.get("reason")}
    data["role"] = step.manual.role if step.manual is not None else None
    return data


def line(event: Event) -> dict[str, Any]:
    """A journal tail line: who, when, and the event in a few plain words."""
    return {
        "seq": event.seq,
        "ts": event.ts,
        "kind": event.kind,
        "actor": event.actor,
        "text": describe(event.kind, event.payload),
    }


def chart_point(event: Event) -> dict[str, Any]:
    payload = event.payload
    return {
        "seq": event.seq,
        "ts": event.ts,
        "phase": payload.get("phase"),
        "weights": payload.get("weights"),
        "backends": payload.get("backends") or {},
    }


def mark(event: Event) -> dict[str, Any]:
    payload = event.payload
    if event.kind == PHASE_STARTED:
        kind, label = "phase", f"{payload.get('phase')} ({payload.get('weight', '?')}%)"
    elif event.kind == RESTARTED:
        kind, label = "phase", "new attempt"
    else:
        kind = "rollback"
        label = "rollback " + ("started" if event.kind == ROLLBACK_STARTED else "done")
    return {"seq": event.seq, "ts": event.ts, "kind": kind, "label": label}


def decision(event: Event) -> dict[str, Any]:
    """A decision log entry with its evidence (the verdicts the controller decided on)."""
    payload = event.payload
    evidence = payload.get("evidence")
    verdicts = evidence.get("verdicts") if isinstance(evidence, dict) else None
    return {
        "seq": event.seq,
        "ts": event.ts,
        "kind": event.kind,
        "actor": event.actor,
        "text": describe(event.kind, payload),
        "evidence": [
            {k: v.get(k) for k in ("gate", "outcome", "observed", "bound", "threshold", "reason")}
            for v in verdicts or []
            if isinstance(v, dict)
        ],
    }


def describe(kind: str, payload: Mapping[str, Any]) -> str:
    """An event in a few plain words (the journal has the full payload)."""
    get = payload.get
    if kind == ACTION_OUTCOME:
        what = get("action")
        if what == "route":
            what = f"route {_num(get('weight'))}% to new"
        done = "done" if get("ok") else f"FAILED: {get('error')}"
        return f"{get('step') or 'route'}: {what} {done}"
    if kind == "action.intent":
        return f"{get('step') or 'route'}: {get('action')} starting"
    if kind == CHECK_RESULT:
        return f"check {get('step')}: {get('status')} — {get('reason', '')}"
    if kind == SIGNOFF:
        note = f" — {get('note')}" if get("note") else ""
        return f"{get('step')} signed off by {get('by')}{note}"
    if kind == NOTE:
        return f"note: {get('text', '')}"
    if kind == VERDICT:
        verdict = get("verdict") or {}
        return f"{verdict.get('gate')}: {verdict.get('outcome')} — {verdict.get('reason', '')}"
    if kind == PHASE_STARTED:
        return f"phase {get('phase')} started ({_num(get('weight'))}% to new)"
    if kind == PHASE_PASSED:
        return f"phase {get('phase')} passed"
    if kind == DECISION_NEEDED:
        return f"phase {get('phase')}: decision needed (approve to proceed)"
    if kind == APPROVED:
        return f"phase {get('phase')} approved"
    if kind == ROLLBACK_REQUESTED:
        return f"{get('mode')} rollback requested: {get('reason')}"
    if kind == ROLLBACK_STARTED:
        return f"{get('mode')} rollback started: {get('reason')}"
    if kind == ROLLBACK_DONE:
        return f"{get('mode')} rollback done in {_num(get('seconds'))} s; writes: {get('writes')}"
    if kind == DONE:
        return "cutover complete: all traffic on the new app"
    if kind == RESTARTED:
        return f"new attempt after {get('after')}"
    subject = next((str(get(k)) for k in ("phase", "step", "metric", "title") if get(k)), "")
    return f"{kind} {subject}".strip()


def _seq(item: tuple[int, dict[str, Any]]) -> int:
    return item[0]


def _num(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return "?"
