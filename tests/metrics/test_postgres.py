"""PostgresSource against the session's real PostgreSQL primary and its streaming standby."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit, urlunsplit

import psycopg

from changeover.metrics.base import Observation
from changeover.metrics.postgres import MEAN_UNIT, PostgresSource
from changeover.services import PostgresServer, find_postgres_bin_dir, start_postgres
from support.backends import free_port
from support.binaries import missing


def read(url: str, *metrics: str, **options: float) -> list[Observation]:
    async def scenario() -> list[Observation]:
        source = PostgresSource(url, **options)
        try:
            return [await source.read(metric, None) for metric in metrics]
        finally:
            await source.close()

    return asyncio.run(scenario())


def test_db_connections_is_the_share_of_max_connections_in_use(pg_url: str) -> None:
    with psycopg.connect(pg_url) as other:
        (limit,) = other.execute("SHOW max_connections").fetchone()  # type: ignore[misc]
        (obs,) = read(pg_url, "db_connections")
    # a gauge: the gates compare its value, not a rate of counts
    assert obs.events is None and obs.total is None
    assert obs.value is not None and obs.value >= 2 / int(limit)  # the other one and the source
    assert obs.detail is not None and f"of max_connections {limit} in use" in obs.detail
    assert "idle in transaction" in obs.detail and "waiting on a lock" in obs.detail


def test_database_errors_counts_rolled_back_transactions(pg_url: str) -> None:
    (before,) = read(pg_url, "database_errors")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        for _ in range(3):
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # the flush happens at the end of a statement
    (after,) = read(pg_url, "database_errors")
    assert before.events is not None and before.total is not None
    assert after.events == before.events + 3
    assert after.total is not None and after.total >= before.total + 5


def test_stuck_requests_counts_long_running_queries(pg_url: str) -> None:
    def sleeper() -> None:
        with psycopg.connect(pg_url) as conn:
            conn.execute("SELECT pg_sleep(2)")

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        (idle,) = read(pg_url, "stuck_requests", stuck_after=0.5)
        asyncio.run(asyncio.sleep(1.0))
        (stuck,) = read(pg_url, "stuck_requests", stuck_after=0.5)
    finally:
        thread.join()
    assert idle.value == 0
    assert stuck.value == 1 and stuck.unit == "queries running > 0.5s"


def test_replication_lag_is_read_on_primary_and_standby(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    (primary,) = read(pg_primary.url, "replication_lag")
    (standby,) = read(pg_replica.url, "replication_lag")
    for obs in (primary, standby):
        assert obs.unavailable is None and obs.value is not None and 0 <= obs.value < 10


def test_db_latency_without_pg_stat_statements_is_unavailable_with_the_reason(
    pg_url: str,
) -> None:
    (obs,) = read(pg_url, "db_latency_p95")
    assert obs.unavailable is not None and "pg_stat_statements" in obs.unavailable


def test_an_unreachable_server_is_unavailable_and_the_password_stays_out(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    dead = urlunsplit(
        parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{free_port()}")
    )
    (obs,) = read(dead, "db_connections")
    assert obs.unavailable is not None and obs.unavailable.startswith("PostgreSQL: ")
    assert parts.password and parts.password not in obs.unavailable


def test_a_wrong_password_is_unavailable(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    wrong = urlunsplit(
        parts._replace(netloc=f"{parts.username}:wrong-pass@{parts.hostname}:{parts.port}")
    )
    (obs,) = read(wrong, "database_errors")
    assert obs.unavailable is not None and "password authentication failed" in obs.unavailable


def test_db_latency_with_pg_stat_statements_is_the_mean_query_time() -> None:
    if find_postgres_bin_dir() is None:
        missing("PostgreSQL", "postgresql")
    settings = {"shared_preload_libraries": "pg_stat_statements"}
    with start_postgres(settings=settings) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("SELECT pg_sleep(0.2)")
        (obs,) = read(server.url, "db_latency_p95")
    assert obs.unit == MEAN_UNIT
    assert obs.value is not None and 0 < obs.value < 0.2  # the sleep among quicker statements
