"""The numbers behind the criteria (pure): traffic totals, latency and the new-vs-legacy ratio
from the ``rollout.sample`` events, errors between watch windows, and the latest outcome of
each gate.

Samples are deltas: each says what a backend did in the few seconds before it. Totals are sums
of them; a p95 over many samples cannot be rebuilt from their p95s, so the report says which
summary it shows (the controller's own gate value when there is one, else the per-sample p95s
weighted by requests, with the worst sample next to it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from changeover.report.timeline import Sample, Timeline


@dataclass(frozen=True)
class Traffic:
    """Requests and errors summed over some samples of one backend (or all of them)."""

    requests: int
    errors: int
    samples: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def availability(self) -> float | None:
        return 1.0 - self.errors / self.requests if self.requests else None


def traffic(samples: Iterable[Sample], backend: str | None = None) -> Traffic:
    """Sum of ``requests``/``errors`` of ``backend`` (every backend when None)."""
    requests = errors = count = 0
    for sample in samples:
        chosen = sample.backends.values() if backend is None else [sample.backends.get(backend, {})]
        seen = False
        for numbers in chosen:
            r, e = numbers.get("requests"), numbers.get("errors")
            if isinstance(r, int) and isinstance(e, int):
                requests, errors, seen = requests + r, errors + e, True
        count += seen
    return Traffic(requests, errors, count)


@dataclass(frozen=True)
class Latency:
    """Per-sample p95s of one backend: weighted by requests, and the worst one."""

    typical_ms: float
    worst_ms: float
    samples: int
    above: int  # samples whose p95 exceeded the limit asked about

    def to_json(self) -> dict[str, Any]:
        return {
            "typical_ms": round(self.typical_ms, 3),
            "worst_ms": round(self.worst_ms, 3),
            "samples": self.samples,
            "above": self.above,
        }


def latency(samples: Iterable[Sample], backend: str, limit_ms: float) -> Latency | None:
    pairs = []
    for sample in samples:
        numbers = sample.backends.get(backend, {})
        p95, requests = numbers.get("p95_ms"), numbers.get("requests")
        if isinstance(p95, int | float) and isinstance(requests, int) and requests > 0:
            pairs.append((float(p95), requests))
    if not pairs:
        return None
    weight = sum(r for _, r in pairs)
    typical = sum(p * r for p, r in pairs) / weight
    return Latency(
        typical, max(p for p, _ in pairs), len(pairs), sum(1 for p, _ in pairs if p > limit_ms)
    )


@dataclass(frozen=True)
class Ratio:
    """legacy p95 ÷ new p95 at the same load: above 1 the new app is faster."""

    factor: float
    legacy_p95_ms: float
    new_p95_ms: float
    samples: int
    how: str  # which samples counted as "the same load"

    def to_json(self) -> dict[str, Any]:
        return {
            "factor": round(self.factor, 3),
            "legacy_p95_ms": round(self.legacy_p95_ms, 3),
            "new_p95_ms": round(self.new_p95_ms, 3),
            "samples": self.samples,
            "how": self.how,
        }


SAME_LOAD = 1.25  # two backends within this factor of each other's requests/s carry "the same load"


def ratio(samples: list[Sample], legacy: str = "legacy", new: str = "new") -> Ratio | None:
    """The median over same-load samples of legacy p95 ÷ new p95: at an even split when the
    rollout had one (50/50), else samples where both served within 25 % of each other's rate."""

    def both(sample: Sample) -> tuple[float, float, float, float] | None:
        a, b = sample.backends.get(legacy, {}), sample.backends.get(new, {})
        values = [a.get("p95_ms"), b.get("p95_ms"), a.get("rps"), b.get("rps")]
        numbers = [float(v) for v in values if isinstance(v, int | float) and v > 0]
        if len(numbers) < 4:
            return None
        return numbers[0], numbers[1], numbers[2], numbers[3]

    def even(sample: Sample) -> bool:
        w = sample.weights or {}
        return legacy in w and new in w and abs(w[legacy] - w[new]) < 0.01

    def close(sample: Sample) -> bool:
        found = both(sample)
        return found is not None and max(found[2], found[3]) <= SAME_LOAD * min(found[2], found[3])

    for choose, how in (
        (even, "at the even split (50/50)"),
        (close, f"in samples where both served within {SAME_LOAD - 1:.0%} of each other's rate"),
    ):
        chosen = [found for s in samples if choose(s) and (found := both(s)) is not None]
        if chosen:
            return Ratio(
                statistics.median(l95 / n95 for l95, n95, _, _ in chosen),
                statistics.median(l95 for l95, _, _, _ in chosen),
                statistics.median(n95 for _, n95, _, _ in chosen),
                len(chosen),
                how,
            )
    return None


@dataclass(frozen=True)
class Gap:
    """What one backend served between two watch windows (route changes, deploys, handoffs)."""

    after: str
    before: str
    requests: int
    errors: int


def gaps(timeline: Timeline, backend: str = "new") -> list[Gap] | None:
    """Requests and errors on ``backend`` outside the sampled windows, between one phase's
    watch and the next: the cumulative counters the controller journals when a window opens,
    minus what that window's samples account for. None when the journal cannot say (no
    error-rate reading of the backend in two consecutive windows, or counters that restarted).
    """
    readings = []
    for at, phase, _attempt, start in timeline.monitoring:
        counter = _error_counter(start, backend)
        if counter is not None:
            readings.append((at, phase, counter))
    if len(readings) < 2:
        return None
    found = []
    for (at, phase, (events, total)), (next_at, next_phase, (next_events, next_total)) in pairwise(
        readings
    ):
        window = [s for s in timeline.samples if at < s.at <= next_at]
        sampled = traffic(window, backend)
        requests = next_total - total - sampled.requests
        errors = next_events - events - sampled.errors
        if requests < 0 or errors < 0:
            return None  # the source restarted (counters went back): no honest number
        found.append(Gap(phase, next_phase, requests, errors))
    return found


def _error_counter(start: object, backend: str) -> tuple[int, int] | None:
    if not isinstance(start, dict):
        return None
    for key, observation in start.items():
        metric, _, rest = str(key).partition("|")
        of = rest.split("|", 1)[0]
        if metric != "error_rate" or of != backend or not isinstance(observation, dict):
            continue
        events, total = observation.get("events"), observation.get("total")
        if isinstance(events, int) and isinstance(total, int):
            return events, total
    return None


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    phase: str
    at: datetime
    outcome: str
    observed: float | None
    unit: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.outcome.startswith("fail")


def gate_outcomes(timeline: Timeline, wanted: Callable[[str], bool]) -> list[GateOutcome]:
    """The latest outcome of every gate ``wanted(name)`` accepts, from verdicts and samples (a
    failure is the last word of its attempt: the rollback it causes ends the watching)."""
    latest: dict[str, GateOutcome] = {}
    seen: list[GateOutcome] = []
    for record in timeline.verdicts:
        v = record.verdict
        seen.append(_outcome(v, record.phase, record.at, str(v.get("reason", ""))))
    for sample in timeline.samples:
        for g in sample.gates:
            seen.append(_outcome(g, sample.phase, sample.at, ""))
    for outcome in sorted(seen, key=lambda o: o.at):
        if not wanted(outcome.gate):
            continue
        previous = latest.get(outcome.gate)
        if previous is not None and not outcome.reason and previous.outcome == outcome.outcome:
            outcome = GateOutcome(**{**vars(outcome), "reason": previous.reason})
        latest[outcome.gate] = outcome
    return list(latest.values())


def _outcome(data: dict[str, Any], phase: str, at: datetime, reason: str) -> GateOutcome:
    observed = data.get("observed")
    return GateOutcome(
        gate=str(data.get("gate")),
        phase=phase,
        at=at,
        outcome=str(data.get("outcome", "")),
        observed=float(observed) if isinstance(observed, int | float) else None,
        unit=str(data.get("unit") or ""),
        reason=reason,
    )


def full_samples(samples: list[Sample], new: str = "new") -> list[Sample]:
    """The samples taken with all traffic on the new app (after the switch to 100 %)."""
    return [s for s in samples if s.weights and s.weights.get(new, 0.0) >= 100.0]


@dataclass(frozen=True)
class PhaseTraffic:
    """One backend in one watched phase: the sums and p95 summary of its samples."""

    phase: str
    attempt: int
    backend: str
    traffic: Traffic
    latency: Latency | None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "attempt": self.attempt,
            "backend": self.backend,
            "requests": self.traffic.requests,
            "errors": self.traffic.errors,
            "error_rate": self.traffic.error_rate,
            "samples": self.traffic.samples,
            "p95": self.latency.to_json() if self.latency else None,
        }


def by_phase(samples: list[Sample], names: list[str]) -> list[PhaseTraffic]:
    """Per watched phase (in the order watched) and backend: requests, errors, p95."""
    order: list[tuple[int, str]] = []
    for sample in samples:
        if (sample.attempt, sample.phase) not in order:
            order.append((sample.attempt, sample.phase))
    rows = []
    for attempt, phase in order:
        chosen = [s for s in samples if s.attempt == attempt and s.phase == phase]
        for backend in names:
            seen = traffic(chosen, backend)
            if seen.samples:
                rows.append(
                    PhaseTraffic(phase, attempt, backend, seen, latency(chosen, backend, 100.0))
                )
    return rows
