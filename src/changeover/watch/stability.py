"""The stability verdict after the cutover (pure): what the journal measured, part by part.

Uptime is the share of health probes (HTTP to a health path) that passed, in any check step;
error rate and latency come from the rollout's ``rollout.sample`` events for the new app;
data from the newest ``migrate.verify`` outcome; synthetic checks from the newest result of
every other check step; the new-vs-legacy ratio from ``loadtest.result`` events (the same load
sent to both). A part without evidence is NOT MEASURED, never met; the seed's expected 20-30x
is reported as met or not next to the number measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from changeover.journal import ACTION_OUTCOME, CHECK_RESULT
from changeover.journal.events import Event
from changeover.plan.model import Plan
from changeover.rollout.samples import SAMPLE
from changeover.rollout.state import DONE
from changeover.watch.state import ROUND

LOADTEST_RESULT = "loadtest.result"  # {"system", "path", "rate", "summary": LoadResult.summary()}
UPTIME_TARGET = 0.99  # the seed: 99%+ uptime
ERROR_RATE_TARGET = 0.001  # the seed: error rate < 0.1%
LATENCY_P95_TARGET_MS = 100.0  # the default plan's latency-sla check
SEED_RATIO = 20.0  # the seed expects the new app 20-30x faster than legacy


class Met(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Part:
    name: str
    status: Met
    text: str  # what was measured, in words
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"part": self.name, "status": self.status.value, "text": self.text, **self.numbers}


@dataclass(frozen=True)
class Stability:
    since: datetime | None  # the cutover's completion, or None: the whole journal
    until: datetime | None  # the newest event read
    parts: tuple[Part, ...]

    @property
    def ok(self) -> bool:
        """No measured part failed (an unmeasured part is shown, and is not a failure here)."""
        return all(p.status != Met.NOT_MET for p in self.parts)

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "ok": self.ok,
            "parts": [p.to_json() for p in self.parts],
        }

    def lines(self) -> list[str]:
        since = self.since.isoformat() if self.since else "the start of the journal"
        head = f"stability since {since}: " + ("STABLE" if self.ok else "NOT STABLE")
        width = max(len(p.name) for p in self.parts)
        return [head] + [
            f"  {p.name:<{width}}  {p.status.value.upper():<12}  {p.text}" for p in self.parts
        ]


def judge(
    plan: Plan, events: Iterable[Event], *, new: str = "new", legacy: str = "legacy"
) -> Stability:
    """Read the journal once and judge every part from the cutover's completion on."""
    everything = list(events)
    done = [e for e in everything if e.kind == DONE]
    since = done[-1].time if done else None
    period = [e for e in everything if since is None or e.time >= since]
    health = _health_probes(plan)
    results = [e for e in period if e.kind == CHECK_RESULT and "step" in e.payload]
    parts = (
        uptime(_health_statuses(results, health)),
        error_rate(period, new),
        latency(period, new),
        data(everything),
        synthetic(r for r in results if not _only_health(r, health)),
        watch_rounds(period),
        performance(everything, new=new, legacy=legacy),
    )
    until = everything[-1].time if everything else None
    return Stability(since, until, parts)


def _health_probes(plan: Plan) -> dict[str, list[bool]]:
    """Per check step, which of its probes (in order) is an HTTP request to a health path."""
    return {
        step.id: [_is_health(plan, call.probe, call.params) for call in step.checks]
        for step in plan.all_steps()
        if any(_is_health(plan, call.probe, call.params) for call in step.checks)
    }


def _health_statuses(results: Iterable[Event], health: dict[str, list[bool]]) -> list[object]:
    """The status of every health probe run: a step's result lists its probes in plan order."""
    statuses: list[object] = []
    for event in results:
        flags = health.get(event.payload["step"], [])
        probes = event.payload.get("probes") or []
        if len(probes) != len(flags):  # the plan changed since: the step's verdict stands in
            statuses += [event.payload.get("status")] if any(flags) else []
            continue
        statuses += [
            p.get("status") for p, is_health in zip(probes, flags, strict=True) if is_health
        ]
    return statuses


def _only_health(event: Event, health: dict[str, list[bool]]) -> bool:
    flags = health.get(event.payload["step"])
    return flags is not None and all(flags)


def _is_health(plan: Plan, probe: str, params: dict[str, Any]) -> bool:
    if probe != "http":
        return False
    path = str(params.get("path", "/")).split("?")[0]
    system = plan.systems.get(str(params.get("system")))
    health = getattr(system, "health", None) if system is not None else None
    return path == health or path.rstrip("/").endswith(("/healthz", "/health"))


def uptime(results: Iterable[object]) -> Part:
    """The share of health probes that passed, from their statuses ("pass", "fail", ...)."""
    statuses = [_ok(status) for status in results]
    if not statuses:
        return Part("uptime", Met.NOT_MEASURED, "no health-check results in the journal")
    share = sum(statuses) / len(statuses)
    status = Met.MET if share >= UPTIME_TARGET else Met.NOT_MET
    text = (
        f"{share:.2%} of {len(statuses)} health checks passed "
        f"(expected at least {UPTIME_TARGET:.0%})"
    )
    return Part("uptime", status, text, {"uptime": share, "checks": len(statuses)})


def _new_backend(sample: Event, new: str) -> dict[str, Any] | None:
    backend = sample.payload.get("backends", {}).get(new)
    return backend if isinstance(backend, dict) else None


def error_rate(period: Iterable[Event], new: str) -> Part:
    requests = errors = 0
    for event in period:
        backend = _new_backend(event, new) if event.kind == SAMPLE else None
        if backend and isinstance(backend.get("requests"), int):
            requests += backend["requests"]
            errors += int(backend.get("errors") or 0)
    if not requests:
        return Part("error rate", Met.NOT_MEASURED, f"no requests to {new} sampled in the journal")
    rate = errors / requests
    status = Met.MET if rate < ERROR_RATE_TARGET else Met.NOT_MET
    text = f"{errors} errors in {requests} requests to {new} = {rate:.3%} (expected < 0.1%)"
    return Part("error rate", status, text, {"requests": requests, "errors": errors, "rate": rate})


def latency(period: Iterable[Event], new: str) -> Part:
    weighted = weight = 0.0
    worst: float | None = None
    for event in period:
        backend = _new_backend(event, new) if event.kind == SAMPLE else None
        p95 = backend.get("p95_ms") if backend else None
        if backend is None or not isinstance(p95, int | float):
            continue
        count = float(backend.get("requests") or 1)
        weighted, weight = weighted + p95 * count, weight + count
        worst = p95 if worst is None else max(worst, p95)
    if not weight or worst is None:
        return Part("latency", Met.NOT_MEASURED, f"no latency of {new} sampled in the journal")
    p95 = weighted / weight
    status = Met.MET if p95 <= LATENCY_P95_TARGET_MS else Met.NOT_MET
    # A p95 over the period cannot be rebuilt from the samples' p95s: say which summary this is.
    text = (
        f"p95 {p95:.1f} ms (per-sample p95s weighted by requests; worst sample {worst:.1f} ms; "
        f"expected <= {LATENCY_P95_TARGET_MS:g} ms)"
    )
    return Part("latency", status, text, {"p95_ms": p95, "worst_p95_ms": worst})


def data(everything: Iterable[Event]) -> Part:
    verifies = [
        e
        for e in everything
        if e.kind == ACTION_OUTCOME and e.payload.get("action") == "migrate.verify"
    ]
    if not verifies:
        return Part("data", Met.NOT_MEASURED, "no migrate.verify result in the journal")
    last = verifies[-1]
    detail = last.payload.get("detail") or {}
    when = last.time.isoformat()
    if last.payload.get("ok") and detail.get("equal"):
        return Part("data", Met.MET, f"last verification at {when}: source and target equal")
    reason = last.payload.get("error") or f"{detail.get('differing', 'some')} rows differ"
    return Part("data", Met.NOT_MET, f"last verification at {when}: {reason}")


def synthetic(results: Iterable[Event]) -> Part:
    latest: dict[str, dict[str, Any]] = {}
    runs = 0
    for event in results:
        latest[event.payload["step"]] = event.payload
        runs += 1
    if not latest:
        return Part("synthetic checks", Met.NOT_MEASURED, "no check results in the journal")
    failing = sorted(
        step for step, p in latest.items() if p.get("required", True) and not _ok(p.get("status"))
    )
    numbers = {"steps": len(latest), "runs": runs, "failing": failing}
    if failing:
        text = (
            f"{len(failing)} of {len(latest)} checks fail at their last run: {', '.join(failing)}"
        )
        return Part("synthetic checks", Met.NOT_MET, text, numbers)
    text = f"all {len(latest)} checks pass at their last run ({runs} runs)"
    return Part("synthetic checks", Met.MET, text, numbers)


def watch_rounds(period: Iterable[Event]) -> Part:
    rounds = [e.payload for e in period if e.kind == ROUND]
    if not rounds:
        return Part("watch rounds", Met.NOT_MEASURED, "no watch round in the journal")
    failed = [r["due"] for r in rounds if r.get("failed") or r.get("error")]
    numbers = {"rounds": len(rounds), "failed": len(failed)}
    last = rounds[-1]
    last_ok = not last.get("failed") and not last.get("error")
    text = f"{len(rounds) - len(failed)} of {len(rounds)} rounds passed; the last " + (
        "passed" if last_ok else "FAILED"
    )
    return Part("watch rounds", Met.MET if last_ok else Met.NOT_MET, text, numbers)


def performance(everything: Iterable[Event], *, new: str, legacy: str) -> Part:
    """The newest load test of each side; the ratio is legacy's p95 over new's, same rate."""
    last: dict[str, dict[str, Any]] = {}
    for event in everything:
        if event.kind == LOADTEST_RESULT and event.payload.get("system") in (new, legacy):
            last[event.payload["system"]] = event.payload
    if new not in last or legacy not in last:
        return Part(
            "performance",
            Met.NOT_MEASURED,
            f"no load test of both {legacy} and {new} journaled "
            "(changeover stability --measure RATE runs one)",
        )
    old, fresh = last[legacy], last[new]
    old_p95 = (old["summary"].get("latency_ms") or {}).get("p95")
    new_p95 = (fresh["summary"].get("latency_ms") or {}).get("p95")
    numbers: dict[str, Any] = {
        "rate": fresh.get("rate"),
        "legacy_p95_ms": old_p95,
        "new_p95_ms": new_p95,
        "legacy_error_rate": old["summary"].get("error_rate"),
        "new_error_rate": fresh["summary"].get("error_rate"),
    }
    if old.get("rate") != fresh.get("rate"):
        text = f"the load tests ran at different rates ({old.get('rate')} vs {fresh.get('rate')})"
        return Part("performance", Met.NOT_MEASURED, text, numbers)
    if not isinstance(old_p95, int | float) or not isinstance(new_p95, int | float) or new_p95 <= 0:
        return Part("performance", Met.NOT_MEASURED, "the load tests measured no latency", numbers)
    ratio = old_p95 / new_p95
    numbers["ratio"] = ratio
    status = Met.MET if ratio >= SEED_RATIO else Met.NOT_MET
    text = (
        f"at {fresh.get('rate'):g} req/s: p95 {old_p95:.2f} ms on {legacy}, {new_p95:.2f} ms on "
        f"{new}: {ratio:.1f}x (the seed expects 20-30x: {status.value})"
    )
    return Part("performance", status, text, numbers)


def _ok(status: object) -> bool:
    return status in ("pass", "warn")
