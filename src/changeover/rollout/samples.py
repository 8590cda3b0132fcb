"""What the cutover looked like, every few seconds: the journal's ``rollout.sample`` events.

While a phase is watched the controller reads each backend's requests, errors and latency
histogram and, every ``SAMPLE_S``, journals what happened since the previous sample — requests/s,
error rate, p50/p95/p99 per backend — with the weights and every gate's latest value, bound and
verdict. The dashboard draws these live and the report draws them afterwards, so both show the
same numbers the controller decided on. ``sample_payload`` is pure; the controller does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from changeover.analysis import Verdict, quantile_estimate
from changeover.metrics.base import Observation
from changeover.rollout.gates import counts, histogram

SAMPLE = "rollout.sample"
SAMPLE_S = 5.0  # seconds between samples: 720 journal events an hour, a smooth enough chart
SAMPLED_METRICS = ("error_rate", "latency")  # read per backend for the sample
QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


def backend_numbers(
    before: Mapping[str, Observation], after: Mapping[str, Observation], seconds: float
) -> dict[str, Any]:
    """One backend between two looks: ``before``/``after`` map metric name → observation.

    Counters that went backwards (a restarted source) count from zero, as the gates do; a metric
    the source could not read is left out rather than shown as zero.
    """
    numbers: dict[str, Any] = {}
    errors = after.get("error_rate")
    if errors is not None and errors.unavailable is None and errors.total is not None:
        bad, total = counts(before.get("error_rate"), errors)
        numbers["requests"] = total
        numbers["rps"] = round(total / seconds, 3) if seconds > 0 else None
        numbers["errors"] = bad
        numbers["error_rate"] = bad / total if total else None
    latency = after.get("latency")
    if latency is not None and latency.unavailable is None and latency.histogram is not None:
        window = histogram(before.get("latency"), latency)
        for name, quantile in QUANTILES:
            value = quantile_estimate(window, quantile)
            numbers[name] = None if math.isnan(value) or math.isinf(value) else value * 1000
    return numbers


def gate_summary(verdict: Verdict) -> dict[str, Any]:
    """The few numbers of a verdict a chart needs (the full verdict is journaled on change)."""
    return {
        "gate": verdict.gate,
        "outcome": verdict.outcome.value,
        "observed": _finite(verdict.observed),
        "bound": [_finite(b) for b in verdict.bound] if verdict.bound else None,
        "threshold": _finite(verdict.threshold),
        "unit": verdict.unit,
        "samples": verdict.samples,
    }


def sample_payload(
    phase: str,
    observed_s: float,
    weight: float | None,
    backends: Mapping[str, dict[str, Any]],
    verdicts: Sequence[Verdict],
    legacy: str = "legacy",
    new: str = "new",
) -> dict[str, Any]:
    weights = None if weight is None else {legacy: 100.0 - weight, new: weight}
    return {
        "phase": phase,
        "observed_s": round(observed_s, 3),
        "weights": weights,
        "backends": dict(backends),
        "gates": [gate_summary(v) for v in verdicts],
    }


def _finite(value: object) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None
