"""Canary-vs-baseline count comparison: false fails under equal rates with continuous peeking,
and detection of a clearly worse canary."""

from __future__ import annotations

import math
import random

from analysis.simulate import binomial
from changeover.analysis import Outcome, compare_counts, rate_ratio_bounds
from changeover.analysis.compare import _share
from changeover.analysis.rates import outside_below, prior_for


def test_compare_counts_false_fail_rate_stays_below_alpha_for_equal_rates_under_peeking() -> None:
    alpha, runs = 0.05, 300
    rng = random.Random(11)
    share0 = _share(1.0, 100, 900)  # 10% canary, "not above baseline"
    prior = prior_for(share0)
    failed = 0
    for _ in range(runs):
        canary = baseline = 0
        for _ in range(500):  # peek after every 1,000 requests, up to 500,000
            canary += binomial(rng, 100, 0.01)
            baseline += binomial(rng, 900, 0.01)
            if outside_below(share0, canary, canary + baseline, alpha=alpha, prior=prior):
                failed += 1
                break
    assert failed / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), failed


def test_compare_counts_fails_a_canary_with_three_times_the_baseline_error_rate() -> None:
    rng = random.Random(5)
    canary = baseline = requests = 0
    verdict = compare_counts(0, 0, 0, 0)
    while verdict.outcome is Outcome.CONTINUE:
        canary += binomial(rng, 500, 0.03)
        baseline += binomial(rng, 4500, 0.01)
        requests += 500
        verdict = compare_counts(canary, requests, baseline, 9 * requests, max_ratio=1.5)
        assert requests <= 20_000, verdict.reason
    assert verdict.outcome is Outcome.FAIL_IMMEDIATE
    assert verdict.bound[0] > 1.5 and "lies above 1.5×" in verdict.reason


def test_compare_counts_passes_after_the_bake_time_without_evidence_of_harm() -> None:
    assert compare_counts(0, 1000, 0, 9000, baked=True).outcome is Outcome.PASS
    assert compare_counts(0, 1000, 0, 9000, baked=False).outcome is Outcome.CONTINUE
    unproven = compare_counts(0, 1000, 0, 9000, baked=True, pass_needs_proof=True)
    assert unproven.outcome is Outcome.CONTINUE
    proven = compare_counts(100, 100_000, 2000, 900_000, baked=True, pass_needs_proof=True)
    assert proven.outcome is Outcome.PASS and proven.bound[1] < 1.0


def test_compare_counts_waits_when_one_side_has_no_requests() -> None:
    verdict = compare_counts(3, 100, 0, 0)
    assert verdict.outcome is Outcome.CONTINUE and "baseline" in verdict.reason
    assert verdict.to_json()["observed"] is None


def test_rate_ratio_bounds_contain_the_observed_ratio() -> None:
    low, high = rate_ratio_bounds(50, 10_000, 400, 90_000, alpha=0.01, prior=prior_for(0.1))
    assert low < (50 / 10_000) / (400 / 90_000) < high
