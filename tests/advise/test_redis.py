"""Redis advice against a real server: the TTL distribution of a key sample, keys without a TTL
counted, INFO's hit/expiry/eviction numbers and policy; pure bucketing and findings."""

from __future__ import annotations

import asyncio

import pytest
import redis

from changeover.advise.redis import NO_TTL, cache_findings, fetch_redis, ttl_buckets
from changeover.plan.systems import RedisSystem
from changeover.probes.base import ProbeContext, Unreachable


def ctx_for(url: str) -> ProbeContext:
    return ProbeContext(systems={"cache": RedisSystem(url="${R}")}, environ={"R": url})


@pytest.mark.timeout(60)
def test_keys_with_and_without_ttl_are_bucketed_and_counted(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for n in range(5):
        client.set(f"forever:{n}", "x")
    for n in range(3):
        client.set(f"short:{n}", "x", ex=30)
    for n in range(4):
        client.set(f"hourly:{n}", "x", ex=1800)
    client.set("daily", "x", ex=200_000)
    client.get("short:0")
    client.get("missing")
    client.close()

    advice = asyncio.run(fetch_redis("cache", ctx_for(redis_url)))

    assert advice.keys_sampled == 13
    assert advice.ttl_buckets == {
        NO_TTL: 5,
        "< 1m": 3,
        "1m–10m": 0,
        "10m–1h": 4,
        "1h–1d": 0,
        "≥ 1d": 1,
    }
    assert advice.hits >= 1 and advice.misses >= 1 and advice.hit_rate is not None
    assert advice.maxmemory_policy  # e.g. noeviction on a bare server
    assert any("5 of 13 sampled keys" in f for f in advice.findings)


@pytest.mark.timeout(60)
def test_the_sample_stops_at_its_size(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.mset({f"k:{n}": "x" for n in range(300)})
    client.close()

    advice = asyncio.run(fetch_redis("cache", ctx_for(redis_url), sample=100))

    assert advice.keys_sampled == 100


@pytest.mark.timeout(30)
def test_an_unreachable_redis_is_a_plain_error() -> None:
    with pytest.raises(Unreachable, match=r"cannot connect to Redis at 127\.0\.0\.1:1"):
        asyncio.run(fetch_redis("cache", ctx_for("redis://127.0.0.1:1/0"), timeout=2))


def test_gone_keys_are_skipped_and_bounds_are_exclusive() -> None:
    assert ttl_buckets([-2, -1, 0, 59, 60, 3599, 3600, 86400]) == {
        NO_TTL: 1,
        "< 1m": 2,
        "1m–10m": 1,
        "10m–1h": 1,
        "1h–1d": 1,
        "≥ 1d": 1,
    }


def test_evictions_a_low_hit_rate_and_no_memory_limit_are_findings() -> None:
    info = {
        "keyspace_hits": "10",
        "keyspace_misses": "90",
        "evicted_keys": "1234",
        "expired_keys": "7",
        "maxmemory": "0",
        "maxmemory_policy": "volatile-lru",
    }
    advice = cache_findings({NO_TTL: 4, "< 1m": 4}, info)
    text = " | ".join(advice.findings)
    assert advice.hit_rate == 0.1 and advice.evicted_keys == 1234
    assert "never evicted" in text and "1,234 keys were evicted" in text
    assert "hit rate 10.0%" in text and "maxmemory is 0" in text


def test_a_healthy_cache_has_no_findings() -> None:
    info = {
        "keyspace_hits": "990",
        "keyspace_misses": "10",
        "maxmemory": "67108864",
        "maxmemory_policy": "allkeys-lru",
    }
    assert cache_findings({NO_TTL: 0, "< 1m": 10}, info).findings == []
