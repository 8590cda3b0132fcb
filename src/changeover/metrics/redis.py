"""The cache hit rate of a Redis server, from ``INFO stats`` (redis.asyncio).

``keyspace_hits`` and ``keyspace_misses`` count since the server started (or CONFIG
RESETSTAT): the observation carries misses as events out of all lookups, for the controller's
windows, and the hit rate since start as its value.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation

SERVED = frozenset({"cache_hit_rate"})


def hit_rate(metric: str, of: str | None, at: float, stats: dict[str, Any]) -> Observation:
    """The observation from an ``INFO stats`` answer (pure)."""
    try:
        hits = int(stats["keyspace_hits"])
        misses = int(stats["keyspace_misses"])
    except (KeyError, TypeError, ValueError):
        return Observation.missing(metric, of, at, "INFO stats has no keyspace_hits/misses")
    total = hits + misses
    value = hits / total if total else None
    return Observation(metric, of, at, events=misses, total=total, value=value, unit="hit rate")


class RedisSource:
    """A Redis server at ``url`` (resolved; its password never appears in a reason)."""

    def __init__(self, url: str, *, name: str = "redis", timeout: float = 2.0) -> None:
        self.name = name
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the redis source does not serve {metric!r}")
        try:
            stats = await self._client.info("stats")
        except AuthenticationError as exc:
            return missing(metric, of, f"Redis refused the credentials: {exc}")
        except ResponseError as exc:
            return missing(metric, of, f"Redis refused INFO: {exc}")
        except (RedisError, OSError) as exc:
            return missing(metric, of, f"cannot read Redis: {exc}")
        return hit_rate(metric, of, wall_clock(), stats)

    async def close(self) -> None:
        await self._client.aclose()
