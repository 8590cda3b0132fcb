"""ProxyStats: sliding windows on a fake clock, HDR percentiles, status classes, Prometheus text."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from changeover.proxy.http import Observer
from changeover.proxy.state import Instance, RoutingState
from changeover.proxy.stats import DURATION_BUCKETS, ProxyStats

LEGACY_A = Instance("legacy", "a", "127.0.0.1", 9001)
LEGACY_B = Instance("legacy", "b", "127.0.0.1", 9002)
NEW_A = Instance("new", "a", "127.0.0.1", 9003)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def finish(stats: ProxyStats, instance: Instance, status: int = 200, seconds: float = 0.01) -> None:
    stats.request_started(instance)
    stats.request_finished(instance, status, seconds, 100, 1000)


def make(clock: FakeClock, **kwargs: Any) -> ProxyStats:
    return ProxyStats([LEGACY_A, LEGACY_B, NEW_A], clock=clock, **kwargs)


def test_counts_requests_by_status_class() -> None:
    stats = make(FakeClock())
    for status in (101, 200, 204, 301, 404, 429, 500, 503, 503):
        finish(stats, LEGACY_A, status)
    window = stats.window(10, backend="legacy")
    assert window.status == {"1xx": 1, "2xx": 2, "3xx": 1, "4xx": 2, "5xx": 3}
    assert window.requests == 9


def test_window_slides_with_the_clock_and_totals_keep_everything() -> None:
    clock = FakeClock(1000.0)
    stats = make(clock)
    for _ in range(5):
        finish(stats, LEGACY_A)
    clock.now += 5
    for _ in range(3):
        finish(stats, LEGACY_A)
    assert stats.window(10, backend="legacy").requests == 8
    assert stats.window(3, backend="legacy").requests == 3
    clock.now += 6  # the first five are now 11 s old
    assert stats.window(10, backend="legacy").requests == 3
    clock.now += 100  # the ring has turned over completely
    assert stats.window(60, backend="legacy").requests == 0
    finish(stats, LEGACY_A)  # reuses a slot: the old one is folded into the totals
    assert stats.window(60, backend="legacy").requests == 1
    assert stats.window(None, backend="legacy").requests == 9


def test_totals_survive_many_ring_turns() -> None:
    clock = FakeClock(0.0)
    stats = make(clock)
    for _ in range(200):
        finish(stats, NEW_A, 200, 0.002)
        clock.now += 1
    total = stats.window(None, backend="new")
    assert total.requests == 200
    assert total.latency_count == 200
    # now = 200: the window is seconds 141..200, and nothing was recorded in second 200 yet
    assert stats.window(60, backend="new").requests == 59


def test_percentiles_match_known_inputs_within_hdr_precision() -> None:
    stats = make(FakeClock())
    for ms in range(1, 1001):  # 1 ms .. 1000 ms, uniform
        stats.request_finished(LEGACY_A, 200, ms / 1000, 0, 0)
    latency = stats.window(10, backend="legacy").latency_s
    expected = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 1.0}
    for name, value in expected.items():
        got = latency[name]
        assert got is not None
        assert got == pytest.approx(value, rel=0.002), name
    assert latency["mean"] == pytest.approx(0.5005)


def test_latency_beyond_sixty_seconds_is_kept_at_the_top() -> None:
    stats = make(FakeClock())
    stats.request_finished(LEGACY_A, 504, 120.0, 0, 0)
    window = stats.window(10, backend="legacy")
    assert window.latency_count == 1
    assert window.latency_s["max"] == pytest.approx(60.0, rel=0.002)


def test_rate_divides_by_the_time_covered() -> None:
    clock = FakeClock(1000.0)
    stats = make(clock)
    clock.now = 1002.5  # 2.5 s after start: a 10 s window covers only 2.5 s
    for _ in range(5):
        finish(stats, LEGACY_A)
    assert stats.window(10, backend="legacy").requests_per_s == pytest.approx(2.0)
    clock.now = 1030.5
    for _ in range(95):
        finish(stats, LEGACY_A)
    # now 1030.5: the 10 s window spans seconds 1021..1030, i.e. 9.5 s up to now
    assert stats.window(10, backend="legacy").requests_per_s == pytest.approx(95 / 9.5)


def test_error_rate_counts_5xx_and_upstream_failures() -> None:
    stats = make(FakeClock())
    assert stats.window(10, backend="legacy").error_rate is None
    for _ in range(7):
        finish(stats, LEGACY_A, 200)
    finish(stats, LEGACY_A, 502)
    # The core's contract: a refused connect is only upstream_failed (no request_started) ...
    stats.upstream_failed(LEGACY_B, "connect refused", reached_upstream=False)
    # ... a timeout after the request was sent is upstream_failed, then its 504 is finished.
    stats.request_started(LEGACY_B)
    stats.upstream_failed(LEGACY_B, "timeout", reached_upstream=True)
    stats.request_finished(LEGACY_B, 504, 1.0, 0, 0)
    window = stats.window(10, backend="legacy")
    # 10 attempts, each counted once: 7 ok, the 502, the refused one, the 504
    assert window.error_rate == pytest.approx(3 / 10)
    assert window.unanswered == 1
    assert window.errors == {"connect_refused": 1, "timeout": 1}
    assert stats.window(10, backend="legacy", instance="a").error_rate == pytest.approx(1 / 8)


def test_in_flight_rises_and_falls_and_never_goes_negative() -> None:
    stats = make(FakeClock())
    stats.request_started(LEGACY_A)
    stats.request_started(LEGACY_A)
    assert stats.window(10, backend="legacy").in_flight == 2
    stats.request_finished(LEGACY_A, 200, 0.001, 0, 0)
    stats.upstream_failed(LEGACY_A, "reset", reached_upstream=True)  # does not end an attempt
    assert stats.window(10, backend="legacy").in_flight == 1
    stats.request_finished(LEGACY_A, 502, 0.001, 0, 0)
    stats.request_finished(LEGACY_A, 200, 0.001, 0, 0)  # unpaired: never below zero
    assert stats.window(10, backend="legacy").in_flight == 0


def test_error_kinds_are_capped() -> None:
    stats = make(FakeClock())
    for i in range(40):
        stats.upstream_failed(NEW_A, f"weird failure {i}", reached_upstream=False)
    errors = stats.window(10, backend="new").errors
    assert len(errors) == 17
    assert errors["other"] == 24


def test_is_an_observer() -> None:
    observer: Observer = make(FakeClock())  # mypy checks the contract's signatures
    observer.client_error(400, "bad request")
    assert isinstance(observer, ProxyStats)


def test_a_failing_mirror_callback_does_not_raise() -> None:
    seen: list[str | None] = []

    def callback(head: Any, primary: Any, shadow: Any, error: str | None) -> None:
        seen.append(error)
        raise RuntimeError("comparison broke")

    stats = make(FakeClock(), on_mirror=callback)
    head: Any = object()
    captured: Any = object()
    stats.mirrored(head, captured, None, "shadow timed out")
    stats.mirrored(head, captured, captured, None)
    assert seen == ["shadow timed out", None]
    assert stats.snapshot()["mirrored"] == {"total": 2, "errors": 1}


def test_window_outside_the_ring_is_refused() -> None:
    stats = make(FakeClock())
    with pytest.raises(ValueError, match="1 to 60"):
        stats.window(61, backend="legacy")


def test_snapshot_is_json_with_backends_and_instances() -> None:
    import json

    clock = FakeClock()
    stats = make(clock)
    finish(stats, LEGACY_A, 200, 0.004)
    finish(stats, NEW_A, 500, 0.008)
    stats.client_error(431, "headers too large")
    clock.now += 1
    snap = json.loads(json.dumps(stats.snapshot(10)))
    assert snap["window_s"] == 10
    assert set(snap["backends"]) == {"legacy", "new"}
    assert set(snap["backends"]["legacy"]["instances"]) == {"a", "b"}
    assert snap["backends"]["legacy"]["status"]["2xx"] == 1
    assert snap["backends"]["legacy"]["instances"]["b"]["requests"] == 0
    assert snap["backends"]["new"]["error_rate"] == 1.0
    assert snap["backends"]["new"]["latency_s"]["p50"] == pytest.approx(0.008, rel=0.002)
    assert snap["backends"]["legacy"]["bytes"] == {"in": 100, "out": 1000}
    assert snap["client_errors"] == {"431": 1}


def _families(stats: ProxyStats) -> dict[str, Any]:
    text = stats.render_prometheus().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(family: Any, name: str, **labels: str) -> float:
    for sample in family.samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_prometheus_text_parses_and_has_the_expected_series() -> None:
    state = RoutingState(weights={"legacy": 90.0, "new": 10.0}, write_owner="legacy", version=4)
    clock = FakeClock()
    stats = make(clock, routing=lambda: state, held=lambda: 3)
    for _ in range(4):
        finish(stats, LEGACY_A, 200, 0.003)
    finish(stats, LEGACY_A, 503, 0.2)
    stats.request_started(NEW_A)  # still in flight
    stats.upstream_failed(LEGACY_B, "connect refused", reached_upstream=False)
    stats.client_error(400, "bad framing")
    families = _families(stats)

    requests = families["changeover_proxy_requests"]
    assert requests.type == "counter"
    legacy_a = {"backend": "legacy", "instance": "a"}
    assert _sample(requests, "changeover_proxy_requests_total", **legacy_a, code_class="2xx") == 4
    assert _sample(requests, "changeover_proxy_requests_total", **legacy_a, code_class="5xx") == 1
    errors = families["changeover_proxy_upstream_errors"]
    assert (
        _sample(
            errors, "changeover_proxy_upstream_errors_total", instance="b", kind="connect_refused"
        )
        == 1
    )
    in_flight = families["changeover_proxy_in_flight"]
    assert _sample(in_flight, "changeover_proxy_in_flight", backend="new", instance="a") == 1
    moved = families["changeover_proxy_bytes"]
    assert _sample(moved, "changeover_proxy_bytes_total", **legacy_a, direction="out") == 5000

    duration = families["changeover_proxy_request_duration_seconds"]
    assert duration.type == "histogram"
    name = "changeover_proxy_request_duration_seconds_bucket"
    assert _sample(duration, name, **legacy_a, le="0.0025") == 0
    assert _sample(duration, name, **legacy_a, le="0.005") == 4
    assert _sample(duration, name, **legacy_a, le="0.1") == 4
    assert _sample(duration, name, **legacy_a, le="0.25") == 5
    assert _sample(duration, name, **legacy_a, le="+Inf") == 5
    assert _sample(duration, "changeover_proxy_request_duration_seconds_count", **legacy_a) == 5
    assert _sample(
        duration, "changeover_proxy_request_duration_seconds_sum", **legacy_a
    ) == pytest.approx(0.212)
    assert len([s for s in duration.samples if s.labels == {**legacy_a, "le": "+Inf"}]) == 1
    buckets = [s for s in duration.samples if s.name == name and s.labels["instance"] == "a"]
    assert len([s for s in buckets if s.labels["backend"] == "legacy"]) == len(DURATION_BUCKETS) + 1

    latency = families["changeover_proxy_latency_seconds"]
    p99 = _sample(
        latency, "changeover_proxy_latency_seconds", backend="legacy", quantile="0.99", window="10s"
    )
    assert p99 == pytest.approx(0.2, rel=0.002)
    idle = _sample(
        latency, "changeover_proxy_latency_seconds", backend="new", quantile="0.5", window="60s"
    )
    assert math.isnan(idle)

    weights = families["changeover_proxy_weight_percent"]
    assert _sample(weights, "changeover_proxy_weight_percent", backend="new") == 10
    owner = families["changeover_proxy_write_owner"]
    assert _sample(owner, "changeover_proxy_write_owner", backend="legacy") == 1
    assert _sample(owner, "changeover_proxy_write_owner", backend="new") == 0
    assert _sample(families["changeover_proxy_held_writes"], "changeover_proxy_held_writes") == 3
    assert (
        _sample(families["changeover_proxy_routing_version"], "changeover_proxy_routing_version")
        == 4
    )
    client = families["changeover_proxy_client_errors"]
    assert _sample(client, "changeover_proxy_client_errors_total", code="400") == 1


def test_each_stats_object_has_its_own_registry() -> None:
    first = make(FakeClock())
    second = make(FakeClock())
    finish(first, LEGACY_A)
    a = _families(first)["changeover_proxy_requests"]
    b = _families(second)["changeover_proxy_requests"]
    assert (
        _sample(
            a, "changeover_proxy_requests_total", instance="a", backend="legacy", code_class="2xx"
        )
        == 1
    )
    assert (
        _sample(
            b, "changeover_proxy_requests_total", instance="a", backend="legacy", code_class="2xx"
        )
        == 0
    )


def test_exports_unanswered_attempts_and_notable_codes_kept_past_the_ring() -> None:
    clock = FakeClock(1000.0)
    stats = make(clock)
    for status in (401, 401, 403, 429, 418, 500):
        finish(stats, NEW_A, status)
    stats.upstream_failed(NEW_A, "connect refused", reached_upstream=False)
    clock.now += 120  # the first second left the ring: folded into the totals
    stats.request_started(NEW_A)
    stats.upstream_failed(NEW_A, "no answer within 30s", reached_upstream=True)
    stats.request_finished(NEW_A, 504, 30.0, 0, 0)
    families = _families(stats)

    responses = families["changeover_proxy_responses"]
    assert responses.type == "counter"
    name = "changeover_proxy_responses_total"
    new_a = {"backend": "new", "instance": "a"}
    got = {
        s.labels["code"]: s.value for s in responses.samples if s.labels.items() >= new_a.items()
    }
    assert got == {"401": 2, "403": 1, "408": 0, "429": 1, "502": 0, "503": 0, "504": 1}
    # Every instance has every notable code from the start, at zero.
    assert _sample(responses, name, backend="legacy", instance="b", code="401") == 0
    unanswered = families["changeover_proxy_unanswered"]
    assert _sample(unanswered, "changeover_proxy_unanswered_total", **new_a) == 1
    assert _sample(unanswered, "changeover_proxy_unanswered_total", instance="b") == 0
    # The reached timeout is in upstream_errors and, as its 504, in requests.
    errors = families["changeover_proxy_upstream_errors"]
    kinds = {s.labels["kind"]: s.value for s in errors.samples if s.labels["backend"] == "new"}
    assert kinds == {"connect_refused": 1, "no_answer_within_30s": 1}
    requests = families["changeover_proxy_requests"]
    assert _sample(requests, "changeover_proxy_requests_total", **new_a, code_class="5xx") == 2
