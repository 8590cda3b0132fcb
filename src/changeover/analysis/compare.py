"""Canary against baseline: is the canary's event rate more than ``max_ratio`` × the baseline's?

After Lindon & Malek, "Anytime-Valid Inference for Multinomial Count Data" (NeurIPS 2022): given
the total number of events, the canary's share of them is binomial, so the beta-binomial
confidence sequence of `rates` bounds the rate ratio at every moment.
"""

from __future__ import annotations

import math

from changeover.analysis.rates import (
    Prior,
    confidence_sequence,
    outside_above,
    outside_below,
    prior_for,
)
from changeover.analysis.verdict import Outcome, Verdict


def _share(ratio: float, canary_total: int, baseline_total: int) -> float:
    """θ = n_c·ρ / (n_c·ρ + n_b): the canary's expected share of all events at rate ratio ρ."""
    return canary_total * ratio / (canary_total * ratio + baseline_total)


def _ratio(share: float, canary_total: int, baseline_total: int) -> float:
    if share >= 1.0:
        return math.inf
    return share * baseline_total / ((1.0 - share) * canary_total)


def rate_ratio_bounds(
    canary_events: int,
    canary_total: int,
    baseline_events: int,
    baseline_total: int,
    *,
    alpha: float,
    prior: Prior,
) -> tuple[float, float]:
    """Anytime-valid (lower, upper) bounds on λ_canary / λ_baseline.

    The confidence sequence for the canary's share θ of all events (sequential in the number of
    events), mapped through the monotone ρ = θ·n_b / ((1 − θ)·n_c).
    """
    if canary_total <= 0 or baseline_total <= 0:
        return 0.0, math.inf
    events = canary_events + baseline_events
    low, high = confidence_sequence(canary_events, events, alpha=alpha, prior=prior)
    return _ratio(low, canary_total, baseline_total), _ratio(high, canary_total, baseline_total)


def compare_counts(
    canary_events: int,
    canary_total: int,
    baseline_events: int,
    baseline_total: int,
    *,
    max_ratio: float = 1.0,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_IMMEDIATE,
    elapsed_s: float = 0.0,
    gate: str = "error rate vs baseline",
    pass_needs_proof: bool = False,
) -> Verdict:
    """Decide "canary rate ≤ ``max_ratio`` × baseline rate" (e.g. 1.0 = not above baseline,
    1.5 = no degradation over 50%) from event and request counts of both, at any moment.

    Model: events in each arm are Poisson with rates λ_c·n_c and λ_b·n_b (requests as exposure;
    for error rates of a few percent the binomial is within a hair of this). Given T = x_c + x_b
    events, x_c ~ Binomial(T, θ) with θ = n_c·ρ / (n_c·ρ + n_b), ρ = λ_c / λ_b. The gate fails
    when the beta-binomial confidence sequence for θ (prior `prior_for(θ₀)`) lies above θ₀ =
    θ(max_ratio). Guarantee: if ρ ≤ max_ratio, P(the gate ever fails) ≤ alpha, however often it
    is evaluated — provided the traffic split n_c / (n_c + n_b) stays fixed while counting (the
    caller restarts the counts when the router weight changes). After the bake time and
    ``min_samples`` canary requests the gate passes; with ``pass_needs_proof`` only once the upper
    bound is below ``max_ratio`` (a stronger claim that needs many events when errors are rare).
    """
    if canary_total <= 0 or baseline_total <= 0:
        return Verdict(
            gate=gate,
            outcome=Outcome.CONTINUE,
            observed=math.nan,
            bound=(0.0, math.inf),
            threshold=max_ratio,
            samples=0,
            elapsed_s=elapsed_s,
            reason=f"{gate}: no requests counted yet on "
            + ("the canary" if canary_total <= 0 else "the baseline"),
            unit="×",
        )
    share0 = _share(max_ratio, canary_total, baseline_total)
    prior = prior_for(share0)
    events = canary_events + baseline_events
    lower, upper = rate_ratio_bounds(
        canary_events, canary_total, baseline_events, baseline_total, alpha=alpha, prior=prior
    )
    canary_rate = canary_events / canary_total
    baseline_rate = baseline_events / baseline_total
    if baseline_events:
        observed = canary_rate / baseline_rate
    else:
        observed = math.inf if canary_events else math.nan
    seen = (
        f"{gate}: canary {canary_events:,}/{canary_total:,}, baseline "
        f"{baseline_events:,}/{baseline_total:,}; ratio {_times(observed)}, "
        f"{100 * (1 - alpha):g}% bound {_times(lower)}–{_times(upper)}"
    )
    if outside_below(share0, canary_events, events, alpha=alpha, prior=prior):
        outcome = on_fail
        reason = f"{seen} lies above {_times(max_ratio)}"
    elif baked and canary_total >= min_samples and not pass_needs_proof:
        outcome = Outcome.PASS
        reason = f"{seen}: no evidence above {_times(max_ratio)} after the bake time"
    elif (
        baked
        and canary_total >= min_samples
        and outside_above(share0, canary_events, events, alpha=alpha, prior=prior)
    ):
        outcome = Outcome.PASS
        reason = f"{seen} lies below {_times(max_ratio)}"
    else:
        outcome = Outcome.CONTINUE
        reason = f"{seen}: watching"
    return Verdict(
        gate=gate,
        outcome=outcome,
        observed=observed,
        bound=(lower, upper),
        threshold=max_ratio,
        samples=events,
        elapsed_s=elapsed_s,
        reason=reason,
        unit="×",
    )


def _times(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:.3g}×"
