"""Instance health: passive ejection, cool-down and half-open trials, active rise/fall, checker."""

from __future__ import annotations

import asyncio

import pytest

from changeover.proxy.balance import Balancer
from changeover.proxy.health import (
    ActiveChecker,
    HealthPolicy,
    HealthTracker,
    PassiveHealthObserver,
)
from changeover.proxy.state import Instance, RoutingState

KEY = "legacy/a"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tracker() -> tuple[HealthTracker, FakeClock]:
    clock = FakeClock()
    return HealthTracker(HealthPolicy(), clock=clock), clock


def eject(health: HealthTracker) -> None:
    health.record_failure(KEY, "connect")
    health.record_failure(KEY, "connect")
    assert not health.is_healthy(KEY)


def test_unknown_instance_is_healthy() -> None:
    health, _ = tracker()
    assert health.is_healthy("legacy/never-seen")


def test_two_consecutive_connect_errors_eject() -> None:
    health, _ = tracker()
    health.record_failure(KEY, "connect")
    assert health.is_healthy(KEY)
    health.record_failure(KEY, "connect")
    assert not health.is_healthy(KEY)


def test_a_success_between_connect_errors_resets_the_count() -> None:
    health, _ = tracker()
    for _ in range(10):
        health.record_failure(KEY, "connect")
        for _ in range(3):
            health.record_success(KEY)
    assert health.is_healthy(KEY)


def test_connect_errors_also_count_towards_a_burst() -> None:
    health, _ = tracker()
    for _ in range(5):
        health.record_failure(KEY, "connect")
        health.record_success(KEY)
    assert not health.is_healthy(KEY), "half of the connections refused is a sick instance"


def test_fewer_than_five_5xx_do_not_eject() -> None:
    health, _ = tracker()
    for _ in range(4):
        health.record_failure(KEY, "5xx")
    assert health.is_healthy(KEY)
    health.record_failure(KEY, "5xx")
    assert not health.is_healthy(KEY)


def test_5xx_burst_needs_half_of_the_last_twenty() -> None:
    health, _ = tracker()
    for _ in range(11):
        health.record_success(KEY)
    for _ in range(9):
        health.record_failure(KEY, "5xx")
    assert health.is_healthy(KEY), "9 of 20 is below half"
    health.record_failure(KEY, "timeout")  # window slides: 10 successes, 10 failures
    assert not health.is_healthy(KEY)


def test_scattered_5xx_among_many_successes_never_eject() -> None:
    health, _ = tracker()
    for i in range(1000):
        if i % 5 == 0:
            health.record_failure(KEY, "5xx")
        else:
            health.record_success(KEY)
    assert health.is_healthy(KEY)


def test_ejected_instance_is_half_open_after_the_cooldown() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 4.999
    assert not health.is_healthy(KEY)
    clock.now += 0.001
    assert health.is_healthy(KEY)
    assert health.snapshot()[KEY]["passive"] == "half-open"


def test_half_open_lets_exactly_one_trial_through() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 5
    assert health.is_healthy(KEY)
    health.routed(KEY)
    assert not health.is_healthy(KEY), "a second request must wait for the trial's outcome"
    health.record_success(KEY)
    assert health.is_healthy(KEY)
    health.routed(KEY)
    assert health.is_healthy(KEY), "once readmitted every request may go"


def test_failed_trials_double_the_cooldown_up_to_the_cap() -> None:
    health, clock = tracker()
    eject(health)
    cooldowns = []
    for _ in range(6):
        ejected_for = health.snapshot()[KEY]["ejected_for"]
        cooldowns.append(ejected_for)
        clock.now += ejected_for
        assert health.is_healthy(KEY)
        health.routed(KEY)
        health.record_failure(KEY, "5xx")
        assert not health.is_healthy(KEY)
    assert cooldowns == [5, 10, 20, 40, 60, 60]


def test_doubling_restarts_after_a_lasting_recovery() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 5
    health.routed(KEY)
    health.record_failure(KEY, "connect")  # 10 s now
    clock.now += 10
    health.routed(KEY)
    health.record_success(KEY)
    clock.now += 1
    eject(health)
    assert health.snapshot()[KEY]["ejected_for"] == 20, "flapping keeps doubling"
    clock.now += 20
    health.routed(KEY)
    health.record_success(KEY)
    clock.now += 60
    eject(health)
    assert health.snapshot()[KEY]["ejected_for"] == 5, "healthy for 60 s: back to the base"


def test_lost_trial_stops_blocking_after_the_trial_timeout() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 5
    health.routed(KEY)
    clock.now += 9.9
    assert not health.is_healthy(KEY)
    clock.now += 0.1
    assert health.is_healthy(KEY)


def test_late_success_during_ejection_does_not_readmit() -> None:
    health, clock = tracker()
    eject(health)
    health.record_success(KEY)
    clock.now += 1
    assert not health.is_healthy(KEY)


def test_active_checks_take_down_after_fall_and_back_after_rise() -> None:
    health, _ = tracker()
    health.record_check(KEY, False)
    health.record_check(KEY, False)
    assert health.is_healthy(KEY)
    health.record_check(KEY, False)
    assert not health.is_healthy(KEY)
    health.record_check(KEY, True)
    assert not health.is_healthy(KEY)
    health.record_check(KEY, False)
    health.record_check(KEY, True)
    assert not health.is_healthy(KEY), "rise needs consecutive good checks"
    health.record_check(KEY, True)
    assert health.is_healthy(KEY)


def test_a_good_active_check_is_a_successful_half_open_trial() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 5
    health.record_check(KEY, True)
    assert health.snapshot()[KEY]["passive"] == "up"


def test_a_good_active_check_does_not_cut_a_cooldown_short() -> None:
    health, clock = tracker()
    eject(health)
    clock.now += 1
    health.record_check(KEY, True)
    assert not health.is_healthy(KEY)


def test_observer_maps_outcomes_to_failure_kinds() -> None:
    health, _ = tracker()
    observer = PassiveHealthObserver(health)
    instance = Instance("legacy", "a", "127.0.0.1", 1)
    observer.upstream_failed(instance, "connection refused", reached_upstream=False)
    observer.upstream_failed(instance, "connect timed out after 1s", reached_upstream=False)
    assert not health.is_healthy(KEY)
    assert health.snapshot()[KEY]["last_failure"] == "connect"

    other = Instance("legacy", "b", "127.0.0.1", 2)
    observer.upstream_failed(other, "no answer within 30s", reached_upstream=True)
    assert health.snapshot()["legacy/b"]["last_failure"] == "timeout"
    observer.upstream_failed(other, "upstream closed the connection", reached_upstream=True)
    assert health.snapshot()["legacy/b"]["last_failure"] == "5xx"
    for _ in range(3):
        observer.request_finished(other, 500, 0.01, 10, 10)
    assert not health.is_healthy("legacy/b")

    third = Instance("legacy", "c", "127.0.0.1", 3)
    for _ in range(100):
        observer.request_finished(third, 404, 0.01, 10, 10)
    assert health.is_healthy("legacy/c"), "4xx is the client's problem, not the instance's"


def test_observer_counts_a_failed_exchange_once() -> None:
    """The core reports upstream_failed and then request_finished(504) for one failure."""
    health, _ = tracker()
    observer = PassiveHealthObserver(health)
    instance = Instance("legacy", "a", "127.0.0.1", 1)
    for _ in range(5):
        observer.request_finished(instance, 200, 0.01, 10, 10)
        observer.request_finished(instance, 200, 0.01, 10, 10)
        observer.upstream_failed(instance, "no answer within 30s", reached_upstream=True)
        observer.request_finished(instance, 504, 30.0, 10, 0)
    assert health.is_healthy(KEY), "5 failures in 15 exchanges is no burst"


def test_observer_does_not_take_a_client_leaving_for_a_success() -> None:
    health, _ = tracker()
    observer = PassiveHealthObserver(health)
    instance = Instance("legacy", "a", "127.0.0.1", 1)
    for _ in range(5):
        observer.request_finished(instance, 500, 0.01, 10, 10)
        for _ in range(3):
            observer.request_finished(instance, 499, 1.0, 10, 0)
    assert not health.is_healthy(KEY)


def test_killed_instance_is_ejected_within_two_seconds_under_load() -> None:
    """500 requests/s; instance a dies at t=1 s: a is out of rotation after two refusals."""
    clock = FakeClock(0.0)
    health = HealthTracker(clock=clock)
    instances = [Instance("legacy", name, "127.0.0.1", 1 + i) for i, name in enumerate("abc")]
    balancer = Balancer(
        RoutingState({"legacy": 100.0}, "legacy"),
        {"legacy": instances},
        clock=clock,
        health=health,
    )
    failed = 0
    last_to_dead = 0.0
    for step in range(2500):  # 5 s at 2 ms
        clock.now = step * 0.002
        decision = balancer.decide("GET", "/", {"co_session": "s"})
        if decision.instance.name == "a" and clock.now >= 1.0:
            failed += 1
            last_to_dead = clock.now
            health.record_failure(decision.instance.key, "connect")
        else:
            health.record_success(decision.instance.key)
    # Two refusals eject it; the 5 s cool-down outlasts the run, so no half-open trial either.
    assert failed == 2, f"{failed} requests reached the dead instance"
    assert last_to_dead - 1.0 < 2.0
    assert not health.is_healthy("legacy/a")


def test_active_checker_records_probe_results() -> None:
    health, _ = tracker()
    instances = [Instance("new", n, "127.0.0.1", 1) for n in ("up", "down", "raises", "hangs")]

    async def probe(instance: Instance) -> bool:
        if instance.name == "raises":
            raise OSError("connection refused")
        if instance.name == "hangs":
            await asyncio.sleep(10)
        return instance.name == "up"

    checker = ActiveChecker(health, lambda: instances, probe, timeout=0.05)

    async def main() -> None:
        for _ in range(3):
            await checker.check_once()

    asyncio.run(asyncio.wait_for(main(), 5))
    assert health.is_healthy("new/up")
    assert not health.is_healthy("new/down")
    assert not health.is_healthy("new/raises")
    assert not health.is_healthy("new/hangs")
    assert checker.rounds == 3


def test_active_checker_runs_every_interval_until_stopped() -> None:
    health, _ = tracker()
    instance = Instance("new", "a", "127.0.0.1", 1)
    probed: list[str] = []
    sleeps: list[float] = []

    async def probe(inst: Instance) -> bool:
        probed.append(inst.key)
        return False

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    checker = ActiveChecker(health, lambda: [instance], probe, interval=2.0, sleep=fake_sleep)

    async def main() -> None:
        checker.start()
        while checker.rounds < 5:
            await asyncio.sleep(0)
        await checker.stop()

    asyncio.run(asyncio.wait_for(main(), 5))
    assert len(probed) >= 5
    assert set(sleeps) == {2.0}
    assert not health.is_healthy("new/a")


@pytest.mark.parametrize("kind", ["5xx", "timeout"])
def test_bursts_of_either_kind_eject(kind: str) -> None:
    health, _ = tracker()
    for _ in range(5):
        health.record_failure(KEY, kind)  # type: ignore[arg-type]
    assert not health.is_healthy(KEY)
