"""The plan's gates as PromQL: what each one watches and the condition that breaks it (pure).

``plan_gates`` walks the gates the controller watches: each stage's (a traffic phase's gates
must hold, a failing one rolls back gracefully), the rollback triggers (``rollback.immediate`` /
``graceful``: they fire when their condition is shown) and the success criteria. ``watch`` gives
a gate's ``Watch`` — the same reading of the gate as ``rollout.gates`` (a trigger ``above X``
is the gate ``below X`` failing; hit rates "above X" are judged on the misses; memory leaks and
"latency stable" are trends over a window) — or raises ``NoPromQL`` with the reason.

Prometheus compares point estimates over a fixed window where the controller uses anytime-valid
bounds over the phase, so near a threshold the two can disagree for a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from changeover.export.promql import (
    QUANTILE,
    NoPromQL,
    Series,
    SeriesChoice,
    duration,
    group,
    series_for,
    value,
)
from changeover.metrics.postgres import SERVED as POSTGRES_METRICS
from changeover.metrics.redis import SERVED as REDIS_METRICS
from changeover.metrics.signals import SIGNALLED
from changeover.metrics.sync import SERVED as MIGRATION_METRICS
from changeover.plan.model import Gate, Plan, Step, Threshold
from changeover.plan.systems import PrometheusSystem, RouterSystem
from changeover.rollout.gates import (
    LEAK_MB_PER_HOUR,
    LEAK_MIN_RISE_MB,
    NONE_OBSERVED,
    PER_LOOK_QUANTILE,
    STABLE_RISE,
)
from changeover.units import format_duration, parse_duration, parse_ratio

Role = Literal["phase", "stage", "immediate", "graceful", "success"]

_LEAK = frozenset({"memory_leak", "memory_stable"})
#: A trend (memory leak, latency stable) is judged over at least this long, in this many steps.
TREND_WINDOW = timedelta(minutes=30)
TREND_STEPS = 30


@dataclass(frozen=True)
class PlanGate:
    """One gate of the plan with where it sits: its group (a stage id, ``rollback`` or
    ``success-criteria``), what it does there, and a unique alert name."""

    group: str
    group_title: str
    role: Role
    step: Step
    gate: Gate
    name: str

    @property
    def trigger(self) -> bool:
        return self.role in ("immediate", "graceful")

    def __str__(self) -> str:
        about = f" of {self.gate.of}" if self.gate.of else ""
        return f"{self.step.id} ({self.gate.metric}{about})"


@dataclass(frozen=True)
class Skipped:
    """A gate with no PromQL, and why (``changeover run`` still watches it itself)."""

    gate: PlanGate
    reason: str

    def __str__(self) -> str:
        return f"{self.gate}: {self.reason}"


@dataclass(frozen=True)
class Watch:
    """A gate in PromQL.

    ``value`` is what the gate looks at (a share, seconds, MB, ...); ``condition`` returns a
    sample exactly while the gate is broken (or the trigger shown). ``threshold`` is the fixed
    level on ``value`` where that happens — values above it break the gate when
    ``breaks_above`` — and ``allowed`` the level worked out from the baseline system for a
    relative gate (``max_ratio_to``). ``wording`` is the gate's condition as the plan says it.
    """

    value: str
    condition: str
    kind: str  # the Series kind: gauge, counter, ratio, histogram
    unit: str | None
    wording: str
    threshold: float | None = None
    breaks_above: bool = True
    allowed: str | None = None
    # what the alert's $value is, when it is not ``value`` (a trend's slope)
    alert_value: str | None = None


def plan_gates(plan: Plan) -> list[PlanGate]:
    """Every gate of the plan, in plan order, each with a unique, valid alert name."""
    found: list[PlanGate] = []
    taken: set[str] = set()

    def add(group: str, title: str, role: Role, step: Step) -> None:
        gates = step.gates
        for gate in gates:
            name = "Cutover" + _camel(step.id, "-")
            if len(gates) > 1:
                name += _camel(gate.metric, "_")
            unique, n = name, 2
            while unique in taken:
                unique, n = f"{name}{n}", n + 1
            taken.add(unique)
            found.append(PlanGate(group, title, role, step, gate, unique))

    for stage in plan.stages:
        for step in stage.steps():
            add(stage.id, stage.title, "phase" if stage.phase is not None else "stage", step)
    for step in plan.rollback.immediate:
        add("rollback", "Rollback triggers", "immediate", step)
    for step in plan.rollback.graceful:
        add("rollback", "Rollback triggers", "graceful", step)
    for step in plan.success_criteria:
        add("success-criteria", "Success criteria", "success", step)
    return found


def watch_all(
    plan: Plan, *, series: SeriesChoice, window: timedelta
) -> list[tuple[PlanGate, Watch | Skipped]]:
    """Every gate of the plan with its ``Watch``, or ``Skipped`` with the reason."""
    out: list[tuple[PlanGate, Watch | Skipped]] = []
    for at in plan_gates(plan):
        try:
            out.append((at, watch(plan, at, series=series, window=window)))
        except NoPromQL as exc:
            out.append((at, Skipped(at, exc.reason)))
    return out


def watch(plan: Plan, at: PlanGate, *, series: SeriesChoice, window: timedelta) -> Watch:
    """The gate in PromQL over ``window``; ``NoPromQL`` when it is not in Prometheus."""
    gate = at.gate
    choice = _series_choice(plan, gate, series)
    try:
        own = series_for(choice, gate.metric, gate.of)
        baseline = series_for(choice, gate.metric, gate.max_ratio_to) if gate.max_ratio_to else None
    except NoPromQL as exc:
        raise NoPromQL(_read_by_changeover(gate.metric) or exc.reason) from exc
    wording = threshold_wording(gate)
    if gate.metric in _LEAK:
        return _leak(own, window, wording)
    if gate.metric in PER_LOOK_QUANTILE:
        return _stable(own, window, wording)
    # A trigger "above X" fires when the gate "below X" fails, as the controller tests it.
    if at.trigger and gate.above is not None:
        gate = gate.model_copy(update={"below": gate.above, "above": None})
    if own.kind == "histogram":
        return _latency(gate, own, baseline, window, wording)
    if own.kind == "ratio":
        return _share(gate, own, baseline, window, wording)
    if own.kind == "counter":
        raise NoPromQL(f"{gate.metric} is a count of requests, not a condition to judge")
    return _gauge(gate, own, baseline, wording)


def threshold_wording(gate: Gate) -> str:
    """The gate's condition as the plan writes it: ``below 1%``, ``at most 1.2 × legacy``."""
    if gate.metric in _LEAK:
        rise = f"{LEAK_MB_PER_HOUR:g} MB/h and by {LEAK_MIN_RISE_MB:g} MB"
        parts = [f"no leak (a leak rises at least {rise})"]
    elif gate.metric in PER_LOOK_QUANTILE:
        parts = [f"stable (p95 rising by less than {STABLE_RISE:.0%} of its level)"]
    elif gate.ratio is not None:
        within = f"at most {gate.ratio:g} × {gate.max_ratio_to}"
        if gate.slack is not None:
            within += f" (or {gate.max_ratio_to} + {format_duration(gate.slack)})"
        parts = [within]
    elif gate.below is not None:
        parts = [f"below {gate.below}"]
    elif gate.above is not None:
        parts = [f"above {gate.above}"]
    else:
        parts = ["none observed"]
    if gate.sustained is not None:
        parts.append(f"sustained {format_duration(gate.sustained)}")
    return ", ".join(parts)


# --- by kind of series -------------------------------------------------------------------------


def _latency(
    gate: Gate, own: Series, baseline: Series | None, window: timedelta, wording: str
) -> Watch:
    q = value(own, window, QUANTILE)
    if gate.ratio is not None:
        assert baseline is not None  # the model requires max_ratio_to with ratio
        base = value(baseline, window, QUANTILE)
        allowed = f"{_num(gate.ratio)} * {base}"
        if gate.slack is not None:
            # "normal" is max(ratio × baseline, baseline + slack): the larger of the two levels
            plus = f"{base} + {_num(gate.slack.total_seconds())}"
            allowed = f"({allowed} > {plus}) or ({plus})"
        return Watch(q, f"{q} > {group(allowed)}", own.kind, own.unit, wording, allowed=allowed)
    limit = _seconds(gate.below if gate.below is not None else gate.above)
    return Watch(q, f"{q} > {_num(limit)}", own.kind, own.unit, wording, threshold=limit)


def _share(
    gate: Gate, own: Series, baseline: Series | None, window: timedelta, wording: str
) -> Watch:
    share = value(own, window)
    if gate.ratio is not None:
        assert baseline is not None
        allowed = f"{_num(gate.ratio)} * {group(value(baseline, window))}"
        return Watch(
            share, f"{share} > {group(allowed)}", own.kind, own.unit, wording, allowed=allowed
        )
    if gate.below is not None:
        limit = _share_of(gate.below)
        return Watch(share, f"{share} > {_num(limit)}", own.kind, own.unit, wording, limit)
    if gate.above is not None and gate.metric not in NONE_OBSERVED:
        # "Hit rate above 80 %" is judged on the misses; shown the way the plan says it.
        limit = _share_of(gate.above)
        good = f"1 - {group(share)}"
        return Watch(
            good, f"{good} < {_num(limit)}", own.kind, own.unit, wording, limit, breaks_above=False
        )
    return Watch(share, f"{share} > 0", own.kind, own.unit, wording, threshold=0.0)


def _gauge(gate: Gate, own: Series, baseline: Series | None, wording: str) -> Watch:
    level = own.expr
    if gate.ratio is not None:
        assert baseline is not None
        allowed = f"{_num(gate.ratio)} * {group(baseline.expr)}"
        return Watch(
            level, f"{level} > {group(allowed)}", own.kind, own.unit, wording, allowed=allowed
        )
    if gate.below is not None:
        limit = _number(gate.below, own.unit)
        return Watch(level, f"{level} >= {_num(limit)}", own.kind, own.unit, wording, limit)
    if gate.above is not None:
        limit = _number(gate.above, own.unit)
        return Watch(level, f"{level} <= {_num(limit)}", own.kind, own.unit, wording, limit, False)
    return Watch(level, f"{level} > 0", own.kind, own.unit, wording, threshold=0.0)


def _leak(own: Series, window: timedelta, wording: str) -> Watch:
    if own.kind != "gauge":
        raise NoPromQL(f"a memory trend needs a gauge in MB, not a {own.kind}")
    over = _trend(own.expr, window)
    condition = (
        f"deriv({over}) * 3600 > {_num(LEAK_MB_PER_HOUR)} and delta({over}) > "
        f"{_num(LEAK_MIN_RISE_MB)}"
    )
    says = "rising {{ $value | humanize }} MB/h"
    return Watch(own.expr, condition, own.kind, own.unit, wording, alert_value=says)


def _stable(own: Series, window: timedelta, wording: str) -> Watch:
    if own.kind != "histogram":
        raise NoPromQL(f"latency stability needs a latency histogram, not a {own.kind}")
    q = value(own, window, QUANTILE)
    over = _trend(q, window)
    span = max(TREND_WINDOW, window).total_seconds()
    # The controller's test: a rise over the window of more than STABLE_RISE of the median level.
    condition = (
        f"deriv({over}) * {_num(span)} > {_num(STABLE_RISE)} * quantile_over_time(0.5, {over})"
    )
    span_shown = format_duration(max(TREND_WINDOW, window))
    says = f"p95 up {{{{ $value | humanizeDuration }}}} in {span_shown}"
    return Watch(q, condition, own.kind, own.unit, wording, alert_value=says)


def _trend(expr: str, window: timedelta) -> str:
    span = max(TREND_WINDOW, window)
    return f"({expr})[{duration(span)}:{duration(span / TREND_STEPS)}]"


# --- where a metric comes from ------------------------------------------------------------------


def _series_choice(plan: Plan, gate: Gate, choice: SeriesChoice) -> SeriesChoice:
    """Whose series a gate reads, or ``NoPromQL`` when changeover reads it some other way."""
    if gate.check is not None:
        raise NoPromQL("synthetic checks that changeover runs itself at every look")
    if gate.metric in SIGNALLED:
        raise NoPromQL("a signal raised with 'changeover signal' (a person or a webhook)")
    if gate.metric in MIGRATION_METRICS:
        raise NoPromQL("read by changeover from the migration (live sync, last verify)")
    if gate.source is None:
        return choice
    system = plan.systems[gate.source]  # the plan validated the reference
    if isinstance(system, PrometheusSystem):
        return "app"
    if isinstance(system, RouterSystem) and system.type == "builtin":
        return "proxy"
    raise NoPromQL(f"read by changeover from the {system.kind} system {gate.source!r}")


def _read_by_changeover(metric: str) -> str | None:
    if metric in POSTGRES_METRICS:
        return f"no PromQL template for {metric!r}; changeover reads it from PostgreSQL"
    if metric in REDIS_METRICS:
        return f"no PromQL template for {metric!r}; changeover reads it from Redis"
    return None


# --- thresholds --------------------------------------------------------------------------------


def _seconds(threshold: Threshold | None) -> float:
    try:
        return parse_duration(threshold).total_seconds()
    except ValueError:
        raise NoPromQL(f"threshold {threshold!r} is not a duration like 100ms") from None


def _share_of(threshold: Threshold) -> float:
    try:
        return parse_ratio(threshold)
    except ValueError:
        raise NoPromQL(f"threshold {threshold!r} is not a share like 1% or 0.01") from None


def _number(threshold: Threshold, unit: str | None) -> float:
    """A gauge threshold in the series' unit: ``60%`` of a ``%`` series is 60, ``80%`` of a
    share is 0.8, ``512MB`` of an ``MB`` series is 512, ``2s`` of seconds is 2."""
    if isinstance(threshold, float | int):
        return float(threshold)
    text = threshold.strip()
    if unit == "%" and text.endswith("%"):
        text = text[:-1]
    elif text.endswith("%"):
        return _share_of(text)
    elif unit and text.endswith(unit):
        text = text[: -len(unit)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text).total_seconds()
    except ValueError:
        shown = f" in {unit}" if unit else ""
        raise NoPromQL(f"threshold {threshold!r} is not a number{shown}") from None


def _num(number: float) -> str:
    return f"{number:.12g}"


def _camel(text: str, separator: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.split(separator) if part)
