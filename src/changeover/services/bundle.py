"""The demo's servers started together: a PostgreSQL primary, its streaming replica, and Redis.

``changeover demo`` uses ``start_demo_services()`` and hands ``Services.environ()`` to the demo
apps and the plan (``PG_URL``, ``PG_REPLICA_URL``, ``REDIS_URL``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from changeover.services.postgres import PostgresServer, start_postgres, start_replica
from changeover.services.redis import RedisServer, start_redis


@dataclass(frozen=True)
class Services:
    """Running demo servers; ``stop()`` them or use the bundle as a context manager."""

    postgres: PostgresServer
    replica: PostgresServer
    redis: RedisServer

    def environ(self) -> dict[str, str]:
        """The environment variables the demo plan refers to (the URLs carry passwords)."""
        return {
            "PG_URL": self.postgres.url,
            "PG_REPLICA_URL": self.replica.url,
            "REDIS_URL": self.redis.url,
        }

    def stop(self) -> None:
        """Stop all three, the replica before its primary."""
        try:
            self.replica.stop()
            self.postgres.stop()
        finally:
            self.redis.stop()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_demo_services(
    workdir: Path | None = None, *, settings: Mapping[str, str] | None = None
) -> Services:
    """Start PostgreSQL (primary + streaming replica) and Redis; use as a context manager.

    ``workdir``: their files go in ``postgres/``, ``replica/`` and ``redis/`` under it; default
    temporary directories removed at stop. ``settings``: extra PostgreSQL settings.
    """
    postgres = start_postgres(_under(workdir, "postgres"), settings=settings)
    try:
        replica = start_replica(postgres, _under(workdir, "replica"))
        try:
            redis = start_redis(_under(workdir, "redis"))
        except BaseException:
            replica.stop()
            raise
    except BaseException:
        postgres.stop()
        raise
    return Services(postgres=postgres, replica=replica, redis=redis)


def _under(workdir: Path | None, name: str) -> Path | None:
    return workdir / name if workdir is not None else None
