"""Throwaway PostgreSQL and Redis servers for ``changeover demo`` and the tests.

Servers run from a temporary directory on free ports of 127.0.0.1 and are always stopped: by
``stop()`` or a ``with`` block, else by a safety net at interpreter exit or on SIGTERM/SIGHUP.
As root, PostgreSQL runs as an unprivileged system user (``postgres``, else ``changeover``).
"""

from changeover.services.binaries import (
    FoundBinary,
    find_postgres_bin_dir,
    find_redis_server,
    postgres_version,
    system_postgres_bin_dirs,
    wheel_postgres_bin_dir,
    wheel_redis_server,
)
from changeover.services.bundle import Services, start_demo_services
from changeover.services.postgres import PostgresServer, start_postgres, start_replica
from changeover.services.redis import RedisServer, start_redis, start_redis_replica

__all__ = [
    "FoundBinary",
    "PostgresServer",
    "RedisServer",
    "Services",
    "find_postgres_bin_dir",
    "find_redis_server",
    "postgres_version",
    "start_demo_services",
    "start_postgres",
    "start_redis",
    "start_redis_replica",
    "start_replica",
    "system_postgres_bin_dirs",
    "wheel_postgres_bin_dir",
    "wheel_redis_server",
]
