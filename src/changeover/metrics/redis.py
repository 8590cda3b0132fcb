"""The cache hit rate and cache trouble of a Redis server, from ``INFO stats`` (redis.asyncio).

``keyspace_hits`` and ``keyspace_misses`` count since the server started (or CONFIG
RESETSTAT): the observation carries misses as events out of all lookups, for the controller's
windows, and the hit rate since start as its value. ``cache_issues`` counts what goes wrong for
the cache's clients — failed and rejected commands (``INFO commandstats``, Redis ≥ 6.2) and
connections refused at ``maxclients`` — out of all commands and refused connections.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation

SERVED = frozenset({"cache_hit_rate", "cache_issues"})


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


#: Connection housekeeping, not cache traffic: clients probe with CLIENT SETINFO, which Redis
#: before 7.2 refuses on every connect (redis-py does so by default).
_HOUSEKEEPING = frozenset({"client", "hello", "command", "auth", "select", "info", "ping"})


def cache_issues(
    metric: str, of: str | None, at: float, stats: dict[str, Any], commands: dict[str, Any]
) -> Observation:
    """Failed and rejected commands (``INFO commandstats``, Redis ≥ 6.2) plus connections
    refused at ``maxclients``, out of all commands and refused connections (pure)."""
    try:
        refused = int(stats.get("rejected_connections", 0))
        failed = calls = 0
        for name, entry in commands.items():
            if name.removeprefix("cmdstat_").split("|")[0] in _HOUSEKEEPING:
                continue
            calls += int(entry["calls"]) + int(entry.get("rejected_calls", 0))
            failed += int(entry["failed_calls"]) + int(entry.get("rejected_calls", 0))
    except KeyError:
        return Observation.missing(
            metric, of, at, "INFO commandstats has no failed_calls (Redis before 6.2)"
        )
    except (TypeError, ValueError, AttributeError):
        return Observation.missing(metric, of, at, "INFO commandstats has unreadable counters")
    return Observation(
        metric,
        of,
        at,
        events=failed + refused,
        total=calls + refused,
        unit="failed or rejected commands and refused connections / commands",
    )


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
            if metric == "cache_issues":
                commands = await self._client.info("commandstats")
                return cache_issues(metric, of, wall_clock(), stats, commands)
        except AuthenticationError as exc:
            return missing(metric, of, f"Redis refused the credentials: {exc}")
        except ResponseError as exc:
            return missing(metric, of, f"Redis refused INFO: {exc}")
        except (RedisError, OSError) as exc:
            return missing(metric, of, f"cannot read Redis: {exc}")
        return hit_rate(metric, of, wall_clock(), stats)

    async def close(self) -> None:
        await self._client.aclose()
