"""The age of the oldest request in flight (stuck requests): kept per instance on a fake clock,
shown in the stats JSON and the Prometheus exposition, and read by the proxy metric source."""

from __future__ import annotations

from changeover.metrics.proxy import observe, parse_exposition
from changeover.proxy.state import Instance
from changeover.proxy.stats import ProxyStats

NEW_A = Instance("new", "a", "127.0.0.1", 9003)
NEW_B = Instance("new", "b", "127.0.0.1", 9004)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_oldest_request_in_flight_ages_until_it_ends_whatever_order_they_end_in() -> None:
    clock = FakeClock()
    stats = ProxyStats([NEW_A], clock=clock)
    assert stats.window(10, backend="new").oldest_in_flight_s == 0.0
    for _ in range(3):  # started at 1000, 1001, 1002
        stats.request_started(NEW_A)
        clock.now += 1
    clock.now = 1010.0
    # the middle one ends first: the one started at 1000 is still the oldest
    stats.request_finished(NEW_A, 200, 9.0, 0, 0)
    window = stats.window(10, backend="new")
    assert (window.in_flight, window.oldest_in_flight_s) == (2, 10.0)
    stats.request_finished(NEW_A, 200, 10.0, 0, 0)  # the oldest ends
    assert stats.window(10, backend="new").oldest_in_flight_s == 8.0
    stats.request_finished(NEW_A, 200, 8.0, 0, 0)
    window = stats.window(10, backend="new")
    assert (window.in_flight, window.oldest_in_flight_s) == (0, 0.0)


def test_an_end_reported_with_a_slightly_different_clock_drops_the_nearest_start() -> None:
    clock = FakeClock()
    stats = ProxyStats([NEW_A], clock=clock)
    stats.request_started(NEW_A)  # 1000.0
    clock.now = 1005.0
    stats.request_started(NEW_A)  # 1005.0
    clock.now = 1006.0
    # the core measured 0.9996 s from its own clock read, a little after ours
    stats.request_finished(NEW_A, 200, 0.9996, 0, 0)
    assert stats.window(10, backend="new").oldest_in_flight_s == 6.0
    stats.request_finished(NEW_A, 200, 99.0, 0, 0)  # longer than any: still drops one
    stats.request_finished(NEW_A, 200, 1.0, 0, 0)  # none left: nothing to drop, no error
    assert stats.window(10, backend="new").in_flight == 0


def test_the_oldest_age_is_in_the_stats_json_and_the_exposition_and_read_per_backend() -> None:
    clock = FakeClock()
    stats = ProxyStats([NEW_A, NEW_B], clock=clock)
    stats.request_started(NEW_A)
    clock.now += 2
    stats.request_started(NEW_B)
    clock.now += 1.5
    backend = stats.snapshot(10)["backends"]["new"]
    assert backend["oldest_in_flight_s"] == 3.5
    assert backend["instances"]["b"]["oldest_in_flight_s"] == 1.5
    text = stats.render_prometheus().decode()
    assert 'changeover_proxy_oldest_in_flight_seconds{backend="new",instance="a"} 3.5' in text
    observation = observe("oldest_in_flight_s", "new", 0.0, parse_exposition(text))
    assert (observation.value, observation.unit) == (3.5, "s")  # the oldest of its instances
    assert observation.detail == "requests in flight to new: 2"


def test_an_exposition_without_the_gauge_is_unavailable_not_zero() -> None:
    stats = ProxyStats([NEW_A], clock=FakeClock())
    text = "\n".join(
        line
        for line in stats.render_prometheus().decode().splitlines()
        if "oldest_in_flight" not in line
    )
    observation = observe("oldest_in_flight_s", "new", 0.0, parse_exposition(text))
    assert observation.value is None
    assert observation.unavailable is not None and "older changeover" in observation.unavailable
