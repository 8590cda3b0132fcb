"""Make the demo's embedded servers look like production ones a team has prepared.

The slow query log, pg_stat_statements, and a Redis memory limit with an evicting policy — so
the plan's database and cache checks inspect a realistic setup rather than bare servers.
Idempotent.
"""

from __future__ import annotations

import contextlib

import psycopg
import redis

from changeover.errors import ServiceError


def prepare_demo_servers(pg_url: str, redis_url: str) -> None:
    """The slow query log, pg_stat_statements and a Redis memory limit (the tables come from
    the migration of the legacy database)."""
    try:
        with psycopg.connect(pg_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("ALTER SYSTEM SET log_min_duration_statement = '250ms'")
            # Not shipped with every build (the wheel's): the extension check will say so.
            with contextlib.suppress(psycopg.errors.UndefinedFile):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise ServiceError(f"cannot configure the demo PostgreSQL: {exc}") from exc
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        client.config_set("maxmemory", "64mb")
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
    except redis.RedisError as exc:
        raise ServiceError(f"cannot configure the demo Redis: {exc}") from exc
