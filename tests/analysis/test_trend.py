"""Leak detection: Theil–Sen with Mann–Kendall on noisy series."""

from __future__ import annotations

import math
import random

from changeover.analysis import Outcome, leak_gate, mann_kendall, theil_sen


def _series(rng: random.Random, mb_per_hour: float, n: int = 120) -> list[tuple[float, float]]:
    # Ten minutes of RSS every 5 s around 400 MB with 5 MB of noise and a few GC spikes.
    points = []
    for i in range(n):
        t = 5.0 * i
        spike = 30.0 if rng.random() < 0.02 else 0.0
        points.append((t, 400.0 + mb_per_hour * t / 3600.0 + rng.gauss(0.0, 5.0) + spike))
    return points


def test_flat_noisy_series_pass_with_a_false_alarm_rate_below_alpha() -> None:
    rng = random.Random(1)
    alpha, runs = 0.05, 200
    alarms = sum(
        leak_gate(_series(rng, 0.0, n=60), min_slope_per_hour=0.0, alpha=alpha, baked=True).failed
        for _ in range(runs)
    )
    assert alarms / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), alarms


def test_a_fifty_mb_per_hour_leak_is_flagged_with_its_slope() -> None:
    verdict = leak_gate(_series(random.Random(2), 50.0), min_slope_per_hour=10.0, alpha=0.01)
    assert verdict.outcome is Outcome.FAIL_GRACEFUL, verdict.reason
    assert 30.0 < verdict.observed < 70.0 and verdict.unit == "MB/hour"
    assert verdict.bound[0] < verdict.observed < verdict.bound[1]
    assert "MB/hour" in verdict.reason


def test_a_significant_but_small_slope_is_not_a_leak() -> None:
    verdict = leak_gate(_series(random.Random(3), 50.0), min_slope_per_hour=200.0, baked=True)
    assert verdict.outcome is Outcome.PASS


def test_leak_gate_waits_for_enough_samples() -> None:
    verdict = leak_gate([(0.0, 1.0), (1.0, 2.0)], min_slope_per_hour=1.0, baked=True)
    assert verdict.outcome is Outcome.CONTINUE and "waiting" in verdict.reason


def test_theil_sen_ignores_an_outlier_and_mann_kendall_corrects_for_ties() -> None:
    points = [(float(t), 2.0 * t) for t in range(10)]
    points[5] = (5.0, 1000.0)
    slope, _ = theil_sen(points)
    assert slope == 2.0
    s, variance, _, p = mann_kendall([(float(t), 1.0) for t in range(10)])  # all tied
    assert (s, variance, p) == (0, 0.0, 1.0)
    s, variance, _, p = mann_kendall([(float(t), float(t // 2)) for t in range(10)])
    assert s > 0 and variance < 10 * 9 * 25 / 18 and p < 0.01


def test_a_process_warming_up_is_steep_but_too_small_a_rise_to_be_a_leak() -> None:
    # A new process: RSS climbs 3 MB in the first 12 s (imports, pools, caches) — 900 MB/hour
    # if read as a slope — then holds. Not a leak: the rise is a few MB.
    warming = [(float(t), 60.0 + min(t, 12) * 0.25) for t in range(15)]
    verdict = leak_gate(warming, min_slope_per_hour=10.0, min_rise=16.0, baked=True)
    assert verdict.outcome is Outcome.PASS, verdict.reason
    # the demo's leak fault: 40 MB a second
    leaking = [(float(t), 60.0 + 40.0 * t) for t in range(15)]
    verdict = leak_gate(leaking, min_slope_per_hour=10.0, min_rise=16.0)
    assert verdict.failed and "MB over 14 s" in verdict.reason, verdict.reason
