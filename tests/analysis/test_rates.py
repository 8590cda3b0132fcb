"""The beta-binomial confidence sequence and the rate gate, including their false-fail rate under
continuous peeking, checked by simulation."""

from __future__ import annotations

import json
import math
import random

import pytest

from analysis.simulate import binomial
from changeover.analysis import (
    Outcome,
    Verdict,
    combine,
    confidence_sequence,
    outside_below,
    prior_for,
    rate_decision,
    rate_gate,
)

THRESHOLD = 0.01


def _false_fail_rate(true_rate: float, *, runs: int, alpha: float, seed: int) -> float:
    """Share of runs whose gate ever fails, looking after every 100 requests up to 200,000."""
    prior = prior_for(THRESHOLD)
    # The fail region at each look is "errors ≥ c_n" (the lower bound rises with the count), so
    # the critical counts are computed once and each run only compares its running sum.
    critical = []
    errors = 0
    for look in range(1, 2001):
        total = look * 100
        errors = max(errors, int(THRESHOLD * total))
        while not outside_below(THRESHOLD, errors, total, alpha=alpha, prior=prior):
            errors += 1
        critical.append(errors)
    rng = random.Random(seed)
    failed = 0
    for _ in range(runs):
        running = 0
        for c in critical:
            running += binomial(rng, 100, true_rate)
            if running >= c:
                failed += 1
                break
    return failed / runs


@pytest.mark.parametrize("factor", [0.5, 1.0])
def test_rate_gate_false_fail_rate_stays_below_alpha_when_peeking_every_100_requests(
    factor: float,
) -> None:
    alpha = 0.05
    rate = _false_fail_rate(THRESHOLD * factor, runs=1000, alpha=alpha, seed=int(factor * 10))
    # Monte-Carlo slack: three standard errors of a proportion at alpha over 1,000 runs.
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 1000), rate


def test_rate_gate_fails_a_rate_five_times_the_threshold_within_a_few_hundred_requests() -> None:
    rng = random.Random(7)
    detected = []
    for _ in range(200):
        errors = total = 0
        while rate_decision(errors, total, THRESHOLD, alpha=0.01) is not Outcome.FAIL_IMMEDIATE:
            errors += binomial(rng, 100, 5 * THRESHOLD)
            total += 100
            assert total <= 5000, "a 5% error rate went undetected for 5,000 requests"
        detected.append(total)
    assert sorted(detected)[len(detected) // 2] <= 400, sorted(detected)


def test_confidence_sequence_brackets_the_observed_rate_and_narrows_with_samples() -> None:
    prior = prior_for(THRESHOLD)
    low, high = confidence_sequence(20, 1000, alpha=0.01, prior=prior)
    assert 0 < low < 0.02 < high < 0.05
    low2, high2 = confidence_sequence(200, 10000, alpha=0.01, prior=prior)
    assert low < low2 < 0.02 < high2 < high
    assert confidence_sequence(0, 0, alpha=0.01, prior=prior) == (0.0, 1.0)
    assert confidence_sequence(0, 500, alpha=0.01, prior=prior)[0] == 0.0
    assert confidence_sequence(500, 500, alpha=0.01, prior=prior)[1] == pytest.approx(1.0)


def test_rate_gate_passes_only_after_the_bake_time_with_the_upper_bound_below() -> None:
    clean = rate_gate(10, 10_000, THRESHOLD, alpha=0.01, baked=False)
    assert clean.outcome is Outcome.CONTINUE and "bake time" in clean.reason
    baked = rate_gate(10, 10_000, THRESHOLD, alpha=0.01, baked=True)
    assert baked.outcome is Outcome.PASS and baked.bound[1] < THRESHOLD
    short = rate_gate(10, 10_000, THRESHOLD, alpha=0.01, baked=True, min_samples=20_000)
    assert short.outcome is Outcome.CONTINUE
    near = rate_gate(95, 10_000, THRESHOLD, alpha=0.01, baked=True)
    assert near.outcome is Outcome.CONTINUE and "still includes" in near.reason


def test_rate_gate_fails_with_the_requested_outcome_and_explains_the_bound() -> None:
    verdict = rate_gate(30, 500, THRESHOLD, on_fail=Outcome.FAIL_GRACEFUL, elapsed_s=1.0)
    assert verdict.outcome is Outcome.FAIL_GRACEFUL and verdict.failed
    assert verdict.bound[0] > THRESHOLD and verdict.observed == pytest.approx(0.06)
    assert "lies above the 1% threshold" in verdict.reason and "30 of 500" in verdict.reason
    assert json.loads(json.dumps(verdict.to_json()))["outcome"] == "fail_graceful"


def test_rate_gate_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="0 ≤ events ≤ total"):
        rate_gate(11, 10, THRESHOLD)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        prior_for(0.0)


def _verdict(outcome: Outcome) -> Verdict:
    return Verdict("g", outcome, 0.0, (0.0, math.inf), 0.01, 0, 0.0, "r")


def test_combine_takes_the_most_severe_outcome() -> None:
    assert combine([]) is Outcome.PASS
    assert combine([_verdict(Outcome.PASS), _verdict(Outcome.CONTINUE)]) is Outcome.CONTINUE
    mixed = [_verdict(o) for o in (Outcome.FAIL_GRACEFUL, Outcome.PASS, Outcome.FAIL_IMMEDIATE)]
    assert combine(mixed) is Outcome.FAIL_IMMEDIATE
    assert combine([_verdict(Outcome.FAIL_GRACEFUL), _verdict(Outcome.CONTINUE)]) is (
        Outcome.FAIL_GRACEFUL
    )
    assert _verdict(Outcome.PASS).to_json()["bound"] == [0.0, None]  # JSON has no infinity
