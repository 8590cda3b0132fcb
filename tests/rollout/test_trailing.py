"""Rollback triggers judge a trailing window, not the whole phase (controller `_trailing`)."""

from __future__ import annotations

from collections import deque

from changeover.analysis import Outcome, Sustained
from changeover.metrics.base import Observation
from changeover.plan.model import Gate
from changeover.rollout.controller import _key, _trailing
from changeover.rollout.gates import Reading, trigger_gate


def _fire_time(rule: Gate, looks: list[tuple[float, int, int]], *, trailing: bool) -> float | None:
    """Feed cumulative (second, errors, requests) looks to the trigger; when did it fire?"""
    history: dict[str, deque[tuple[float, Observation]]] = {}
    key = _key(rule)
    sustained = rule.sustained.total_seconds() if rule.sustained else 0.0
    state = Sustained(sustained)
    start = Observation(rule.metric, rule.of, 0.0, events=0, total=0)
    for second, errors, requests in looks:
        now = Observation(rule.metric, rule.of, second, events=errors, total=requests)
        history.setdefault(key, deque()).append((second, now))
        reading = Reading(start, now)
        if trailing:
            reading = _trailing(rule, reading, history)
        verdict, state = trigger_gate(
            "t", rule, reading, state, now=second, elapsed_s=second, on_fire=Outcome.FAIL_IMMEDIATE
        )
        if verdict.failed:
            return second
    return None


def _traffic(clean_s: int, spike_s: int, spike_share: float) -> list[tuple[float, int, int]]:
    """1,000 requests/s at 0.1 % errors for ``clean_s`` seconds, then ``spike_share`` errors."""
    looks, errors, requests = [], 0, 0
    for second in range(1, clean_s + spike_s + 1):
        errors += 1 if second <= clean_s else int(1000 * spike_share)
        requests += 1000
        looks.append((float(second), errors, requests))
    return looks


def test_a_spike_after_a_long_clean_phase_fires_within_its_sustained_time() -> None:
    rule = Gate.model_validate(
        {"metric": "error_rate", "of": "new", "above": "5%", "sustained": "30s"}
    )
    looks = _traffic(clean_s=1800, spike_s=120, spike_share=0.2)
    fired = _fire_time(rule, looks, trailing=True)
    assert fired is not None and 1800 < fired <= 1800 + 30 + 10
    # judged over the whole phase, 20 % errors for two minutes hide behind half an hour
    assert _fire_time(rule, looks, trailing=False) is None


def test_a_clean_phase_never_fires() -> None:
    rule = Gate.model_validate(
        {"metric": "error_rate", "of": "new", "above": "5%", "sustained": "30s"}
    )
    assert _fire_time(rule, _traffic(clean_s=900, spike_s=0, spike_share=0), trailing=True) is None


def test_one_failed_synthetic_check_is_a_blip_but_checks_failing_for_the_sustained_time_fire() -> (
    None
):
    rule = Gate.model_validate({"metric": "critical_features", "of": "new", "sustained": "30s"})
    blip = [(float(s), 1 if s >= 100 else 0, s) for s in range(1, 200)]  # one failure, at 100 s
    assert _fire_time(rule, blip, trailing=True) is None
    outage = [(float(s), max(0, s - 99), s) for s in range(1, 200)]  # every check from 100 s
    fired = _fire_time(rule, outage, trailing=True)
    assert fired is not None and 130 <= fired <= 135


def test_before_the_window_has_passed_the_phase_start_is_the_window() -> None:
    rule = Gate.model_validate(
        {"metric": "error_rate", "of": "new", "above": "5%", "sustained": "30s"}
    )
    history: dict[str, deque[tuple[float, Observation]]] = {_key(rule): deque()}
    start = Observation("error_rate", "new", 0.0, events=0, total=0)
    for second in (1.0, 2.0, 3.0):
        now = Observation("error_rate", "new", second, events=50, total=int(1000 * second))
        history[_key(rule)].append((second, now))
    reading = _trailing(rule, Reading(start, now), history)
    assert reading.start is start
