"""The pool size recommendation: the larger of the observed peak and Little's law, with
headroom, split across instances, capped by max_connections; the formula is shown."""

from __future__ import annotations

from changeover.advise.pool import Traffic, busiest_sample, recommend_pool


def test_littles_law_drives_the_pool_when_traffic_is_the_larger_estimate() -> None:
    advice = recommend_pool(4, Traffic(200.0, 0.05, "test"), instances=2, max_connections=100)
    assert advice.littles_law == 10.0
    assert advice.per_instance == 8  # ceil(10 × 1.5 / 2)
    assert advice.total == 16
    assert "L = λ × W = 200 req/s × 0.05 s = 10.0 in flight" in advice.formula
    assert "ceil(max(4, 10.0) × 1.5 / 2) = 8" in advice.formula


def test_the_observed_peak_drives_the_pool_without_traffic_numbers() -> None:
    advice = recommend_pool(12, None, instances=3, max_connections=100)
    assert advice.littles_law is None and advice.per_instance == 6
    assert "Little" not in advice.formula


def test_an_idle_server_still_gets_the_minimum_pool() -> None:
    assert recommend_pool(0, None, instances=1, max_connections=100).per_instance == 2


def test_the_pool_is_capped_by_max_connections_and_says_so() -> None:
    advice = recommend_pool(80, None, instances=4, max_connections=50)
    assert advice.total <= 45
    assert "PgBouncer" in advice.advice and "max_connections 50" in advice.advice


def test_the_busiest_sample_weights_latency_by_requests() -> None:
    samples = [
        {
            "phase": "p10",
            "backends": {"legacy": {"rps": 90, "p95_ms": 100}, "new": {"rps": 10, "p95_ms": 50}},
        },
        {"phase": "p100", "backends": {"new": {"rps": 300, "p95_ms": 40}, "legacy": {"rps": 0}}},
        {"phase": "p50", "backends": {}},
    ]
    traffic = busiest_sample(samples)
    assert traffic is not None
    assert traffic.rps == 300 and traffic.latency_s == 0.04 and "p100" in traffic.source
    assert busiest_sample([]) is None
