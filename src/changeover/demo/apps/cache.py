"""The new app's Redis cache: single-user and single-order answers, kept ``ttl`` seconds.

Keys are ``changeover-demo:<schema>:<kind>:<id>`` holding the answer's JSON bytes. Every write
through a new-app instance deletes the keys it made stale (all instances share the one Redis).
Writes that reach PostgreSQL another way (the legacy app through live sync) are not seen here:
those answers may be stale for at most ``ttl``. Redis trouble never fails a request: a read falls
through to PostgreSQL (counted as a miss and an error), a failed delete is logged.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

log = logging.getLogger("changeover.demo.apps.cache")


class Cache:
    """Get / set / invalidate answers, counting hits, misses and Redis errors."""

    def __init__(
        self, client: aioredis.Redis, schema: str, ttl: int, registry: CollectorRegistry
    ) -> None:
        self.client = client
        self.prefix = f"changeover-demo:{schema}:"
        self.ttl = ttl
        # A fault the demo can switch on (/admin/faults): a cache that forgets to invalidate.
        self.skip_invalidation = False
        self.hits = Counter("app_cache_hits", "Answers served from Redis.", registry=registry)
        self.misses = Counter(
            "app_cache_misses", "Cacheable reads that went to PostgreSQL.", registry=registry
        )
        self.errors = Counter(
            "app_cache_errors", "Redis calls that failed (the request went on).", registry=registry
        )

    def key(self, kind: str, ident: int) -> str:
        return f"{self.prefix}{kind}:{ident}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.client.get(key)
        except RedisError as exc:
            self.errors.inc()
            log.warning("cache read failed, reading PostgreSQL instead: %s", exc)
            value = None
        if value is None:
            self.misses.inc()
            return None
        self.hits.inc()
        return value if isinstance(value, bytes) else str(value).encode()

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self.client.set(key, value, ex=self.ttl)
        except RedisError as exc:
            self.errors.inc()
            log.warning("cache write failed: %s", exc)

    async def invalidate(self, *keys: str) -> None:
        if self.skip_invalidation:
            return  # the demo's staged fault: writes leave their cached answers stale
        try:
            await self.client.delete(*keys)
        except RedisError as exc:
            # The write itself committed; answering an error would invite a duplicate retry.
            self.errors.inc()
            log.warning("cache invalidation failed (stale for up to %d s): %s", self.ttl, exc)
