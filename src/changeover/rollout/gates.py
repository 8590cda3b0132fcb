"""Plan gates → analysis verdicts: which test each gate is, over which window of observations.

Pure: the controller hands in ``Observation``s (cumulative counters, histograms, gauges) read at
the start of the window and now, plus the baseline system's for ``max_ratio_to`` gates, and
gets a ``Verdict``. Which analysis a gate gets:

    metric with events/total (error_rate, auth_failures, …)   below X   → rate_gate vs X
                                                              ratio R   → compare_counts, max R
    latency_* with a histogram                                below X   → quantile_gate, limit X
                                                              ratio R   → latency_compare_gate
    "none observed" metrics (database_errors, …) with counts            → fail on any event;
                                                                          pass after the bake
    good events with counts (cache_hit_rate: misses of lookups) above X → rate_gate, misses
                                                                          vs 1 − X
    gauges (cpu, replication lag, …)                          below/above → the latest value
    memory_leak / memory_stable (a gauge series)                        → leak_gate (Theil–Sen)
    latency_stable (the p95 of each look's requests)                    → leak_gate on that
                                                                          series: no significant
                                                                          rise above 20 % of its
                                                                          median over the window
    a gate with ``check:`` (synthetic probes, ``metrics.checks``)       → failed runs as events

A **phase gate** must hold for the phase to pass (failing is a graceful rollback). A **rollback
trigger** (the plan's ``rollback.immediate`` / ``graceful`` gates) *fires* when its condition is
shown — an ``above`` threshold exceeded with confidence, or any "none observed" event —
continuously for its ``sustained`` time; until it fires its verdict is a pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from changeover.analysis import (
    Outcome,
    Sustained,
    Verdict,
    compare_counts,
    latency_compare_gate,
    leak_gate,
    quantile_gate,
    rate_gate,
)
from changeover.metrics.base import Observation
from changeover.plan.model import Gate
from changeover.units import parse_duration, parse_ratio

Histogram = list[tuple[float, int]]  # per-bucket counts, as changeover.analysis takes them

ALPHA = 0.01
LEAK_MB_PER_HOUR = 10.0  # a slope below this is noise, not a leak worth a rollback
LEAK_MIN_RISE_MB = 16.0  # nor a rise smaller than this over the window (a warming process)
# The first seconds of a window are a new instance warming up (pools, caches, imports): its
# memory rises fast and levels off. A leak is judged on what comes after.
LEAK_WARMUP_S = 30.0
NONE_OBSERVED = frozenset(
    {
        "database_errors",
        "database_connection_failures",
        "auth_failures",
        "user_complaints",
        "data_corruption",
        "data_loss",
        "security_breach",
        "features",
        "critical_features",
        "cache_issues",
    }
)
_LEAK = frozenset({"memory_leak", "memory_stable"})
#: Metrics judged by the trend of one quantile of each look's requests (see the controller).
PER_LOOK_QUANTILE = {"latency_stable": 0.95}
STABLE_RISE = 0.2  # "stable": the quantile does not rise by more than this share over the window


@dataclass(frozen=True)
class Reading:
    """A gate's observations: the window's start and now, for the system and its baseline."""

    start: Observation | None
    now: Observation
    baseline_start: Observation | None = None
    baseline_now: Observation | None = None
    series: Sequence[tuple[float, float]] = ()  # (seconds, value) for trend gates


def counts(start: Observation | None, now: Observation) -> tuple[int, int]:
    """Events and total within the window; a counter that went backwards restarted: use now's."""
    events, total = now.events or 0, now.total or 0
    if start is None or start.events is None or start.total is None:
        return events, total
    if events < start.events or total < start.total:
        return events, total
    events, total = events - start.events, total - start.total
    # Events and total read by two queries (Prometheus) can disagree by a sample or two: an
    # event is never counted out of fewer trials than there were events.
    return min(events, total), total


def histogram(start: Observation | None, now: Observation) -> Histogram:
    """The window's per-bucket counts (what ``analysis`` takes) from two cumulative histograms
    (``Observation.histogram``: samples ≤ bound); a source restart uses ``now`` alone."""
    if now.histogram is None:
        return []
    cumulative = list(now.histogram)
    if (
        start is not None
        and start.histogram is not None
        and len(start.histogram) == len(cumulative)
    ):
        deltas = [(b, t - s) for (b, t), (_, s) in zip(cumulative, start.histogram, strict=True)]
        if all(count >= 0 for _, count in deltas):
            cumulative = deltas
    out: Histogram = []
    below = 0
    for bound, upto in cumulative:
        out.append((bound, max(upto - below, 0)))
        below = max(upto, below)
    return out


def unobservable(name: str, reading: Reading, gate: Gate, elapsed_s: float) -> Verdict | None:
    for observation in (reading.now, reading.baseline_now):
        if observation is not None and observation.unavailable:
            return undecided(
                name, gate, elapsed_s, f"cannot be observed: {observation.unavailable}"
            )
    if gate.max_ratio_to is not None and reading.baseline_now is None:
        return undecided(name, gate, elapsed_s, f"no reading of the baseline {gate.max_ratio_to}")
    return None


def undecided(name: str, gate: Gate, elapsed_s: float, reason: str) -> Verdict:
    """Nothing to decide on: the gate keeps the phase waiting and says why."""
    nan = math.nan
    return Verdict(name, Outcome.CONTINUE, nan, (nan, nan), _threshold(gate), 0, elapsed_s, reason)


def phase_gate(
    name: str, gate: Gate, reading: Reading, *, baked: bool, elapsed_s: float
) -> Verdict:
    """Does the gate hold? pass (after the bake), continue, or fail (graceful rollback)."""
    missing = unobservable(name, reading, gate, elapsed_s)
    if missing is not None:
        return missing
    return _evaluate(
        name, gate, reading, baked=baked, elapsed_s=elapsed_s, on_fail=Outcome.FAIL_GRACEFUL
    )


def trigger_gate(
    name: str,
    gate: Gate,
    reading: Reading,
    state: Sustained,
    *,
    now: float,
    elapsed_s: float,
    on_fire: Outcome,
) -> tuple[Verdict, Sustained]:
    """Has the rollback trigger fired? Its verdict is ``on_fire`` once the condition has been
    shown continuously for ``gate.sustained`` (0 when not given), a pass otherwise."""
    missing = unobservable(name, reading, gate, elapsed_s)
    if missing is not None:
        return missing, state.observe(now, False)
    shown = _evaluate(
        name, _as_condition(gate), reading, baked=False, elapsed_s=elapsed_s, on_fail=on_fire
    )
    state = state.observe(now, shown.failed)
    if state.firing:
        sustained = gate.sustained.total_seconds() if gate.sustained else 0.0
        reason = shown.reason + (f", sustained {sustained:g} s" if sustained else "")
        return replace(shown, outcome=on_fire, reason=reason), state
    return replace(shown, outcome=Outcome.PASS, reason="not firing: " + shown.reason), state


def _as_condition(gate: Gate) -> Gate:
    """A trigger ``above X`` is the gate ``below X`` failing: test it that way round."""
    if gate.above is not None:
        return gate.model_copy(update={"below": gate.above, "above": None})
    return gate


def _evaluate(
    name: str, gate: Gate, reading: Reading, *, baked: bool, elapsed_s: float, on_fail: Outcome
) -> Verdict:
    now = reading.now
    metric = gate.metric
    if metric in _LEAK:
        series = list(reading.series)
        warm = [(t, v) for t, v in series if t >= series[0][0] + LEAK_WARMUP_S] if series else []
        return leak_gate(
            warm,
            min_slope_per_hour=LEAK_MB_PER_HOUR,
            min_rise=LEAK_MIN_RISE_MB,
            alpha=ALPHA,
            baked=baked,
            on_fail=on_fail,
            elapsed_s=elapsed_s,
            gate=name,
        )
    if metric in PER_LOOK_QUANTILE:
        return _stable(name, reading.series, baked, elapsed_s, on_fail)
    if now.histogram is not None and metric.startswith("latency"):
        window = histogram(reading.start, now)
        if gate.ratio is not None:
            assert reading.baseline_now is not None
            baseline = histogram(reading.baseline_start, reading.baseline_now)
            return latency_compare_gate(
                window,
                baseline,
                tolerance=gate.ratio - 1.0,
                slack_s=gate.slack.total_seconds() if gate.slack else 0.0,
                alpha=ALPHA,
                baked=baked,
                on_fail=on_fail,
                elapsed_s=elapsed_s,
                gate=name,
            )
        limit = _seconds(gate.below if gate.below is not None else gate.above)
        return quantile_gate(
            window,
            limit_s=limit,
            alpha=ALPHA,
            baked=baked,
            on_fail=on_fail,
            elapsed_s=elapsed_s,
            gate=name,
        )
    if now.events is not None and now.total is not None:
        events, total = counts(reading.start, now)
        if gate.ratio is not None:
            assert reading.baseline_now is not None
            base_events, base_total = counts(reading.baseline_start, reading.baseline_now)
            return compare_counts(
                events,
                total,
                base_events,
                base_total,
                max_ratio=gate.ratio,
                alpha=ALPHA,
                baked=baked,
                on_fail=on_fail,
                elapsed_s=elapsed_s,
                gate=name,
            )
        if gate.below is not None:
            return rate_gate(
                events,
                total,
                _fraction(gate.below),
                alpha=ALPHA,
                baked=baked,
                on_fail=on_fail,
                elapsed_s=elapsed_s,
                gate=name,
            )
        if gate.above is not None and metric not in NONE_OBSERVED:
            return _good_share_above(name, gate, events, total, baked, elapsed_s, on_fail)
        if metric in NONE_OBSERVED or gate.below is None:
            return _none_observed(name, events, total, baked, elapsed_s, on_fail, now.unit)
    if now.value is not None:
        return _gauge(name, gate, now.value, now.unit or "", baked, elapsed_s, on_fail)
    return undecided(name, gate, elapsed_s, f"the source gave no usable number for {metric}")


def _stable(
    name: str,
    series: Sequence[tuple[float, float]],
    baked: bool,
    elapsed_s: float,
    on_fail: Outcome,
) -> Verdict:
    """No significant rise of more than ``STABLE_RISE`` of the level over the window so far."""
    values = [v for _, v in series]
    span_h = (series[-1][0] - series[0][0]) / 3600 if len(series) > 1 else 0.0
    level = statistics.median(values) if values else 0.0
    min_slope = STABLE_RISE * level / span_h if span_h > 0 else math.inf
    verdict = leak_gate(
        list(series),
        min_slope_per_hour=min_slope,
        alpha=ALPHA,
        baked=baked,
        on_fail=on_fail,
        elapsed_s=elapsed_s,
        unit="s",
        gate=name,
    )
    return replace(verdict, reason=f"{verdict.reason} (p95 of each look, level {level:.3g} s)")


def _good_share_above(
    name: str,
    gate: Gate,
    bad: int,
    total: int,
    baked: bool,
    elapsed_s: float,
    on_fail: Outcome,
) -> Verdict:
    """ "Hit rate above 80 %" is "misses below 20 %": the same anytime-valid rate test, shown
    the way the plan says it (the good share, its bound and the threshold)."""
    limit = _fraction(gate.above)
    shown = rate_gate(
        bad,
        total,
        1.0 - limit,
        alpha=ALPHA,
        baked=baked,
        on_fail=on_fail,
        elapsed_s=elapsed_s,
        gate=f"{name} (misses)",
    )
    low, high = shown.bound
    observed = 1.0 - shown.observed if total else math.nan
    return replace(shown, observed=observed, bound=(1.0 - high, 1.0 - low), threshold=limit)


def _none_observed(
    name: str,
    events: int,
    total: int,
    baked: bool,
    elapsed_s: float,
    on_fail: Outcome,
    what: str | None = None,
) -> Verdict:
    if events > 0:
        # ``what`` (the observation's unit) says what was counted and, for checks and
        # signals, the latest failure or who raised it: the evidence a rollback carries.
        return Verdict(
            name,
            on_fail,
            float(events),
            (float(events), float(events)),
            0.0,
            total,
            elapsed_s,
            f"{events} observed in {total} (expected none)" + (f": {what}" if what else ""),
        )
    outcome = Outcome.PASS if baked else Outcome.CONTINUE
    return Verdict(
        name, outcome, 0.0, (0.0, 0.0), 0.0, total, elapsed_s, f"none observed in {total}"
    )


def _gauge(
    name: str, gate: Gate, value: float, unit: str, baked: bool, elapsed_s: float, on_fail: Outcome
) -> Verdict:
    if gate.below is not None:
        limit = _number(gate.below, unit)
        ok, relation = value < limit, "<"
    elif gate.above is not None:
        limit = _number(gate.above, unit)
        ok, relation = value > limit, ">"
    else:  # a "none observed" gauge: any positive value is an observation
        limit, ok, relation = 0.0, value <= 0, "="
    if not ok:
        return Verdict(
            name,
            on_fail,
            value,
            (value, value),
            limit,
            1,
            elapsed_s,
            f"{name}: {_shown(value, unit)} (expected {relation} {_shown(limit, unit)})",
            unit,
        )
    outcome = Outcome.PASS if baked else Outcome.CONTINUE
    return Verdict(
        name,
        outcome,
        value,
        (value, value),
        limit,
        1,
        elapsed_s,
        f"{name}: {_shown(value, unit)} {relation} {_shown(limit, unit)}",
        unit,
    )


def _shown(value: float, unit: str) -> str:
    """``12ms``, ``40%`` — but ``3 queries running > 30s``: a word unit gets a space."""
    glued = not unit or unit[0] in "%/" or unit in {"ms", "s", "MB", "B"}
    return f"{value:g}{unit}" if glued else f"{value:g} {unit}"


def _threshold(gate: Gate) -> float:
    for value in (gate.below, gate.above, gate.ratio):
        if value is not None:
            return _number(value, "")
    return 0.0


def _number(value: object, unit: str = "") -> float:
    """A plan threshold as a plain number: '1%' → 0.01 (60 for a reading in unit '%'), '100ms'
    → 0.1 (seconds), 0.8 → 0.8."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.endswith("%"):
        # a reading in percent (CPU) keeps the plan's percent; any other reading is a share
        return float(text[:-1]) if unit == "%" else parse_ratio(text)
    try:
        return parse_duration(text).total_seconds()
    except ValueError:
        return float(text)


def _seconds(value: object) -> float:
    return _number(value)


def _fraction(value: object) -> float:
    return _number(value)
