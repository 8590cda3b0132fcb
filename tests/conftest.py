"""Fixtures for every test: throwaway PostgreSQL and Redis servers, started only when asked for.

Session-scoped servers belong to one pytest-xdist worker each (own temporary directories, own free
loopback ports) and are stopped at the end of the session. Per-test isolation:

- ``pg_url``: a fresh database on ``pg_primary`` (unique name), dropped after the test; it also
  exists on ``pg_replica`` (``pg_replica.url_for(name)``), which streams from the primary.
- ``redis_url``: a database index of ``redis_server`` that no other test of the session uses
  at the same time (index 0 is never handed out), emptied with FLUSHDB after the test.
  Server-wide state (INFO counters, CONFIG, replication) is shared: a test that needs it to
  itself starts its own server with ``changeover.services.start_redis()``.

A machine without the binaries skips these tests, or fails them under CHANGEOVER_REQUIRE_ALL=1.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import pytest

from changeover.services import (
    PostgresServer,
    RedisServer,
    find_postgres_bin_dir,
    find_redis_server,
    start_postgres,
    start_redis,
    start_replica,
)
from support.binaries import missing
from support.browser import browser  # noqa: F401  (a fixture: headless Chromium)

REDIS_DATABASES = 1024
_redis_indexes = itertools.cycle(range(1, REDIS_DATABASES))
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_primary() -> Iterator[PostgresServer]:
    """A PostgreSQL primary for the whole session (superuser ``changeover``, password in url)."""
    if find_postgres_bin_dir() is None:
        missing("PostgreSQL", "postgresql")
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def pg_replica(pg_primary: PostgresServer) -> Iterator[PostgresServer]:
    """A hot standby streaming from ``pg_primary``."""
    if not (pg_primary.bin_dir / "pg_basebackup").exists():
        missing("pg_basebackup", "postgresql")
    with start_replica(pg_primary) as server:
        yield server


@pytest.fixture
def pg_url(pg_primary: PostgresServer) -> Iterator[str]:
    """The URL of a database created for this test alone on ``pg_primary``."""
    name = f"test_{next(_database_numbers)}_{secrets.token_hex(4)}"
    url = pg_primary.create_database(name)
    yield url
    if pg_primary.running:
        pg_primary.drop_database(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole session, with enough databases for one per test."""
    if find_redis_server() is None:
        missing("redis-server", "redis-server")
    with start_redis(settings={"databases": str(REDIS_DATABASES)}) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of a Redis database index (1..1023) this test has to itself; flushed after."""
    index = next(_redis_indexes)
    yield redis_server.url_for(index)
    if redis_server.running:
        with redis_server.client(index) as client:
            client.flushdb()
