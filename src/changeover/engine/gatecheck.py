"""Gate steps outside a traffic phase (the post-cutover "Common issues"), checked like probes.

``changeover check`` and the watch rounds read each gate's metric a window apart (a series of
looks for trend gates) and judge it with the rollout's ``phase_gate`` as a baked phase: pass →
PASS, fail → FAIL, still undecided → WARN, unreadable → ERROR with the source's reason. Gates of
phases, rollback triggers and success criteria stay the rollout controller's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from changeover.analysis import Outcome, Verdict, leak_gate
from changeover.analysis.latency import quantile_estimate
from changeover.metrics.base import Observation
from changeover.metrics.checks import ChecksSource
from changeover.plan.model import Gate, Stage, Step
from changeover.probes.base import CheckResult, Measure, Status
from changeover.rollout.gates import (
    _LEAK,
    ALPHA,
    LEAK_MB_PER_HOUR,
    LEAK_MIN_RISE_MB,
    PER_LOOK_QUANTILE,
    Reading,
    histogram,
    phase_gate,
    unobservable,
)

#: How long a gate is watched when the plan does not say: long enough for a few hundred
#: requests at modest traffic, short enough for an operator waiting on ``changeover check``.
DEFAULT_WINDOW_S = 30.0
#: Looks a trend gate takes over the window (the leak test wants at least 10 samples).
LOOKS = 12

Read = Callable[[str, str | None, str | None], Awaitable[Observation]]  # (metric, of, source)
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def checkable(stage: Stage | None, step: Step) -> bool:
    """A gate step ``changeover check`` runs: one in a stage that is not a traffic phase."""
    return step.kind == "gate" and stage is not None and stage.phase is None


def gate_name(gate: Gate) -> str:
    """How a gate is named in a step's results: ``gate rate_limited of new``."""
    return f"gate {gate.metric}" + (f" of {gate.of}" if gate.of else "")


def _trend(gate: Gate) -> bool:
    return gate.metric in _LEAK or gate.metric in PER_LOOK_QUANTILE


@dataclass
class _Watch:
    """One gate's looks over the window."""

    gate: Gate
    start: Observation | None = None
    now: Observation | None = None
    baseline_start: Observation | None = None
    baseline_now: Observation | None = None
    series: list[tuple[float, float]] | None = None
    previous: Observation | None = None  # latency_stable: the look before, for its window

    def reading(self) -> Reading:
        assert self.now is not None
        # A synthetic gate's runs are all in the window: its tally from the first run counts.
        start = None if self.gate.check is not None else self.start
        return Reading(
            start=start,
            now=self.now,
            baseline_start=self.baseline_start,
            baseline_now=self.baseline_now,
            series=tuple(self.series or ()),
        )

    def add_point(self, seconds: float, look: Observation) -> None:
        if self.series is None:
            self.series = []
        point = look.value
        quantile = PER_LOOK_QUANTILE.get(self.gate.metric)
        if quantile is not None and look.histogram is not None:
            # "stable": the quantile of the requests between two looks, trended over the window
            point = None
            if self.previous is not None:
                window = histogram(self.previous, look)
                if sum(count for _, count in window):
                    point = quantile_estimate(window, quantile)
            self.previous = look
        if point is not None and math.isfinite(point):
            self.series.append((seconds, point))


async def watch_gates(
    gates: Sequence[Gate],
    read: Read,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    checks: ChecksSource | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> list[Reading]:
    """Each gate's reading over one window: its metric (and baseline) at the start and end, and
    a series of ``LOOKS`` looks for trend gates."""
    watches = [_Watch(gate) for gate in gates]
    looks = LOOKS if any(_trend(w.gate) for w in watches) else 2
    began = clock()
    for look in range(looks):
        if look:
            due = began + window_s * look / (looks - 1)
            await sleep(max(0.0, due - clock()))
        edge = look in (0, looks - 1)
        chosen = [w for w in watches if edge or _trend(w.gate)]
        seen = await asyncio.gather(*(_look(w.gate, read, checks) for w in chosen))
        at = clock() - began
        for watch, (main, baseline) in zip(chosen, seen, strict=True):
            if _trend(watch.gate):
                watch.add_point(at, main)
            if look == 0:
                watch.start, watch.baseline_start = main, baseline
            watch.now, watch.baseline_now = main, baseline
    return [w.reading() for w in watches]


async def _look(
    gate: Gate, read: Read, checks: ChecksSource | None
) -> tuple[Observation, Observation | None]:
    if gate.check is not None:
        if checks is None:
            reason = "no probe runner for the gate's own checks"
            return Observation.missing(gate.metric, gate.of, time.time(), reason), None
        return await checks.read(gate.metric, gate.of, gate.checks), None
    main = read(gate.metric, gate.of, gate.source)
    if gate.max_ratio_to is None:
        return await main, None
    baseline = read(gate.metric, gate.max_ratio_to, gate.source)
    first, second = await asyncio.gather(main, baseline)
    return first, second


def judge(name: str, gate: Gate, reading: Reading, *, elapsed_s: float) -> CheckResult:
    """The check result of one gate over a watched window (pure)."""
    missing = unobservable(name, reading, gate, elapsed_s)
    if missing is not None:
        return CheckResult(Status.ERROR, missing.reason.removeprefix(f"{name}: "))
    now = reading.now
    if not _trend(gate) and now.value is None and now.events is None and now.histogram is None:
        return CheckResult(Status.ERROR, f"the source gave no number for {gate.metric}")
    try:
        verdict = _verdict(name, gate, reading, elapsed_s)
    except (ValueError, ArithmeticError) as exc:
        return CheckResult(Status.ERROR, f"cannot judge {gate.metric}: {exc}")
    status = _STATUS[verdict.outcome]
    reason = verdict.reason
    if status is Status.WARN:
        reason = f"undecided after {elapsed_s:g}s: {reason}"
    if now.detail:
        reason = f"{reason} — {now.detail}"
    details: dict[str, object] = {"verdict": verdict.to_json()}
    if now.detail:
        details["detail"] = now.detail
    return CheckResult(status, reason, (_measure(gate, verdict),), details)


def _verdict(name: str, gate: Gate, reading: Reading, elapsed_s: float) -> Verdict:
    if gate.metric in _LEAK:
        # A phase's leak gate leaves out its window's first LEAK_WARMUP_S: the instance was just
        # deployed and still warming up. After the flip it has run for hours and a check's
        # window is about that long: the whole series counts, with the phase's bounds.
        return leak_gate(
            list(reading.series),
            min_slope_per_hour=LEAK_MB_PER_HOUR,
            min_rise=LEAK_MIN_RISE_MB,
            alpha=ALPHA,
            baked=True,
            on_fail=Outcome.FAIL_GRACEFUL,
            elapsed_s=elapsed_s,
            gate=name,
        )
    return phase_gate(name, gate, reading, baked=True, elapsed_s=elapsed_s)


_STATUS = {
    Outcome.PASS: Status.PASS,
    Outcome.CONTINUE: Status.WARN,
    Outcome.FAIL_GRACEFUL: Status.FAIL,
    Outcome.FAIL_IMMEDIATE: Status.FAIL,
}


def _measure(gate: Gate, verdict: Verdict) -> Measure:
    observed = verdict.observed if math.isfinite(verdict.observed) else None
    expected = None
    for word, value in (("below", gate.below), ("above", gate.above), ("ratio ≤", gate.ratio)):
        if value is not None:
            expected = f"{word} {value}"
    ok = None if verdict.outcome is Outcome.CONTINUE else not verdict.failed
    return Measure(gate.metric, observed, expected, ok, verdict.unit or None)


async def check_gate_step(
    step: Step,
    read: Read,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    checks: ChecksSource | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> list[tuple[str, CheckResult]]:
    """Watch every gate of ``step`` over one window; (gate name, result) per gate."""
    began = clock()
    readings = await watch_gates(
        step.gates, read, window_s=window_s, checks=checks, sleep=sleep, clock=clock
    )
    elapsed = round(clock() - began, 3)
    out = []
    for gate, reading in zip(step.gates, readings, strict=True):
        result = judge(step.id, gate, reading, elapsed_s=elapsed)
        out.append((gate_name(gate), _timed(result, elapsed)))
    return out


def _timed(result: CheckResult, seconds: float) -> CheckResult:
    return CheckResult(
        result.status, result.reason, result.evidence, result.details, duration_ms=seconds * 1000
    )
