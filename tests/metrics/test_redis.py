"""RedisSource against the session's real Redis server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from changeover.metrics.base import Observation
from changeover.metrics.redis import RedisSource, hit_rate
from changeover.services import find_redis_server, start_redis
from support.backends import free_port
from support.binaries import missing


def read(url: str) -> Observation:
    async def once() -> Observation:
        source = RedisSource(url)
        try:
            return await source.read("cache_hit_rate", None)
        finally:
            await source.close()

    return asyncio.run(once())


def test_cache_hit_rate_counts_misses_out_of_lookups(redis_url: str) -> None:
    before = read(redis_url)
    with redis.Redis.from_url(redis_url) as client:
        client.set("present", "1")
        for _ in range(3):
            assert client.get("present") == b"1"
        assert client.get("absent") is None
    after = read(redis_url)
    assert before.events is not None and before.total is not None
    assert after.events == before.events + 1
    assert after.total == before.total + 4
    assert after.value is not None and after.events is not None and after.total is not None
    assert after.value == (after.total - after.events) / after.total


def test_a_wrong_password_is_unavailable_without_it(tmp_path: Path) -> None:
    if find_redis_server() is None:
        missing("redis-server", "redis-server")
    with start_redis(tmp_path, password="right-secret-pw") as server:
        right = read(server.url)
        wrong = read(f"redis://:wrong-secret-pw@127.0.0.1:{server.port}/0")
    assert right.unavailable is None and right.total == 0
    assert wrong.unavailable is not None and "wrong-secret-pw" not in wrong.unavailable
    assert wrong.unavailable.startswith("Redis refused the credentials")


def test_an_unreachable_redis_is_unavailable() -> None:
    obs = read(f"redis://127.0.0.1:{free_port()}/0")
    assert obs.unavailable is not None and obs.unavailable.startswith("cannot read Redis")


def test_no_lookups_yet_has_no_hit_rate() -> None:
    obs = hit_rate("cache_hit_rate", None, 0.0, {"keyspace_hits": 0, "keyspace_misses": 0})
    assert (obs.events, obs.total, obs.value) == (0, 0, None)


def test_cache_issues_count_error_replies_out_of_commands(tmp_path: Path) -> None:
    if find_redis_server() is None:
        missing("redis-server", "redis-server")

    async def read_issues(url: str) -> Observation:
        source = RedisSource(url)
        try:
            return await source.read("cache_issues", "new")
        finally:
            await source.close()

    with start_redis(tmp_path) as server:  # its own server: INFO counters are server-wide
        before = asyncio.run(read_issues(server.url))
        # redis-py's CLIENT SETINFO on connect fails on Redis 6.2: housekeeping, not counted
        with redis.Redis.from_url(server.url) as client:
            client.set("text", "abc")
            for _ in range(3):
                with pytest.raises(redis.ResponseError):
                    client.incr("text")  # an error reply: the value is not an integer
        after = asyncio.run(read_issues(server.url))
    assert before.unavailable is None and after.unavailable is None, after.unavailable
    assert before.events is not None and after.events is not None
    assert (before.events, after.events) == (0, 3)
    assert after.total is not None and before.total is not None
    assert after.total - before.total >= 4
