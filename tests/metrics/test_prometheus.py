"""PrometheusSource against a real Prometheus scraping a small exporter as job ``new``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from changeover.metrics.base import Observation
from changeover.metrics.prometheus import PrometheusSource, PromQuery
from support.backends import free_port
from support.prometheus import PrometheusServer, run_prometheus


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests.", ["code"], registry=registry)
    latency = Histogram(
        "http_request_duration_seconds", "Latency.", buckets=(0.05, 0.1, 0.5), registry=registry
    )
    Gauge("go_goroutines", "Goroutines.", registry=registry).set(42)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds
    requests.labels(code="200").inc(95)
    requests.labels(code="500").inc(5)
    for seconds in (0.01, 0.02, 0.07, 0.3):
        latency.observe(seconds)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        address = f"127.0.0.1:{server.server_port}"
        with run_prometheus(tmp_path_factory.mktemp("prom"), {"new": address}) as prom:
            prom.wait_for('http_requests_total{job="new"}')
            yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def read(source: PrometheusSource, metric: str, of: str | None = "new") -> Observation:
    async def once() -> Observation:
        try:
            return await source.read(metric, of)
        finally:
            await source.close()

    return asyncio.run(once())


def test_error_rate_is_read_as_cumulative_counters(prometheus: PrometheusServer) -> None:
    obs = read(PrometheusSource(prometheus.url), "error_rate")
    assert (obs.events, obs.total, obs.unavailable) == (5, 100, None)


def test_a_ratio_without_any_bad_series_counts_zero_events(prometheus: PrometheusServer) -> None:
    obs = read(PrometheusSource(prometheus.url), "rate_limited")
    assert (obs.events, obs.total) == (0, 100)


def test_latency_is_the_cumulative_histogram(prometheus: PrometheusServer) -> None:
    obs = read(PrometheusSource(prometheus.url), "latency_p95")
    assert obs.histogram == ((0.05, 2), (0.1, 3), (0.5, 4), (float("inf"), 4))


def test_gauges_memory_and_goroutines(prometheus: PrometheusServer) -> None:
    memory = read(PrometheusSource(prometheus.url), "memory_leak")
    assert memory.unit == "MB" and memory.value is not None and 5 < memory.value < 10_000
    assert read(PrometheusSource(prometheus.url), "goroutines").value == 42


def test_a_custom_query_overrides_the_default(prometheus: PrometheusServer) -> None:
    queries = {"error_rate": PromQuery("gauge", 'sum(http_requests_total{job="{of}",code="500"})')}
    obs = read(PrometheusSource(prometheus.url, queries), "error_rate")
    assert obs.value == 5 and obs.events is None


def test_a_bad_query_gives_prometheus_reason(prometheus: PrometheusServer) -> None:
    queries = {"broken": PromQuery("gauge", "sum(")}
    obs = read(PrometheusSource(prometheus.url, queries), "broken")
    assert obs.unavailable is not None and "bad_data" in obs.unavailable


def test_no_series_for_an_unknown_job_is_unavailable(prometheus: PrometheusServer) -> None:
    obs = read(PrometheusSource(prometheus.url), "memory", of="legacy")
    assert obs.unavailable is not None and "no series" in obs.unavailable


def test_of_cannot_change_the_query(prometheus: PrometheusServer) -> None:
    obs = read(PrometheusSource(prometheus.url), "memory", of='new"} or vector(1) #')
    assert obs.unavailable is not None and "cannot go into a PromQL label" in obs.unavailable


def test_an_unreachable_prometheus_is_unavailable() -> None:
    obs = read(PrometheusSource(f"http://127.0.0.1:{free_port()}"), "error_rate")
    assert obs.unavailable is not None and "connection refused" in obs.unavailable


def test_a_ratio_query_needs_a_total() -> None:
    with pytest.raises(ValueError):
        PromQuery("ratio", "sum(x)")


def test_cpu_is_the_rate_of_cpu_seconds_in_percent(prometheus: PrometheusServer) -> None:
    prometheus.wait_for('rate(process_cpu_seconds_total{job="new"}[1m])')  # two scrapes
    obs = read(PrometheusSource(prometheus.url), "cpu")
    assert obs.unit == "%" and obs.value is not None and 0 <= obs.value < 400
