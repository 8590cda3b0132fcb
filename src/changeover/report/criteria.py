"""The seed's 13 success criteria, each PASS, FAIL or UNKNOWN with its evidence (pure).

A criterion passes only on evidence from the journal: no measurement is UNKNOWN, never a pass.
Each judge below collects ``Part``s — one per source of evidence (a sample total, a gate's
verdict, a check, a sign-off) — and combines them: with ``any_`` a criterion passes when some
source shows it and none contradicts it; with ``all_`` every part must be shown. Step ids are
the default plan's (``success-*`` and the checklist's documentation and monitoring steps); a
plan without them is judged on what the journal measured, and the evidence says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from changeover.engine.state import RunbookState, State, StepState
from changeover.plan.model import Gate, Plan
from changeover.plan.seed import parse_seed_document, read_seed
from changeover.report import measures
from changeover.report.measures import GateOutcome
from changeover.report.timeline import Timeline, verify_summary
from changeover.units import parse_duration


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Criterion:
    number: int
    title: str
    status: Status
    evidence: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "status": self.status.value,
            "target": self.target,
            "evidence": list(self.evidence),
            "numbers": self.numbers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Criterion:
        return cls(
            number=int(data["number"]),
            title=str(data["title"]),
            status=Status(data["status"]),
            evidence=[str(e) for e in data.get("evidence", [])],
            numbers=dict(data.get("numbers") or {}),
            target=str(data.get("target", "")),
        )


@dataclass(frozen=True)
class Part:
    """One source of evidence; ``status`` None is context, not judged."""

    status: Status | None
    text: str


def any_(parts: Iterable[Part]) -> Status:
    judged = [p.status for p in parts if p.status is not None]
    if Status.FAIL in judged:
        return Status.FAIL
    return Status.PASS if Status.PASS in judged else Status.UNKNOWN


def all_(parts: Iterable[Part]) -> Status:
    judged = [p.status for p in parts if p.status is not None]
    if Status.FAIL in judged:
        return Status.FAIL
    if not judged or Status.UNKNOWN in judged:
        return Status.UNKNOWN
    return Status.PASS


@dataclass
class Facts:
    """What every judge may read: the plan, the runbook's state and the night's timeline."""

    plan: Plan
    state: RunbookState
    timeline: Timeline
    legacy: str = "legacy"
    new: str = "new"

    def step(self, step_id: str) -> StepState | None:
        try:
            return self.state.by_id(step_id)
        except KeyError:
            return None

    def gates(self) -> dict[str, list[Gate]]:
        """Every gate step of the plan (phases and rollback triggers): id → its gates."""
        return {s.id: s.gates for s in self.plan.all_steps() if s.gate is not None}

    def system_kind(self, name: str | None) -> str | None:
        system = self.plan.systems.get(name) if name else None
        return getattr(system, "kind", None)


Judge = Callable[[Facts], tuple[Status, list[Part], dict[str, Any], str]]
JUDGES: dict[int, Judge] = {}


def judge(number: int) -> Callable[[Judge], Judge]:
    def register(function: Judge) -> Judge:
        JUDGES[number] = function
        return function

    return register


def seed_titles() -> dict[int, str]:
    return {c.number: c.text for c in parse_seed_document(read_seed()).criteria}


def evaluate(plan: Plan, state: RunbookState, timeline: Timeline) -> list[Criterion]:
    facts = Facts(plan, state, timeline)
    out = []
    for number, title in sorted(seed_titles().items()):
        status, parts, numbers, target = JUDGES[number](facts)
        evidence = [p.text for p in parts] or ["nothing in the journal bears on this"]
        out.append(Criterion(number, title, status, evidence, numbers, target))
    return out


# --- 1 data integrity --------------------------------------------------------------------------


@judge(1)
def data_integrity(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = "the last migrate.verify finds every row equal"
    verifies = [a for a in f.timeline.actions if a.action == "migrate.verify"]
    if not verifies:
        return _unknown(
            "no migrate.verify result in the journal: the plan needs a migrate.verify step "
            "(the default plan: success-data-migration-verified) run by changeover run",
            target,
        )
    last = verifies[-1]
    where = f"{last.step or 'verify'} at {_hms(last.at)}"
    runs = f" ({len(verifies)} verify runs; the last counts)" if len(verifies) > 1 else ""
    numbers: dict[str, Any] = {
        k: last.detail.get(k)
        for k in ("source_rows", "rows", "differing", "missing", "extra", "different")
        if k in last.detail
    }
    numbers["equal"] = last.ok and last.detail.get("equal", True) is not False
    if numbers["equal"]:
        part = Part(Status.PASS, f"{where}: {verify_summary(last.detail)}{runs}")
    else:
        why = last.error or verify_summary(last.detail)
        part = Part(Status.FAIL, f"{where}: {why}{runs}")
    return part.status or Status.UNKNOWN, [part], numbers, target


# --- 2 zero downtime ---------------------------------------------------------------------------

FLIP_ERRORS = 0.001  # errors between watch windows at or under 0.1 % of requests: ≈ 0


@judge(2)
def zero_downtime(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    bound_s = _gate_limit_s(f, "success-zero-downtime") or 1.0
    target = (
        f"writes held under {bound_s:g} s at the handoff, and ≤ {FLIP_ERRORS:.1%} of requests "
        "failing around the route changes"
    )
    parts: list[Part] = []
    numbers: dict[str, Any] = {"bound_s": bound_s}
    handoffs = [
        a
        for a in f.timeline.actions
        if a.action == "migrate.handoff" and a.ok and _num(a.detail.get("pause_seconds"))
    ]
    if handoffs:
        longest = max(handoffs, key=lambda a: a.detail["pause_seconds"])
        hold = float(longest.detail["pause_seconds"])
        numbers["longest_write_hold_s"] = hold
        ok = hold < bound_s
        parts.append(
            Part(
                Status.PASS if ok else Status.FAIL,
                f"longest write hold {hold:.3f} s (handoff to {longest.detail.get('owner')} at "
                f"{_hms(longest.at)}; bound {bound_s:g} s)",
            )
        )
    else:
        parts.append(Part(None, "no write handoff in the journal: writes never waited"))
    found = measures.gaps(f.timeline, f.new)
    if found is None or not found:
        parts.append(
            Part(
                Status.UNKNOWN,
                "errors during the route changes not measured: the journal has no error-rate "
                f"reading of {f.new} at the start of two consecutive watch windows",
            )
        )
    else:
        requests = sum(g.requests for g in found)
        errors = sum(g.errors for g in found)
        rate = errors / requests if requests else 0.0
        numbers.update(flip_requests=requests, flip_errors=errors)
        changes = ", ".join(f"{g.after} → {g.before}" for g in found)
        parts.append(
            Part(
                Status.PASS if rate <= FLIP_ERRORS else Status.FAIL,
                f"{errors:,} of {requests:,} requests to {f.new} failed (5xx or unanswered) "
                f"between watch windows, across the route changes {changes}",
            )
        )
    if f.timeline.rollbacks:
        parts.append(
            Part(None, "requests during the rollback itself are not sampled (see the charts)")
        )
    return all_(parts), parts, numbers, target


# --- 3 availability ----------------------------------------------------------------------------

AVAILABILITY = 0.99


@judge(3)
def availability(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = f"≥ {AVAILABILITY:.0%} of requests answered without a 5xx"
    parts: list[Part] = []
    numbers: dict[str, Any] = {}
    samples = f.timeline.samples
    full = measures.full_samples(samples, f.new)
    chosen, where = (full, "after the switch to 100%") if full else (samples, "during the cutover")
    seen = measures.traffic(chosen)
    if seen.availability is not None:
        numbers["availability"] = seen.availability
        parts.append(
            Part(
                _at_least(seen.availability, AVAILABILITY),
                f"{_pct(seen.availability, 3)} available {where} through the router: "
                f"{seen.errors:,} of {seen.requests:,} requests failed ({seen.samples} samples)",
            )
        )
    else:
        parts.append(Part(None, _no_samples()))
    for result in f.timeline.load_results:
        load = result.get("load") or {}
        sent, errors = load.get("sent"), load.get("errors")
        if isinstance(sent, int) and sent and isinstance(errors, int):
            share = 1 - errors / sent
            numbers["client_availability"] = share
            parts.append(
                Part(
                    _at_least(share, AVAILABILITY),
                    f"{_pct(share, 3)} as the load generator saw it over the whole night: "
                    f"{errors:,} of {sent:,} requests failed or went unanswered",
                )
            )
    parts += _step_parts(f, "success-availability")
    return any_(parts), parts, numbers, target


# --- 4 error rate ------------------------------------------------------------------------------

ERROR_RATE, ERROR_TARGET = 0.01, 0.001


@judge(4)
def error_rate(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = f"< {ERROR_RATE:.0%} of the new app's requests fail (target {ERROR_TARGET:.1%})"
    parts: list[Part] = []
    numbers: dict[str, Any] = {}
    chosen, where = _new_traffic(f)
    seen = measures.traffic(chosen, f.new)
    if seen.error_rate is not None:
        rate = seen.error_rate
        numbers["error_rate"] = rate
        aim = "target met" if rate < ERROR_TARGET else f"above the {ERROR_TARGET:.1%} target"
        parts.append(
            Part(
                Status.PASS if rate < ERROR_RATE else Status.FAIL,
                f"{_pct(rate, 3)} of the {f.new} app's requests failed {where}: "
                f"{seen.errors:,} of {seen.requests:,} ({aim})",
            )
        )
    else:
        parts.append(Part(None, _no_samples(f.new)))
    parts += _gate_parts(f, lambda g: g.metric == "error_rate" and g.of == f.new, last_phase=True)
    return any_(parts), parts, numbers, target


# --- 5 latency ---------------------------------------------------------------------------------

P95_MS, P95_TARGET_MS = 100.0, 50.0


@judge(5)
def latency_p95(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = f"the new app's p95 < {P95_MS:g} ms (target {P95_TARGET_MS:g} ms)"
    parts: list[Part] = []
    numbers: dict[str, Any] = {}
    chosen, where = _new_traffic(f)
    seen = measures.latency(chosen, f.new, P95_MS)
    if seen is not None:
        numbers["p95"] = seen.to_json()
        aim = "target met" if seen.typical_ms < P95_TARGET_MS else "above the 50 ms target"
        parts.append(
            Part(
                _below(seen.typical_ms, P95_MS),
                f"p95 of {f.new} {where}: {seen.typical_ms:.1f} ms (per-sample p95s weighted by "
                f"requests; {aim}), worst sample {seen.worst_ms:.1f} ms; {seen.above} of "
                f"{seen.samples} samples above {P95_MS:g} ms",
            )
        )
    else:
        parts.append(Part(None, _no_samples(f.new)))
    # The controller's own test over the whole window: "fewer than 5 % slower than the limit".
    parts += _gate_parts(
        f,
        lambda g: g.metric == "latency_p95" and g.of == f.new and g.below is not None,
        last_phase=True,
    )
    return any_(parts), parts, numbers, target


# --- 6 database, 7 cache -----------------------------------------------------------------------


DATABASE_STEPS = ("success-db-performance", "stable-db-performance", "full-replication-lag")


@judge(6)
def database(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    def is_db(gate: Gate) -> bool:
        return gate.metric.startswith(("db_", "database_")) or (
            f.system_kind(gate.source) == "postgres"
        )

    parts = _gate_parts(f, is_db)
    parts += _step_parts(f, *DATABASE_STEPS)
    if not parts:
        parts.append(
            Part(
                None,
                "the plan watches no database gate (db_latency_p95, "
                "db_connections, database_errors, …)",
            )
        )
    return any_(parts), parts, {}, "every database gate and check passed"


@judge(7)
def cache(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    def is_cache(gate: Gate) -> bool:
        return gate.metric.startswith("cache_") or f.system_kind(gate.source) == "redis"

    parts = _gate_parts(f, is_cache)
    parts += _check_parts(f, lambda probes: any(p.startswith("redis.hit") for p in probes))
    for warm in (a for a in f.timeline.actions if a.action == "cache.warm"):
        if warm.ok:
            requests = warm.detail.get("requests")
            parts.append(Part(None, f"cache warmed at {_hms(warm.at)} ({requests} requests)"))
        else:
            parts.append(Part(Status.FAIL, f"cache.warm failed at {_hms(warm.at)}: {warm.error}"))
    if not any(p.status is not None for p in parts):
        parts.append(
            Part(
                None,
                "the plan watches no cache gate (cache_hit_rate, cache_issues) "
                "and no redis.hit-rate check ran",
            )
        )
    return any_(parts), parts, {}, "every cache gate and hit-rate check passed"


# --- 8 endpoints -------------------------------------------------------------------------------


@judge(8)
def endpoints(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = "every endpoint check after the switch to 100% and every synthetic gate passed"
    switched = [
        a.at
        for a in f.timeline.actions
        if a.action == "route" and a.ok and (a.weight or 0.0) >= 100
    ]
    parts: list[Part] = []
    if switched:
        parts += _check_parts(
            f, lambda probes: any(p.startswith("http") for p in probes), after=switched[-1]
        )
    parts += _gate_parts(f, lambda g: g.check is not None and _probes_http(g))
    parts += _step_parts(f, "success-endpoints")
    if not any(p.status is not None for p in parts):
        why = (
            "no HTTP check ran after the switch to 100%"
            if switched
            else "the new app never carried all traffic, and no synthetic endpoint gate ran"
        )
        parts.append(Part(None, why))
    return any_(parts), parts, {}, target


# --- 9 data loss -------------------------------------------------------------------------------


@judge(9)
def data_loss(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = "rows verified equal, and every acknowledged write found (or re-verified at handoff)"
    numbers: dict[str, Any] = {}
    parts: list[Part] = []
    verifies = [a for a in f.timeline.actions if a.action == "migrate.verify"]
    if verifies:
        last = verifies[-1]
        equal = last.ok and last.detail.get("equal", True) is not False
        summary = verify_summary(last.detail) if equal else (last.error or "rows differ")
        parts.append(Part(Status.PASS if equal else Status.FAIL, f"verify: {summary}"))
    else:
        parts.append(Part(Status.UNKNOWN, "no migrate.verify result in the journal"))
    writes_seen = False
    for result in f.timeline.load_results:
        writes = result.get("writes") or {}
        if isinstance(writes.get("lost"), int):
            writes_seen = True
            acknowledged = writes.get("acknowledged")
            numbers.update(acknowledged=acknowledged, lost=writes["lost"])
            of = f" of {acknowledged:,}" if isinstance(acknowledged, int) else ""
            parts.append(
                Part(
                    Status.PASS if writes["lost"] == 0 else Status.FAIL,
                    f"{writes['lost']}{of} acknowledged writes missing or different in the "
                    "new database (each one looked up after the cutover)",
                )
            )
    for handoff in (a for a in f.timeline.actions if a.action == "migrate.handoff" and a.ok):
        keys, drained = handoff.detail.get("verified_keys"), handoff.detail.get("drained")
        if isinstance(keys, int):
            writes_seen = True
            parts.append(
                Part(
                    Status.PASS,
                    f"handoff to {handoff.detail.get('owner')} at {_hms(handoff.at)} drained "
                    f"{drained} changes and re-verified {keys} keys inside the write hold",
                )
            )
    for rollback in f.timeline.rollbacks:
        if rollback.writes and rollback.writes.startswith("NOT"):
            parts.append(Part(Status.FAIL, f"rollback left writes {rollback.writes}"))
    parts += _gate_parts(f, lambda g: g.metric in ("data_loss", "data_corruption"), fails_only=True)
    if not writes_seen:
        parts.append(
            Part(
                Status.UNKNOWN,
                "no lost-writes evidence: neither a handoff that re-verified keys nor a load "
                "generator's record of acknowledged writes is in the journal",
            )
        )
    return all_(parts), parts, numbers, target


# --- 10 team confident, 12 documentation, 13 monitoring ----------------------------------------

TEAM_STEPS = ("success-team-confident",)
DOCUMENTATION_STEPS = (
    "success-documentation",
    "docs-updated",
    "document-issues",
    "update-runbooks",
)
DOCUMENTATION_SECTIONS = ("Documentation",)
MONITORING_STEPS = ("success-monitoring-active",)
MONITORING_SECTIONS = ("Continuous monitoring", "Automated alerts active")


@judge(10)
def team_confident(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    target = "signed off by the deployment lead after the retrospective round"
    steps = [s for s in (f.step(i) for i in TEAM_STEPS) if s is not None] or [
        s for s in f.state.steps if s.step.title.lower().startswith("team confident in stability")
    ]
    if not steps:
        return _unknown(
            "the plan has no 'Team confident in stability' step: add success-team-confident "
            "(manual) and sign it off",
            target,
        )
    parts = [_signoff_part(s) for s in steps]
    return all_(parts), parts, {}, target


@judge(11)
def performance_ratio(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    wanted = 20.0
    step = f.step("success-performance-improvement")
    for gate in step.step.gates if step else []:
        if gate.ratio:
            wanted = 1.0 / gate.ratio
    target = f"the new app's p95 at least {wanted:g}× lower than legacy's at the same load"
    found = measures.ratio(f.timeline.samples, f.legacy, f.new)
    if found is None:
        return _unknown(
            "never measured at the same load: no sample with both apps serving at an even "
            "split or at similar rates",
            target,
        )
    met = found.factor >= wanted
    faster = "faster" if found.factor >= 1 else "slower"
    shown = found.factor if found.factor >= 1 else 1 / found.factor
    part = Part(
        Status.PASS if met else Status.FAIL,
        f"{'' if met else 'not met: '}the new app is {shown:.2f}× {faster} at p95 — legacy "
        f"{found.legacy_p95_ms:.1f} ms vs new {found.new_p95_ms:.1f} ms (median of "
        f"{found.samples} samples {found.how}); the seed asks for 20-30×",
    )
    return part.status or Status.UNKNOWN, [part], {"ratio": found.to_json()}, target


@judge(12)
def documentation(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    return _steps_done(
        f,
        DOCUMENTATION_STEPS,
        DOCUMENTATION_SECTIONS,
        "documentation",
        "every documentation step of the runbook signed off",
    )


@judge(13)
def monitoring(f: Facts) -> tuple[Status, list[Part], dict[str, Any], str]:
    status, parts, numbers, target = _steps_done(
        f,
        MONITORING_STEPS,
        MONITORING_SECTIONS,
        "post-launch monitoring",
        "post-launch monitoring and alerting steps done",
    )
    samples = f.timeline.samples
    if samples:
        minutes = (samples[-1].at - samples[0].at).total_seconds() / 60
        parts.append(
            Part(
                None,
                f"changeover watched the gates for {minutes:.1f} min "
                f"({len(samples)} samples, the last at {_hms(samples[-1].at)})",
            )
        )
    sent, failed = f.timeline.notifications["sent"], f.timeline.notifications["failed"]
    if sent or failed:
        parts.append(Part(None, f"notifications: {sent} delivered, {failed} failed"))
    return status, parts, numbers, target


# --- helpers -----------------------------------------------------------------------------------


def _steps_done(
    f: Facts, ids: tuple[str, ...], sections: tuple[str, ...], what: str, target: str
) -> tuple[Status, list[Part], dict[str, Any], str]:
    chosen: list[StepState] = []
    for stage in f.plan.stages:
        for section in stage.sections:
            if section.title in sections:
                chosen += [s for s in (f.step(step.id) for step in section.steps) if s]
    chosen += [s for s in (f.step(i) for i in ids) if s is not None and s not in chosen]
    if not chosen:
        hint = "the default plan's: " + ", ".join(ids)
        hint += " and its sections " + ", ".join(f"'{name}'" for name in sections)
        return _unknown(f"the plan has no {what} steps ({hint})", target)
    done = [s for s in chosen if s.state == State.DONE]
    failed = [s for s in chosen if s.state == State.FAILED]
    waiting = [s for s in chosen if s.state in (State.PENDING, State.LATER)]
    parts = [
        Part(
            Status.PASS if not failed and not waiting else None,
            f"{len(done)} of {len(chosen)} {what} steps done",
        )
    ]
    if failed:
        parts.append(Part(Status.FAIL, "failed: " + _ids(failed)))
    if waiting:
        parts.append(Part(Status.UNKNOWN, "not done yet: " + _ids(waiting)))
    numbers = {"done": len(done), "total": len(chosen)}
    return all_(parts), parts, numbers, target


def _ids(steps: list[StepState], limit: int = 6) -> str:
    names = [s.step.id for s in steps]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _signoff_part(state: StepState) -> Part:
    if state.signoffs:
        s = state.signoffs[-1]
        note = f": {s.note}" if s.note else ""
        return Part(Status.PASS, f"{state.step.id} signed off by {s.by} at {s.at}{note}")
    role = state.step.manual.role if state.step.manual else "its owner"
    return Part(
        Status.UNKNOWN,
        f"{state.step.id} awaits sign-off by {role} (changeover signoff {state.step.id} --by NAME)",
    )


def _step_parts(f: Facts, *step_ids: str) -> list[Part]:
    """A plan step's latest check result or sign-off, when the journal has one."""
    parts = []
    for step_id in step_ids:
        state = f.step(step_id)
        if state is None:
            continue
        if state.last_result is not None:
            status = str(state.last_result.get("status", ""))
            judged = Status.PASS if status in ("pass", "warn") else Status.FAIL
            parts.append(
                Part(
                    judged,
                    f"check {step_id} at {state.last_checked_at}: {status.upper()} — "
                    f"{state.last_result.get('reason', '')}",
                )
            )
        if state.signoffs:
            s = state.signoffs[-1]
            parts.append(Part(None, f"{step_id} signed off by {s.by} at {s.at}"))
    return parts


def _check_parts(
    f: Facts, wanted: Callable[[list[str]], bool], after: datetime | None = None
) -> list[Part]:
    """The latest result of each check step whose probes ``wanted`` accepts."""
    latest = {}
    for record in f.timeline.checks:
        if after is not None and record.at < after:
            continue
        if wanted([str(p.get("probe", "")) for p in record.probes]):
            latest[record.step] = record
    return [
        Part(
            Status.PASS if r.status in ("pass", "warn") else Status.FAIL,
            f"check {r.step} at {_hms(r.at)}: {r.status.upper()} — {r.reason}",
        )
        for r in latest.values()
    ]


def _gate_parts(
    f: Facts,
    wanted: Callable[[Gate], bool],
    *,
    last_phase: bool = False,
    fails_only: bool = False,
) -> list[Part]:
    """The controller's latest verdict on each plan gate ``wanted`` accepts (``last_phase``:
    only gates of the last phase that was watched — the judgement nearest to "after")."""
    names = {name for name, gates in f.gates().items() if any(wanted(g) for g in gates)}
    # A verdict may name its gate with a qualifier: "full-cache-hit-rate (misses)".
    found = measures.gate_outcomes(f.timeline, lambda name: name.split(" (", 1)[0] in names)
    if last_phase and found:
        last = f.timeline.samples[-1].phase if f.timeline.samples else found[-1].phase
        found = [o for o in found if o.phase == last] or found
    triggers = {s.id for s in f.plan.rollback.immediate + f.plan.rollback.graceful}
    parts = []
    for outcome in found:
        if fails_only and not outcome.failed:
            continue
        if outcome.gate.split(" (", 1)[0] in triggers and not outcome.failed:
            # A rollback trigger "passes" until it fires: that it did not is context, not proof.
            parts.append(Part(None, f"rollback trigger {outcome.gate} did not fire"))
            continue
        parts.append(Part(_gate_status(outcome), _gate_text(outcome)))
    return parts


def _gate_status(outcome: GateOutcome) -> Status:
    if outcome.failed:
        return Status.FAIL
    return Status.PASS if outcome.outcome == "pass" else Status.UNKNOWN


def _gate_text(outcome: GateOutcome) -> str:
    verdict = {"pass": "PASS", "continue": "undecided"}.get(outcome.outcome, "FAIL")
    why = f" — {outcome.reason}" if outcome.reason else ""
    return f"gate {outcome.gate} ({outcome.phase}): {verdict}{why}"


def _probes_http(gate: Gate) -> bool:
    return any(call.probe.startswith("http") for call in gate.checks)


def _new_traffic(f: Facts) -> tuple[list[Any], str]:
    full = measures.full_samples(f.timeline.samples, f.new)
    if full:
        return full, "after the switch to 100%"
    return f.timeline.samples, "while it served part of the traffic (it never carried all of it)"


def _gate_limit_s(f: Facts, step_id: str) -> float | None:
    state = f.step(step_id)
    for gate in state.step.gates if state else []:
        if gate.below is not None:
            try:
                return parse_duration(gate.below).total_seconds()
            except ValueError:
                return None
    return None


def _unknown(text: str, target: str) -> tuple[Status, list[Part], dict[str, Any], str]:
    return Status.UNKNOWN, [Part(Status.UNKNOWN, text)], {}, target


def _no_samples(backend: str | None = None) -> str:
    of = f" with numbers for {backend}" if backend else ""
    return (
        f"no rollout.sample{of} in the journal (the controller journals one every few seconds "
        "while a phase is watched)"
    )


def _at_least(value: float, bound: float) -> Status:
    return Status.PASS if value >= bound else Status.FAIL


def _below(value: float, bound: float) -> Status:
    return Status.PASS if value < bound else Status.FAIL


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pct(fraction: float, digits: int = 2) -> str:
    return f"{fraction * 100:.{digits}f}".rstrip("0").rstrip(".") + "%"


def _hms(at: datetime) -> str:
    return at.strftime("%H:%M:%S")
