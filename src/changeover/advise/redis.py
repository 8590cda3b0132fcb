"""Redis advice: how long cached keys live, and whether the cache is earning its memory.

A sample of keys (SCAN, then TTL each) is bucketed by remaining lifetime, keys without a TTL
counted apart; INFO gives hits, misses, expired and evicted keys and the maxmemory policy.
``ttl_buckets`` and ``cache_findings`` are pure; ``fetch_redis`` does the reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from changeover.probes.base import ProbeContext, SystemParams

SAMPLE_KEYS = 1000
# Upper bounds (seconds, exclusive) of the TTL buckets, and their labels.
BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "< 1m"),
    (600, "1m–10m"),
    (3600, "10m–1h"),
    (86400, "1h–1d"),
    (float("inf"), "≥ 1d"),
)
NO_TTL = "no TTL"
LOW_HIT_RATE = 0.8


@dataclass(frozen=True)
class RedisAdvice:
    keys_sampled: int
    ttl_buckets: dict[str, int]
    hits: int
    misses: int
    hit_rate: float | None
    expired_keys: int
    evicted_keys: int
    maxmemory: int
    maxmemory_policy: str
    findings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ttl_buckets(ttls: Iterable[int]) -> dict[str, int]:
    """Remaining TTLs in seconds (Redis' TTL: -1 = none, -2 = gone) → counts per bucket, in
    bucket order; keys that expired between SCAN and TTL are not counted."""
    counts = {NO_TTL: 0, **{label: 0 for _, label in BUCKETS}}
    for ttl in ttls:
        if ttl == -2:
            continue
        if ttl == -1:
            counts[NO_TTL] += 1
            continue
        label = next(label for bound, label in BUCKETS if ttl < bound)
        counts[label] += 1
    return counts


def cache_findings(buckets: Mapping[str, int], info: Mapping[str, str]) -> RedisAdvice:
    """Hit rate, expiry and eviction from INFO, and what they suggest, as plain sentences."""
    hits, misses = _int(info, "keyspace_hits"), _int(info, "keyspace_misses")
    hit_rate = hits / (hits + misses) if hits + misses else None
    evicted, expired = _int(info, "evicted_keys"), _int(info, "expired_keys")
    policy = info.get("maxmemory_policy", "unknown")
    maxmemory = _int(info, "maxmemory")
    sampled = sum(buckets.values())
    findings = []
    if sampled and buckets.get(NO_TTL, 0):
        share = buckets[NO_TTL] / sampled
        line = f"{buckets[NO_TTL]} of {sampled} sampled keys ({share:.0%}) have no TTL"
        if policy.startswith("volatile-") or policy == "noeviction":
            line += (
                f": under maxmemory-policy {policy} they are never evicted — give cache keys a TTL"
            )
        findings.append(line)
    if evicted:
        findings.append(
            f"{evicted:,} keys were evicted for lack of memory (maxmemory {maxmemory:,} bytes): "
            "raise maxmemory or shorten the TTLs"
        )
    if hit_rate is not None and hit_rate < LOW_HIT_RATE:
        findings.append(
            f"hit rate {hit_rate:.1%} ({hits:,} hits, {misses:,} misses): the cache misses "
            "often — TTLs may be too short for how often the keys are read"
        )
    if maxmemory == 0:
        findings.append(
            "maxmemory is 0 (no limit): Redis grows until the machine runs out of memory; set a "
            "limit and an allkeys-lru or volatile-lru policy"
        )
    return RedisAdvice(
        keys_sampled=sampled,
        ttl_buckets=dict(buckets),
        hits=hits,
        misses=misses,
        hit_rate=None if hit_rate is None else round(hit_rate, 4),
        expired_keys=expired,
        evicted_keys=evicted,
        maxmemory=maxmemory,
        maxmemory_policy=policy,
        findings=findings,
    )


def _int(info: Mapping[str, str], key: str) -> int:
    try:
        return int(info.get(key, "0"))
    except ValueError:
        return 0


async def fetch_redis(
    system: str, ctx: ProbeContext, *, sample: int = SAMPLE_KEYS, timeout: float = 10.0
) -> RedisAdvice:
    """Sample up to ``sample`` keys of the plan's Redis ``system`` and read INFO; connection
    problems raise ``Unreachable`` with a plain reason."""
    from changeover.probes.redis import _info, redis_client

    params = SystemParams(system=system, timeout=timeout)
    async with redis_client(params, ctx, ("redis",)) as client:
        keys: list[bytes] = []
        async for key in client.scan_iter(count=min(sample, 1000)):
            keys.append(key)
            if len(keys) >= sample:
                break
        ttls: list[int] = []
        for start in range(0, len(keys), 500):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 500]:
                pipe.ttl(key)
            ttls.extend(int(t) for t in await pipe.execute())
        info = {**await _info(client, "stats"), **await _info(client, "memory")}
    return cache_findings(ttl_buckets(ttls), info)
