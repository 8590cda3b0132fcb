"""Anytime-valid confidence sequences for a Bernoulli rate (error rate, share of slow requests).

The beta-binomial mixture martingale of Robbins (1970) — the "mixture SPRT" of Lindon et al.,
"Rapid Regression Detection in Software Deployments through Sequential Testing" (KDD 2022) — gives
bounds that hold at every sample size at once, so a gate may be evaluated after every request.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from changeover.analysis.verdict import Outcome, Verdict

# Bisection to about 1e-10 relative precision in p: far below anything a reason prints.
_ITERATIONS = 40


class Prior(NamedTuple):
    """Beta(a, b) mixing distribution of the mixture martingale."""

    a: float
    b: float


def prior_for(rate: float) -> Prior:
    """The mixing prior used for a gate whose threshold is ``rate``: mean ``rate``, sd ≈ ``rate``.

    Beta(1, (1 − r)/r) for r ≤ 1/2 (mirrored above 1/2): its mean is the threshold and its spread
    is about the threshold itself, so it puts its weight on the alternatives a canary gate cares
    about (one to several times the threshold) instead of on rates near 0 or 1. The choice only
    changes power — how soon a bad canary is caught — never the validity of the bound (Ville's
    inequality holds for any prior fixed before the data).
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"a rate threshold must lie strictly between 0 and 1, got {rate!r}")
    if rate <= 0.5:
        return Prior(1.0, (1.0 - rate) / rate)
    return Prior(rate / (1.0 - rate), 1.0)


def _log_beta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _log_likelihood(p: float, successes: int, failures: int) -> float:
    """log(p^S (1 − p)^F), with 0·log 0 = 0."""
    total = 0.0
    if successes:
        total += successes * math.log(p) if p > 0.0 else -math.inf
    if failures:
        total += failures * math.log1p(-p) if p < 1.0 else -math.inf
    return total


def _log_marginal(successes: int, trials: int, prior: Prior) -> float:
    a, b = prior
    return _log_beta(a + successes, b + trials - successes) - _log_beta(a, b)


def log_mixture_martingale(p: float, successes: int, trials: int, prior: Prior) -> float:
    """log M_n(p) = log[B(a + S, b + n − S) / B(a, b)] − log[p^S (1 − p)^(n − S)].

    Under independent Bernoulli(p) observations M_n(p) is a nonnegative martingale with mean 1,
    so by Ville's inequality P(∃ n: M_n(p) ≥ 1/α) ≤ α.
    """
    _check_counts(successes, trials)
    return _log_marginal(successes, trials, prior) - _log_likelihood(
        p, successes, trials - successes
    )


def outside_below(p: float, successes: int, trials: int, *, alpha: float, prior: Prior) -> bool:
    """True when the whole confidence sequence lies above ``p`` (its lower bound ≥ p).

    One evaluation of the martingale instead of a bisection: what a gate needs to decide.
    """
    if trials == 0 or successes <= p * trials:
        return False
    return log_mixture_martingale(p, successes, trials, prior) >= -math.log(alpha)


def outside_above(p: float, successes: int, trials: int, *, alpha: float, prior: Prior) -> bool:
    """True when the whole confidence sequence lies below ``p`` (its upper bound ≤ p)."""
    if trials == 0 or successes >= p * trials:
        return False
    return log_mixture_martingale(p, successes, trials, prior) >= -math.log(alpha)


def confidence_sequence(
    successes: int, trials: int, *, alpha: float, prior: Prior
) -> tuple[float, float]:
    """The (lower, upper) bounds of CS_n = {p : M_n(p) < 1/α}.

    Guarantee (Robbins 1970; Howard et al., "Time-uniform, nonparametric, nonasymptotic confidence
    sequences", 2021): for i.i.d. Bernoulli(p) data, P(∃ n: p ∉ CS_n) ≤ α — the bounds may be
    looked at after every observation and acted upon, with the error rate still at most α.
    log M_n(p) is convex in p with its minimum (≤ 0) at S/n, so the set is one interval, never
    empty; each end is found by bisection in log space.
    """
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if trials == 0:
        return 0.0, 1.0
    lower = _lower_end(successes, trials, alpha, prior)
    upper = 1.0 - _lower_end(trials - successes, trials, alpha, Prior(prior.b, prior.a))
    return lower, upper


def _lower_end(successes: int, trials: int, alpha: float, prior: Prior) -> float:
    if successes == 0:
        return 0.0
    failures = trials - successes
    # log M_n(p) ≥ log(1/α)  ⇔  log-likelihood(p) ≤ log-marginal − log(1/α); the likelihood rises
    # on (0, S/n], so the lower end is where it crosses that level.
    level = _log_marginal(successes, trials, prior) + math.log(alpha)
    high = math.log(successes / trials)
    step = 1.0
    low = high - step
    while _log_likelihood(math.exp(low), successes, failures) > level:
        step *= 2.0
        low = high - step
        if low < -700.0:  # below 1e-304: as good as zero
            return 0.0
    for _ in range(_ITERATIONS):
        middle = 0.5 * (low + high)
        if _log_likelihood(math.exp(middle), successes, failures) > level:
            high = middle
        else:
            low = middle
    return math.exp(low)


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"counts must satisfy 0 ≤ events ≤ total, got {successes} of {trials}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")


def pct(value: float) -> str:
    """A rate as a short percentage for reasons: 0.0123 → '1.23%'."""
    if not math.isfinite(value):
        return "∞"
    return f"{100.0 * value:.3g}%"


def rate_decision(
    errors: int,
    total: int,
    threshold: float,
    *,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_IMMEDIATE,
    prior: Prior | None = None,
    pass_errors: int | None = None,
) -> Outcome:
    """`rate_gate`'s outcome alone: two evaluations of the martingale, no bisection.

    For callers that decide often and explain rarely (the detection benchmark evaluates it
    hundreds of thousands of times); `rate_gate` uses it, so both always agree.
    """
    _check_alpha(alpha)
    prior = prior or prior_for(threshold)
    if outside_below(threshold, errors, total, alpha=alpha, prior=prior):
        return on_fail
    pass_count = errors if pass_errors is None else pass_errors
    if (
        baked
        and total >= min_samples
        and outside_above(threshold, pass_count, total, alpha=alpha, prior=prior)
    ):
        return Outcome.PASS
    return Outcome.CONTINUE


def rate_gate(
    errors: int,
    total: int,
    threshold: float,
    *,
    alpha: float = 0.01,
    min_samples: int = 0,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_IMMEDIATE,
    elapsed_s: float = 0.0,
    gate: str = "error rate",
    prior: Prior | None = None,
    pass_errors: int | None = None,
) -> Verdict:
    """Decide "rate < threshold" from ``errors`` of ``total`` events, at any moment.

    Fails (``on_fail``) as soon as the confidence sequence's lower bound is above ``threshold``;
    passes only when ``baked`` (the minimum bake time is over), ``total ≥ min_samples`` and the
    upper bound is below ``threshold``; otherwise continues. Guarantee: when the true rate is at
    most ``threshold``, the probability that this gate *ever* fails — however often it is
    evaluated — is at most ``alpha`` (Ville's inequality on the beta-binomial mixture, see
    `confidence_sequence`); ``min_samples`` delays a pass, never a fail. The prior defaults to
    `prior_for(threshold)`. ``pass_errors`` (≥ ``errors``) is the count used for the pass
    decision when the count is only known within a range (histogram buckets straddling a limit):
    fail on the surely-bad count, pass on the possibly-bad one.
    """
    _check_counts(errors, total)
    pass_count = errors if pass_errors is None else pass_errors
    _check_counts(pass_count, total)
    prior = prior or prior_for(threshold)
    outcome = rate_decision(
        errors,
        total,
        threshold,
        alpha=alpha,
        min_samples=min_samples,
        baked=baked,
        on_fail=on_fail,
        prior=prior,
        pass_errors=pass_count,
    )
    lower, _ = confidence_sequence(errors, total, alpha=alpha, prior=prior)
    _, upper = confidence_sequence(pass_count, total, alpha=alpha, prior=prior)
    observed = errors / total if total else 0.0
    seen = f"{gate} {pct(observed)} ({errors:,} of {total:,})"
    interval = f"{100 * (1 - alpha):g}% bound {pct(lower)}–{pct(upper)}"
    if outcome is Outcome.PASS:
        reason = f"{seen}: {interval} lies below the {pct(threshold)} threshold"
    elif outcome is not Outcome.CONTINUE:
        reason = f"{seen}: {interval} lies above the {pct(threshold)} threshold"
    elif upper >= threshold:
        reason = f"{seen}: {interval} still includes the {pct(threshold)} threshold"
    else:
        waiting = "the bake time" if not baked else f"{min_samples:,} samples"
        reason = (
            f"{seen}: {interval} is below the {pct(threshold)} threshold; waiting for {waiting}"
        )
    return Verdict(
        gate=gate,
        outcome=outcome,
        observed=observed,
        bound=(lower, upper),
        threshold=threshold,
        samples=total,
        elapsed_s=elapsed_s,
        reason=reason,
    )
