"""What happened on the night, in order: the journal folded into phases, samples, actions,
checks, decisions, rollbacks and incidents (pure — events in, a ``Timeline`` out).

The criteria and the charts read only this; the renderers print its ``entries`` as the phase
timeline. A ``rollout.restarted`` event starts a new attempt: earlier attempts stay in the
timeline (what happened, happened), and ``attempt`` tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changeover.journal import ACTION_INTENT, ACTION_OUTCOME, CHECK_RESULT, NOTE, SIGNOFF, Event
from changeover.journal.events import NOTIFY_FAILED, NOTIFY_SENT
from changeover.rollout.samples import SAMPLE
from changeover.rollout.state import (
    APPROVED,
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
)

#: What a load generator saw from the client side, journaled when it stops (the demo does):
#: ``{"load": <loadgen summary>, "writes": {"acknowledged", "lost", ...}}``.
LOAD_RESULT = "load.result"

OK, INFO, WARN, BAD = "ok", "info", "warn", "bad"


@dataclass(frozen=True)
class Entry:
    """One line of the timeline; ``level`` bad marks an incident."""

    at: datetime
    kind: str
    text: str
    level: str = INFO
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "kind": self.kind,
            "text": self.text,
            "level": self.level,
            "seq": self.seq,
        }


@dataclass(frozen=True)
class Sample:
    """A ``rollout.sample``: each backend's numbers over the few seconds before ``at``."""

    at: datetime
    phase: str
    observed_s: float
    weights: dict[str, float] | None
    backends: dict[str, dict[str, Any]]
    gates: list[dict[str, Any]]
    attempt: int = 1


@dataclass
class PhaseRun:
    phase: str
    weight: float | None
    started_at: datetime
    attempt: int
    ended_at: datetime | None = None
    outcome: str = "in progress"  # passed | rolled back | in progress
    observed_s: float | None = None
    decision_asked_at: datetime | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "weight": self.weight,
            "attempt": self.attempt,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "outcome": self.outcome,
            "observed_s": self.observed_s,
            "decision_asked_at": _iso(self.decision_asked_at),
            "approved_by": self.approved_by,
            "approved_at": _iso(self.approved_at),
        }


@dataclass
class Rollback:
    mode: str
    reason: str
    started_at: datetime
    phase: str | None
    requested_by: str | None = None
    done_at: datetime | None = None
    seconds: float | None = None
    writes: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "phase": self.phase,
            "requested_by": self.requested_by,
            "started_at": _iso(self.started_at),
            "done_at": _iso(self.done_at),
            "seconds": self.seconds,
            "writes": self.writes,
        }


@dataclass(frozen=True)
class ActionResult:
    at: datetime
    step: str | None
    action: str
    ok: bool
    detail: dict[str, Any]
    error: str | None
    payload: dict[str, Any]
    actor: str = ""

    @property
    def weight(self) -> float | None:
        """A route's share to the new app: the controller journals ``weight``, ``changeover
        route set`` the ``weights`` of every backend."""
        weight = _number(self.payload.get("weight"))
        if weight is None and isinstance(self.payload.get("weights"), dict):
            weight = _number(self.payload["weights"].get("new"))
        return weight


@dataclass(frozen=True)
class CheckRecord:
    at: datetime
    step: str
    status: str
    reason: str
    probes: list[dict[str, Any]]


@dataclass(frozen=True)
class VerdictRecord:
    at: datetime
    phase: str
    verdict: dict[str, Any]


@dataclass
class Timeline:
    entries: list[Entry] = field(default_factory=list)
    phases: list[PhaseRun] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    verdicts: list[VerdictRecord] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    monitoring: list[tuple[datetime, str, int, dict[str, Any]]] = field(default_factory=list)
    load_results: list[dict[str, Any]] = field(default_factory=list)
    notifications: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0})
    attempts: int = 1
    done: bool = False  # the latest attempt completed
    rolled_back: bool = False  # the latest attempt ended in a rollback
    events: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def incidents(self) -> list[Entry]:
        return [e for e in self.entries if e.level == BAD]

    @property
    def decisions(self) -> list[Entry]:
        return [e for e in self.entries if e.kind in ("decision", "approval", "rollback")]

    @property
    def outcome(self) -> str:
        """completed | rolled back | in progress | not started — of the latest attempt."""
        if self.done:
            return "completed"
        if self.rolled_back:
            return "rolled back"
        if any(p.attempt == self.attempts for p in self.phases):
            return "in progress"
        return "not started"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "attempts": self.attempts,
            "first_at": _iso(self.first_at),
            "last_at": _iso(self.last_at),
            "phases": [p.to_json() for p in self.phases],
            "rollbacks": [r.to_json() for r in self.rollbacks],
            "entries": [e.to_json() for e in self.entries],
            "incidents": [e.to_json() for e in self.incidents],
            "samples": len(self.samples),
            "notifications": dict(self.notifications),
        }


def fold(events: Iterable[Event]) -> Timeline:
    """Every event, oldest first, into a ``Timeline``."""
    t = Timeline()
    open_phase: PhaseRun | None = None
    last_phase: str | None = None
    rollback_request: tuple[str, str] | None = None  # actor, reason of a pending request
    for event in events:
        t.events += 1
        at = event.time
        t.first_at = t.first_at or at
        t.last_at = at
        payload = event.payload
        kind = event.kind

        def add(
            kind_: str, text: str, level: str = INFO, *, _at: datetime = at, _seq: int = event.seq
        ) -> None:
            t.entries.append(Entry(_at, kind_, text, level, _seq))

        if kind == SAMPLE:
            t.samples.append(_sample(at, payload, t.attempts))
        elif kind == PHASE_STARTED:
            weight = _number(payload.get("weight"))
            open_phase = PhaseRun(str(payload.get("phase")), weight, at, t.attempts)
            t.phases.append(open_phase)
            last_phase = open_phase.phase
            shown = f" ({weight:g}% to the new app)" if weight is not None else ""
            add("phase", f"phase {open_phase.phase} started{shown}")
        elif kind == PHASE_PASSED:
            run = _run_of(t, payload.get("phase"))
            if run is not None:
                run.ended_at, run.outcome = at, "passed"
            observed = f" after {run.observed_s:.0f} s watched" if run and run.observed_s else ""
            add("phase", f"phase {payload.get('phase')} passed{observed}", OK)
            open_phase = None
        elif kind == MONITORING:
            start = payload.get("start")
            start = start if isinstance(start, dict) else {}
            t.monitoring.append((at, str(payload.get("phase")), t.attempts, start))
        elif kind == "rollout.bake":
            run = _run_of(t, payload.get("phase"))
            if run is not None:
                run.observed_s = _number(payload.get("observed_s"))
        elif kind == VERDICT:
            verdict = payload.get("verdict") or {}
            t.verdicts.append(VerdictRecord(at, str(payload.get("phase")), verdict))
            outcome = str(verdict.get("outcome", ""))
            if outcome != "continue":
                level = OK if outcome == "pass" else BAD
                add(
                    "verdict",
                    f"gate {verdict.get('gate')}: {_outcome(outcome)} — "
                    f"{verdict.get('reason', '')}",
                    level,
                )
        elif kind == DECISION_NEEDED:
            run = _run_of(t, payload.get("phase"))
            if run is not None:
                run.decision_asked_at = at
            add("decision", f"decision needed: proceed past {payload.get('phase')}?", WARN)
        elif kind == APPROVED:
            run = _run_of(t, payload.get("phase"))
            if run is not None:
                run.approved_by, run.approved_at = event.actor, at
            add("approval", f"{payload.get('phase')} approved by {event.actor}", OK)
        elif kind == ROLLBACK_REQUESTED:
            rollback_request = (event.actor, str(payload.get("reason", "")))
            add(
                "rollback",
                f"rollback ({payload.get('mode')}) requested by {event.actor}: "
                f"{payload.get('reason', '')}",
                BAD,
            )
        elif kind == ROLLBACK_STARTED:
            requested_by = rollback_request[0] if rollback_request else None
            rollback_request = None
            rollback = Rollback(
                mode=str(payload.get("mode", "immediate")),
                reason=str(payload.get("reason", "")),
                started_at=at,
                phase=open_phase.phase if open_phase else last_phase,
                requested_by=requested_by,
            )
            t.rollbacks.append(rollback)
            if open_phase is not None:
                open_phase.ended_at, open_phase.outcome = at, "rolled back"
                open_phase = None
            add(
                "rollback",
                f"ROLLBACK ({rollback.mode}) started in {rollback.phase or '—'}: {rollback.reason}",
                BAD,
            )
        elif kind == ROLLBACK_DONE:
            if t.rollbacks:
                done = t.rollbacks[-1]
                done.done_at = at
                done.seconds = _number(payload.get("seconds"))
                done.writes = payload.get("writes")
            t.rolled_back = True
            add(
                "rollback",
                f"rollback done: all traffic on legacy in {payload.get('seconds')} s; "
                f"writes: {payload.get('writes')}",
                WARN,
            )
        elif kind == DONE:
            t.done = True
            add("done", "cutover complete: all traffic on the new app", OK)
        elif kind == RESTARTED:
            t.attempts += 1
            t.done = t.rolled_back = False
            open_phase = None
            add("restart", f"attempt {t.attempts} started (after {payload.get('after')})", WARN)
        elif kind == ACTION_OUTCOME:
            detail = payload.get("detail")
            result = ActionResult(
                at,
                payload.get("step"),
                str(payload.get("action", "")),
                bool(payload.get("ok")),
                detail if isinstance(detail, dict) else {},
                payload.get("error"),
                payload,
                event.actor,
            )
            t.actions.append(result)
            text, level = _action_text(result)
            add("action", text, level)
        elif kind == ACTION_INTENT and payload.get("manual"):
            add(
                "action",
                f"{payload.get('action')} {payload.get('step')}: waiting to be done "
                "by hand and signed off",
                WARN,
            )
        elif kind == CHECK_RESULT and "step" in payload:
            record = CheckRecord(
                at,
                str(payload["step"]),
                str(payload.get("status", "")),
                str(payload.get("reason", "")),
                list(payload.get("probes") or []),
            )
            t.checks.append(record)
            level = OK if record.status in ("pass", "warn") else BAD
            if record.status == "warn":
                level = WARN
            add("check", f"check {record.step}: {record.status.upper()} — {record.reason}", level)
        elif kind == SIGNOFF:
            note = f": {payload['note']}" if payload.get("note") else ""
            add(
                "signoff",
                f"{payload.get('step')} signed off by {payload.get('by', event.actor)}{note}",
                OK,
            )
        elif kind == NOTE:
            add("note", f"note by {event.actor}: {payload.get('text', '')}")
        elif kind == NOTIFY_SENT:
            t.notifications["sent"] += 1
        elif kind == NOTIFY_FAILED:
            t.notifications["failed"] += 1
            add(
                "notify",
                f"notification to {payload.get('channel')} failed: {payload.get('reason')}",
                BAD,
            )
        elif kind == LOAD_RESULT:
            t.load_results.append(dict(payload))
            add("load", _load_text(payload))
    return t


def _sample(at: datetime, payload: Mapping[str, Any], attempt: int) -> Sample:
    weights = payload.get("weights")
    backends = payload.get("backends")
    gates = payload.get("gates")
    return Sample(
        at=at,
        phase=str(payload.get("phase")),
        observed_s=_number(payload.get("observed_s")) or 0.0,
        weights={str(k): float(v) for k, v in weights.items()}
        if isinstance(weights, dict)
        else None,
        backends={str(k): dict(v) for k, v in backends.items() if isinstance(v, dict)}
        if isinstance(backends, dict)
        else {},
        gates=[g for g in gates if isinstance(g, dict)] if isinstance(gates, list) else [],
        attempt=attempt,
    )


def _run_of(t: Timeline, phase: object) -> PhaseRun | None:
    for run in reversed(t.phases):
        if run.phase == phase:
            return run
    return None


def _action_text(result: ActionResult) -> tuple[str, str]:
    step = f" {result.step}" if result.step else ""
    if not result.ok:
        return f"{result.action}{step} FAILED: {result.error or 'no reason given'}", BAD
    payload, detail = result.payload, result.detail
    if result.action == "route":
        weight = result.weight
        shown = f"{weight:g}%" if weight is not None else "the weights"
        by = f" (set by hand by {result.actor})" if "weights" in payload else ""
        return f"route{step}: {shown} to the new app{by}", INFO
    if result.action == "migrate.handoff":
        pause = _number(detail.get("pause_seconds"))
        owner = detail.get("owner", payload.get("to"))
        held = f", writes held {pause:.3f} s" if pause is not None else ""
        return f"writes handed over to {owner}{held}{step}", OK
    if result.action == "migrate.verify":
        return f"verify{step}: {verify_summary(detail)}", OK if detail.get("equal") else BAD
    if payload.get("by") == "signoff":
        return f"{result.action}{step}: done by hand (signed off)", OK
    return f"{result.action}{step}: done", OK


def verify_summary(detail: Mapping[str, Any]) -> str:
    """``100,000 rows in 3 tables equal`` — from ``migrate verify``'s JSON or the demo's."""
    rows = detail.get("source_rows", detail.get("rows"))
    tables = detail.get("tables")
    in_tables = f" in {len(tables)} tables" if isinstance(tables, list) else ""
    counted = f"{rows:,} rows{in_tables}" if isinstance(rows, int) else "rows"
    if detail.get("equal"):
        return f"{counted} equal"
    differing = detail.get("differing")
    if differing is None:
        parts = [detail.get(k) for k in ("missing", "extra", "different")]
        differing = sum(p for p in parts if isinstance(p, int)) if any(parts) else None
    return f"{counted} compared, {differing if differing is not None else 'some'} differ"


def _load_text(payload: Mapping[str, Any]) -> str:
    load = payload.get("load") or {}
    writes = payload.get("writes") or {}
    parts = []
    if isinstance(load, dict) and load:
        parts.append(
            f"{load.get('achieved_rate', '?')} requests/s, {load.get('errors', '?')} errors, "
            f"p95 {(load.get('latency_ms') or {}).get('p95', '?')} ms"
        )
    if isinstance(writes, dict) and writes:
        parts.append(
            f"{writes.get('acknowledged', '?')} acknowledged writes, {writes.get('lost', '?')} lost"
        )
    return "load generator: " + ("; ".join(parts) or "no numbers")


def _outcome(outcome: str) -> str:
    return {
        "pass": "PASS",
        "fail_immediate": "FAIL (immediate rollback)",
        "fail_graceful": "FAIL (graceful rollback)",
    }.get(outcome, outcome)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
