"""All the advice for a plan: which systems to read, and the slice of it one plan step asks for.

The plan's ``advise`` steps name a topic (``slow-queries``, ``bottlenecks``, ``indexes``,
``cache-ttl``, ``pool-size``, ``logs``); ``topic_detail`` is the part of the advice journaled
with that step. ``changeover advise`` prints everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeover.advise.logs import LogSummary, summarize_log
from changeover.advise.pool import PoolAdvice, Traffic, busiest_sample, recommend_pool
from changeover.advise.postgres import PostgresAdvice, fetch_postgres
from changeover.advise.redis import RedisAdvice, fetch_redis
from changeover.errors import UsageError
from changeover.probes.base import ProbeContext

TOPICS = ("slow-queries", "bottlenecks", "indexes", "cache-ttl", "pool-size", "logs")
SAMPLE_EVENT = "rollout.sample"


@dataclass(frozen=True)
class Advice:
    postgres: PostgresAdvice | None = None
    pool: PoolAdvice | None = None
    redis: RedisAdvice | None = None
    logs: list[LogSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "postgres": self.postgres.to_json() if self.postgres else None,
            "pool": self.pool.to_json() if self.pool else None,
            "redis": self.redis.to_json() if self.redis else None,
            "logs": [summary.to_json() for summary in self.logs],
        }


def system_of_kind(systems: Mapping[str, Any], kind: str, name: str | None) -> str | None:
    """``name`` (checked to be a ``kind`` system), else the plan's only/first one of that kind."""
    if name is not None:
        if name not in systems:
            raise UsageError(f"the plan has no system {name!r}")
        if systems[name].kind != kind:
            raise UsageError(f"system {name!r} is a {systems[name].kind}, not {kind}")
        return name
    return next((n for n, s in systems.items() if s.kind == kind), None)


def traffic_from_samples(payloads: Iterable[Mapping[str, Any]]) -> Traffic | None:
    return busiest_sample(payloads)


async def gather_advice(
    ctx: ProbeContext,
    *,
    postgres: str | None,
    redis: str | None,
    logs: Sequence[Path] = (),
    traffic: Traffic | None = None,
    instances: int = 1,
    sample_seconds: float = 2.0,
    top: int = 5,
) -> Advice:
    """Read each named system (None: skipped) and summarise each log file."""
    pg = pool = None
    if postgres is not None:
        pg = await fetch_postgres(postgres, ctx, top=top, sample_seconds=sample_seconds)
        pool = recommend_pool(
            max(pg.activity, default=0),
            traffic,
            instances=instances,
            max_connections=pg.max_connections,
        )
    cache = await fetch_redis(redis, ctx) if redis is not None else None
    return Advice(pg, pool, cache, [summarize_log(path) for path in logs])


def topic_detail(topic: str, advice: Advice) -> dict[str, Any]:
    """The part of ``advice`` a plan step about ``topic`` journals."""
    pg = advice.postgres.to_json() if advice.postgres else {}
    pool = advice.pool.to_json() if advice.pool else None
    if topic == "slow-queries":
        return {k: pg.get(k) for k in ("by_total", "by_mean", "notes")}
    if topic == "indexes":
        return {k: pg.get(k) for k in ("seq_scan_tables", "unused_indexes", "stats_since")}
    if topic == "bottlenecks":
        return {
            "by_mean": pg.get("by_mean"),
            "seq_scan_tables": pg.get("seq_scan_tables"),
            "pool": pool,
        }
    if topic == "pool-size":
        return {"pool": pool}
    if topic == "cache-ttl":
        return {"redis": advice.redis.to_json() if advice.redis else None}
    if topic == "logs":
        return {"logs": [s.to_json() for s in advice.logs]}
    raise UsageError(f"advise: unknown topic {topic!r}; one of {', '.join(TOPICS)}")
