"""Latency gates from histogram bucket counts: "p95 < 100 ms" and canary-vs-baseline quantiles.

A quantile statement is a rate statement: p95 < L ⇔ fewer than 5% of requests are slower than L.
So the same anytime-valid beta-binomial confidence sequence (`rates`) bounds the share of slow
requests, which is an order-statistic bound on the quantile, valid at every moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import accumulate

from changeover.analysis.rates import (
    confidence_sequence,
    outside_above,
    outside_below,
    pct,
    prior_for,
    rate_gate,
)
from changeover.analysis.verdict import Outcome, Verdict

# Buckets as (upper bound in seconds, count) in ascending order, counts per bucket (not
# cumulative); bucket i holds the requests in (upper[i-1], upper[i]], the first [0, upper[0]].
# The last upper bound may be math.inf. HDR histograms and Prometheus buckets both map to this.
Histogram = Sequence[tuple[float, int]]


def _check(histogram: Histogram) -> None:
    previous = -math.inf
    for upper, count in histogram:
        if not upper > previous:
            raise ValueError("histogram bucket bounds must be strictly ascending")
        if count < 0:
            raise ValueError(f"histogram bucket counts must be ≥ 0, got {count}")
        previous = upper


def count_above(histogram: Histogram, limit_s: float) -> tuple[int, int, int]:
    """(surely, possibly, total): requests surely slower than ``limit_s`` (their bucket starts at
    or above it), possibly slower (their bucket ends above it), and all requests."""
    _check(histogram)
    surely = possibly = total = 0
    lower = 0.0
    for upper, count in histogram:
        total += count
        if lower >= limit_s:
            surely += count
        if upper > limit_s:
            possibly += count
        lower = upper
    return surely, possibly, total


def quantile_estimate(histogram: Histogram, quantile: float) -> float:
    """The upper bound of the bucket holding the ``quantile`` (``nan`` for an empty histogram)."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return math.nan
    for upper, cumulative in zip(
        (u for u, _ in histogram), accumulate(c for _, c in histogram), strict=True
    ):
        if cumulative >= quantile * total:
            return upper
    return histogram[-1][0]


def quantile_bounds(histogram: Histogram, quantile: float, *, alpha: float) -> tuple[float, float]:
    """Anytime-valid (lower, upper) bounds in seconds on the ``quantile`` of the latency, at bucket
    resolution (``0.0`` / ``math.inf`` when the data cannot bound it yet).

    For a bucket edge x let S(x) be the requests slower than x. The upper bound is the smallest
    edge whose confidence sequence for P(X > x) lies below 1 − q; the lower bound the largest edge
    whose sequence lies above 1 − q. Only the sequence at the (unknown, fixed) true quantile x*
    matters — S(x) is monotone in x, so if that one covers 1 − q, no edge below x* can qualify
    for the upper bound and none above it for the lower — hence P(ever x* ∉ bounds) ≤ alpha,
    with no correction for the number of edges.
    """
    _check(histogram)
    tail = 1.0 - quantile
    prior = prior_for(tail)
    edges = [upper for upper, _ in histogram if math.isfinite(upper)]
    cumulative = list(accumulate(count for _, count in histogram))
    total = cumulative[-1] if cumulative else 0
    above = [total - c for c in cumulative[: len(edges)]]  # requests slower than each edge

    # above[] falls as the edge rises, so "lies below 1 − q" holds from some edge on and "lies
    # above 1 − q" up to some edge: binary searches, a handful of evaluations per bound.
    def below_tail(i: int) -> bool:
        return outside_above(tail, above[i], total, alpha=alpha, prior=prior)

    def above_tail(i: int) -> bool:
        return outside_below(tail, above[i], total, alpha=alpha, prior=prior)

    first = _first_true(below_tail, len(edges))
    upper_bound = edges[first] if first < len(edges) else math.inf
    last = _first_true(lambda i: not above_tail(i), len(edges)) - 1
    lower_bound = edges[last] if last >= 0 else 0.0
    return lower_bound, upper_bound


def _first_true(predicate: Callable[[int], bool], size: int) -> int:
    """The first index in [0, size) where a monotone (False…True) predicate holds, else size."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle + 1
    return low


def quantile_gate(
    histogram: Histogram,
    *,
    limit_s: float,
    quantile: float = 0.95,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_GRACEFUL,
    elapsed_s: float = 0.0,
    gate: str | None = None,
) -> Verdict:
    """Decide "p<quantile> < limit_s" (e.g. p95 < 100 ms) from a latency histogram, at any moment.

    The share of requests slower than ``limit_s`` is tested against 1 − quantile with
    `rate_gate`: fail when its confidence sequence lies above (counting only requests surely
    slower), pass after the bake time when it lies below (counting every request possibly
    slower). Guarantee: if the true quantile is below ``limit_s``, P(ever fails) ≤ alpha.
    With raw counts instead of a histogram, call `rate_gate(slow, total, 1 − quantile)`.
    """
    surely, possibly, total = count_above(histogram, limit_s)
    name = gate or f"p{100 * quantile:g} < {limit_s * 1000:g} ms"
    verdict = rate_gate(
        surely,
        total,
        1.0 - quantile,
        alpha=alpha,
        min_samples=min_samples,
        baked=baked,
        on_fail=on_fail,
        elapsed_s=elapsed_s,
        gate=f"share slower than {limit_s * 1000:g} ms",
        pass_errors=possibly,
    )
    estimate = quantile_estimate(histogram, quantile)
    return replace(
        verdict,
        gate=name,
        reason=f"{name} (p{100 * quantile:g} ≈ {_ms(estimate)}): {verdict.reason}",
    )


def latency_compare_decision(
    canary: Histogram,
    baseline: Histogram,
    *,
    quantile: float = 0.95,
    tolerance: float = 0.2,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_IMMEDIATE,
    slack_s: float = 0.0,
) -> Outcome:
    """`latency_compare_gate`'s outcome alone (no bisections), for callers that decide often."""
    return _compare(
        canary, baseline, quantile, tolerance, alpha, min_samples, baked, on_fail, slack_s
    )[0]


def _allowed(baseline_q: float, tolerance: float, slack_s: float) -> float:
    """The slowest canary quantile still "normal" next to a baseline quantile ``baseline_q``."""
    return max((1.0 + tolerance) * baseline_q, baseline_q + slack_s)


def _compare(
    canary: Histogram,
    baseline: Histogram,
    quantile: float,
    tolerance: float,
    alpha: float,
    min_samples: int,
    baked: bool,
    on_fail: Outcome,
    slack_s: float = 0.0,
) -> tuple[Outcome, tuple[float, float], tuple[int, int, int]]:
    half = alpha / 2.0
    tail = 1.0 - quantile
    prior = prior_for(tail)
    low_q, high_q = quantile_bounds(baseline, quantile, alpha=half)
    surely = total = 0
    if math.isfinite(high_q):
        surely, _, total = count_above(canary, _allowed(high_q, tolerance, slack_s))
        if outside_below(tail, surely, total, alpha=half, prior=prior):
            return on_fail, (low_q, high_q), (surely, surely, total)
    _, possibly, total = count_above(canary, _allowed(low_q, tolerance, slack_s))
    if (
        baked
        and total >= min_samples
        and outside_above(tail, possibly, total, alpha=half, prior=prior)
    ):
        return Outcome.PASS, (low_q, high_q), (surely, possibly, total)
    return Outcome.CONTINUE, (low_q, high_q), (surely, possibly, total)


def latency_compare_gate(
    canary: Histogram,
    baseline: Histogram,
    *,
    quantile: float = 0.95,
    tolerance: float = 0.2,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_IMMEDIATE,
    elapsed_s: float = 0.0,
    gate: str | None = None,
    slack_s: float = 0.0,
) -> Verdict:
    """Decide "canary p<quantile> ≤ (1 + tolerance) × baseline p<quantile>" ("latency normal"
    with tolerance 0.2; "degradation > 50%" with tolerance 0.5), at any moment. ``slack_s``
    widens the allowance to at least baseline + slack: at a few milliseconds, 20 % is scheduler
    noise no user notices, and a gate that cannot tell noise from regression never decides.

    The share of canary requests slower than (1 + tolerance) × q_hi is tested against 1 − quantile,
    where q_hi is the baseline quantile's anytime-valid *upper* bound (`quantile_bounds`, α/2).
    Conservative by construction: while q_hi ≥ the true baseline quantile q_b, every request
    counted slow is also slower than (1 + tolerance)·q_b, and the confidence sequence's lower end
    only rises with the count, so a false fail needs the α/2 sequence on the canary to miss.
    Guarantee: if the canary's quantile is at most (1 + tolerance)·q_b, P(ever fails) ≤ alpha.
    Passing (after the bake time) uses the baseline's lower bound and every request possibly slow.
    The baseline histogram should cover the same period as the canary's.
    """
    name = gate or f"p{100 * quantile:g} within {100 * tolerance:g}% of baseline"
    outcome, (low_q, high_q), (surely, possibly, total) = _compare(
        canary, baseline, quantile, tolerance, alpha, min_samples, baked, on_fail, slack_s
    )
    tail = 1.0 - quantile
    prior = prior_for(tail)
    counted = surely if outcome is not Outcome.PASS else possibly
    lower, upper = confidence_sequence(counted, total, alpha=alpha / 2.0, prior=prior)
    canary_q = quantile_estimate(canary, quantile)
    limit = _allowed(low_q if outcome is Outcome.PASS else high_q, tolerance, slack_s)
    share = counted / total if total else 0.0
    what = (
        f"{name}: canary p{100 * quantile:g} ≈ {_ms(canary_q)}, baseline's in "
        f"{_ms(low_q)}–{_ms(high_q)}; {pct(share)} of {total:,} canary requests slower than "
        f"{_ms(limit)} (bound {pct(lower)}–{pct(upper)})"
    )
    if outcome is Outcome.PASS:
        reason = f"{what} lies below {pct(tail)}"
    elif outcome is Outcome.CONTINUE:
        reason = (
            f"{what}: baseline too short to bound its p{100 * quantile:g} yet"
            if not math.isfinite(high_q)
            else f"{what}: watching"
        )
    else:
        reason = f"{what} lies above {pct(tail)}"
    return Verdict(
        gate=name,
        outcome=outcome,
        observed=share,
        bound=(lower, upper),
        threshold=tail,
        samples=total,
        elapsed_s=elapsed_s,
        reason=reason,
    )


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return "∞" if math.isinf(seconds) else f"{seconds * 1000:.3g} ms"
