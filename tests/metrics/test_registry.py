"""Metrics routing and time bounds, with real sources: Redis and a port that never answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from changeover.metrics.base import Observation
from changeover.metrics.prometheus import PrometheusSource
from changeover.metrics.redis import RedisSource
from changeover.metrics.registry import MetricRequest, Metrics


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


class Raising:
    """A source that breaks the contract by raising."""

    name = "raising"

    def serves(self, metric: str) -> bool:
        return metric == "boom"

    async def read(self, metric: str, of: str | None) -> Observation:
        raise RuntimeError("broken source")

    async def close(self) -> None:
        return None


def test_one_slow_source_does_not_hold_up_the_others(redis_url: str, silent_port: int) -> None:
    async def scenario() -> tuple[list[Observation], float]:
        slow = PrometheusSource(f"http://127.0.0.1:{silent_port}", timeout=30)
        metrics = Metrics([slow, RedisSource(redis_url)], timeout=0.5)
        try:
            started = time.monotonic()
            answers = await metrics.read_many(
                [MetricRequest("error_rate", "new"), MetricRequest("cache_hit_rate")]
            )
            return answers, time.monotonic() - started
        finally:
            await metrics.close()

    (slow, cache), elapsed = asyncio.run(scenario())
    assert elapsed < 2
    assert slow.unavailable == "source 'prometheus' did not answer within 0.5s"
    assert cache.unavailable is None and cache.total is not None


def test_a_named_source_is_asked_even_when_another_serves_first(redis_url: str) -> None:
    async def scenario() -> Observation:
        metrics = Metrics([RedisSource(redis_url, name="first"), RedisSource(redis_url)])
        try:
            return await metrics.read("cache_hit_rate", source="redis")
        finally:
            await metrics.close()

    assert asyncio.run(scenario()).unavailable is None


def test_reasons_when_nothing_can_answer(redis_url: str) -> None:
    async def scenario() -> list[Observation]:
        metrics = Metrics([RedisSource(redis_url), Raising()])
        try:
            return await metrics.read_many(
                [
                    MetricRequest("error_rate", "new"),
                    MetricRequest("cache_hit_rate", source="postgres"),
                    MetricRequest("error_rate", source="redis"),
                    MetricRequest("boom"),
                ]
            )
        finally:
            await metrics.close()

    reasons = [obs.unavailable for obs in asyncio.run(scenario())]
    assert reasons == [
        "no source serves 'error_rate'",
        "no metric source named 'postgres' (sources: redis, raising)",
        "source 'redis' does not serve 'error_rate'",
        "source 'raising' failed: broken source",
    ]


def test_source_names_must_be_unique(redis_url: str) -> None:
    with pytest.raises(ValueError):
        Metrics([RedisSource(redis_url), RedisSource(redis_url)])
