"""Latency gates from histograms: quantile bounds hold under peeking, "p95 < 100 ms" and
canary-vs-baseline decisions on simulated lognormal latencies."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from changeover.analysis import (
    Outcome,
    count_above,
    latency_compare_decision,
    latency_compare_gate,
    quantile_bounds,
    quantile_gate,
)

EDGES = [0.001 * 1.02**k for k in range(350)] + [math.inf]  # 1 ms to ~1 s at 2%, like HDR
SIGMA = 0.5
Z95 = 1.6448536269514722


def _record(counts: list[int], rng: random.Random, n: int, median_s: float) -> None:
    for _ in range(n):
        counts[bisect.bisect_left(EDGES, rng.lognormvariate(math.log(median_s), SIGMA))] += 1


def _hist(counts: list[int]) -> list[tuple[float, int]]:
    return list(zip(EDGES, counts, strict=True))


def test_count_above_separates_surely_and_possibly_slower_requests() -> None:
    hist = [(0.05, 10), (0.1, 5), (0.2, 3), (math.inf, 2)]
    assert count_above(hist, 0.1) == (5, 5, 20)
    assert count_above(hist, 0.15) == (2, 5, 20)
    with pytest.raises(ValueError, match="ascending"):
        count_above([(0.1, 1), (0.05, 1)], 0.1)


def test_quantile_bounds_cover_the_true_p95_at_every_look() -> None:
    rng = random.Random(3)
    median = 0.035
    true_p95 = median * math.exp(Z95 * SIGMA)
    misses = 0
    for _ in range(60):
        counts = [0] * len(EDGES)
        for _ in range(20):  # 20 looks, 100 requests apart
            _record(counts, rng, 100, median)
            low, high = quantile_bounds(_hist(counts), 0.95, alpha=0.05)
            if not low <= true_p95 <= high:
                misses += 1
                break
    assert misses <= 3 + 3 * math.sqrt(0.05 * 0.95 * 60), misses
    low, high = quantile_bounds(_hist(counts), 0.95, alpha=0.05)
    assert 0.6 * true_p95 < low < true_p95 < high < 1.6 * true_p95


def test_quantile_gate_fails_a_slow_service_and_passes_a_fast_one_after_the_bake() -> None:
    rng = random.Random(4)
    slow, fast = [0] * len(EDGES), [0] * len(EDGES)
    _record(slow, rng, 2000, 0.06)  # p95 ≈ 137 ms
    _record(fast, rng, 20000, 0.03)  # p95 ≈ 68 ms
    verdict = quantile_gate(_hist(slow), limit_s=0.1)
    assert verdict.outcome is Outcome.FAIL_GRACEFUL and verdict.gate == "p95 < 100 ms"
    assert "p95 ≈" in verdict.reason
    assert quantile_gate(_hist(fast), limit_s=0.1).outcome is Outcome.CONTINUE
    assert quantile_gate(_hist(fast), limit_s=0.1, baked=True).outcome is Outcome.PASS


def test_latency_compare_rarely_fails_an_equal_canary_under_peeking() -> None:
    rng = random.Random(8)
    failed = 0
    for _ in range(60):
        canary, baseline = [0] * len(EDGES), [0] * len(EDGES)
        for _ in range(10):  # looks every 100 canary / 400 baseline requests
            _record(canary, rng, 100, 0.035)
            _record(baseline, rng, 400, 0.035)
            outcome = latency_compare_decision(_hist(canary), _hist(baseline), alpha=0.05)
            if outcome is Outcome.FAIL_IMMEDIATE:
                failed += 1
                break
    assert failed <= 3 + 3 * math.sqrt(0.05 * 0.95 * 60), failed


def test_latency_compare_fails_a_canary_with_p95_fifty_percent_higher() -> None:
    rng = random.Random(9)
    canary, baseline = [0] * len(EDGES), [0] * len(EDGES)
    requests = 0
    verdict = latency_compare_gate(_hist(canary), _hist(baseline))
    while verdict.outcome is Outcome.CONTINUE:
        _record(canary, rng, 250, 0.035 * 1.5)
        _record(baseline, rng, 2250, 0.035)
        requests += 250
        verdict = latency_compare_gate(_hist(canary), _hist(baseline), tolerance=0.2)
        assert requests <= 10_000, verdict.reason
    assert verdict.outcome is Outcome.FAIL_IMMEDIATE and verdict.bound[0] > 0.05
    assert "lies above 5%" in verdict.reason


def test_latency_compare_passes_an_equal_canary_after_the_bake() -> None:
    rng = random.Random(10)
    canary, baseline = [0] * len(EDGES), [0] * len(EDGES)
    _record(canary, rng, 5000, 0.035)
    _record(baseline, rng, 20000, 0.035)
    verdict = latency_compare_gate(_hist(canary), _hist(baseline), baked=True)
    assert verdict.outcome is Outcome.PASS, verdict.reason
    empty = latency_compare_gate(_hist([0] * len(EDGES)), _hist(baseline))
    assert empty.outcome is Outcome.CONTINUE


def test_slack_lets_a_few_milliseconds_pass_but_not_a_real_regression() -> None:
    rng = random.Random(11)
    canary, baseline = [0] * len(EDGES), [0] * len(EDGES)
    _record(canary, rng, 5000, 0.003)  # p95 ≈ 6.8 ms: 50 % slower than the baseline's 4.5 ms
    _record(baseline, rng, 20000, 0.002)
    strict = latency_compare_gate(_hist(canary), _hist(baseline), baked=True)
    assert strict.outcome is Outcome.FAIL_IMMEDIATE, strict.reason
    slack = latency_compare_gate(_hist(canary), _hist(baseline), baked=True, slack_s=0.005)
    assert slack.outcome is Outcome.PASS, slack.reason
    slow, base = [0] * len(EDGES), [0] * len(EDGES)
    _record(slow, rng, 5000, 0.035 * 1.5)  # tens of milliseconds slower: slack does not hide it
    _record(base, rng, 20000, 0.035)
    verdict = latency_compare_gate(_hist(slow), _hist(base), baked=True, slack_s=0.005)
    assert verdict.outcome is Outcome.FAIL_IMMEDIATE, verdict.reason
