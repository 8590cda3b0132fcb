"""Sustained triggers: fire only after the condition held for the duration; clear with
hysteresis; deterministic with the caller's clock."""

from __future__ import annotations

import pytest

from changeover.analysis import Sustained


def _feed(state: Sustained, ticks: list[tuple[float, bool]]) -> list[bool]:
    fired = []
    for now, condition in ticks:
        state = state.observe(now, condition)
        fired.append(state.firing)
    return fired


def test_fires_only_after_the_condition_held_for_the_whole_duration() -> None:
    ticks = [(float(t), True) for t in range(31)]
    fired = _feed(Sustained(duration_s=30.0), ticks)
    assert fired[:30] == [False] * 30 and fired[30] is True


def test_a_single_false_observation_restarts_the_streak() -> None:
    ticks = [(float(t), t != 20) for t in range(45)]
    fired = _feed(Sustained(duration_s=30.0), ticks)
    assert True not in fired  # the streak restarted at 21: 21 + 30 = 51 > 44


def test_clears_only_after_the_condition_stayed_false_for_clear_after() -> None:
    state = Sustained(duration_s=5.0, clear_after_s=10.0)
    ticks = [(float(t), True) for t in range(6)] + [(6.0 + t, t % 3 == 2) for t in range(9)]
    fired = _feed(state, ticks)
    assert fired[5] and all(fired[5:])  # flapping below clear_after keeps it firing
    quiet = [(float(t), True) for t in range(6)] + [(6.0 + t, False) for t in range(11)]
    calm = _feed(state, quiet)
    assert calm[-2] is True and calm[-1] is False  # false from 6 to 16: cleared at 16


def test_a_gap_in_observations_breaks_the_streak() -> None:
    state = Sustained(duration_s=30.0, max_gap_s=5.0)
    fired = _feed(state, [(0.0, True), (20.0, True), (31.0, True), (36.0, True)])
    assert fired == [False, False, False, False]
    assert _feed(Sustained(duration_s=30.0), [(0.0, True), (31.0, True)]) == [False, True]


def test_time_going_backwards_is_refused() -> None:
    state = Sustained(duration_s=1.0).observe(10.0, True)
    with pytest.raises(ValueError, match="backwards"):
        state.observe(9.0, True)
    assert state.held_s == 0.0 and state.observe(12.0, True).held_s == 2.0
