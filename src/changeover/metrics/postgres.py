"""Metrics of a PostgreSQL server, read from its statistics views with psycopg (async).

db_connections (the share of max_connections in use, with who holds them as the detail),
database_errors (rolled back out of all transactions of this database, cumulative),
stuck_requests (queries running longer than ``stuck_after`` seconds), replication_lag (seconds;
on a primary the slowest standby's replay lag, on a standby its own), db_latency_p95 and
db_queries_per_request (only with pg_stat_statements; see below and ``metrics.statements``).
One connection is kept open and opened again after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation
from changeover.metrics.statements import (
    INSTALLED_SQL,
    NOT_INSTALLED,
    STATEMENTS_SQL,
    StatementCounts,
    per_request,
)
from changeover.secrets import REDACTOR

SERVED = frozenset(
    {
        "db_connections",
        "database_errors",
        "stuck_requests",
        "replication_lag",
        "db_latency_p95",
        "db_queries_per_request",
    }
)

# Connections in use and what they are doing: a pool that leaks shows "idle in transaction",
# one that is too small for the load shows every connection active and backends waiting on
# locks. superuser_reserved_connections are out of the application's reach.
_CONNECTIONS = """
SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'active'),
       count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'idle'),
       count(*) FILTER (WHERE backend_type = 'client backend'
                        AND state LIKE 'idle in transaction%%'),
       count(*) FILTER (WHERE backend_type = 'client backend' AND wait_event_type = 'Lock')
FROM pg_stat_activity
"""
# Rolled back transactions include those an application rolls back on purpose: a rise, not the
# level, is what tells of errors.
_ERRORS = """
SELECT xact_rollback, xact_commit + xact_rollback
FROM pg_stat_database WHERE datname = current_database()
"""
_STUCK = """
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
  AND now() - query_start > make_interval(secs => %s)
"""
_STANDBY_LAG = """
SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END
"""
# A caught-up standby without new WAL shows NULL lag after a while: that is no lag.
_PRIMARY_LAG = """
SELECT count(*), max(coalesce(extract(epoch FROM replay_lag), 0)) FROM pg_stat_replication
"""
# pg_stat_statements keeps count, mean and stddev per statement, no quantiles: the mean over
# all statements weighted by calls is the closest it gets to a typical query time.
_MEAN_EXEC = """
SELECT sum(mean_exec_time * calls) / nullif(sum(calls), 0) / 1000 FROM pg_stat_statements
"""
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]
MEAN_UNIT = "s (mean query time from pg_stat_statements, not a p95)"
PER_REQUEST_UNIT = "statements per request"
#: Reads an app's cumulative HTTP requests (the ``requests`` metric of another source).
RequestCounter = Callable[[str | None], Awaitable[Observation]]


class _Unavailable(Exception):
    pass


class PostgresSource:
    """A PostgreSQL server at ``url`` (a resolved URL; it never appears in a reason)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "postgres",
        stuck_after: float = 30.0,
        connect_timeout: float = 2.0,
        requests: RequestCounter | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._stuck_after = stuck_after
        self._connect_timeout = connect_timeout
        self._requests = requests
        # db_queries_per_request is over the time since the previous read of the same app
        self._statements: dict[str | None, StatementCounts] = {}
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()  # one connection: one statement at a time

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the postgres source does not serve {metric!r}")
        if metric == "db_queries_per_request":
            return await self._per_request(of)
        try:
            async with self._lock:
                return await self._read(metric, of)
        except _Unavailable as exc:
            return missing(metric, of, str(exc))
        except psycopg.Error as exc:
            await self._drop()
            return missing(metric, of, f"PostgreSQL: {_plain(exc)}")
        except OSError as exc:
            await self._drop()
            return missing(metric, of, f"PostgreSQL: {exc.strerror or exc}")

    async def _read(self, metric: str, of: str | None) -> Observation:
        conn = await self._connection()
        at = wall_clock()
        if metric == "db_connections":
            in_use, limit, reserved, active, idle, in_xact, on_locks = await _row(
                conn, _CONNECTIONS
            )
            # A gauge (no events/total): the counts are of now, not cumulative.
            detail = (
                f"{in_use} of max_connections {limit} in use ({reserved} reserved for "
                f"superusers): {active} active, {idle} idle, {in_xact} idle in transaction, "
                f"{on_locks} waiting on a lock"
            )
            return Observation(
                metric,
                of,
                at,
                value=int(in_use) / int(limit),
                unit="of max_connections",
                detail=detail,
            )
        if metric == "database_errors":
            rolled_back, total = await _row(conn, _ERRORS)
            return Observation(
                metric,
                of,
                at,
                events=int(rolled_back),
                total=int(total),
                unit="rolled back / transactions",
            )
        if metric == "stuck_requests":
            (count,) = await _row(conn, _STUCK, (self._stuck_after,))
            unit = f"queries running > {self._stuck_after:g}s"
            return Observation(metric, of, at, value=float(count), unit=unit)
        if metric == "replication_lag":
            return Observation(metric, of, at, value=await self._lag(conn), unit="s")
        return await self._mean_exec(conn, metric, of, at)

    async def _per_request(self, of: str | None) -> Observation:
        """Statements per HTTP request of ``of`` since the previous read for ``of``; the first
        read only sets the starting point."""
        metric = "db_queries_per_request"
        if self._requests is None:
            return missing(
                metric,
                of,
                "statements per request need the app's HTTP request count: no source serves "
                "'requests' (the built-in proxy or Prometheus)",
            )
        # The two counts are read back to back: requests first, so a request counted has had
        # its statements run before they are read (the window never gains requests for free).
        counted = await self._requests(of)
        if counted.unavailable is not None or counted.total is None:
            reason = counted.unavailable or "the request count came back empty"
            return missing(metric, of, f"HTTP requests of {of}: {reason}")
        try:
            async with self._lock:
                conn = await self._connection()
                (installed,) = await _row(conn, INSTALLED_SQL)
                if not installed:
                    raise _Unavailable(NOT_INSTALLED)
                cursor = await conn.execute(STATEMENTS_SQL)
                rows = await cursor.fetchall()
        except _Unavailable as exc:
            return missing(metric, of, str(exc))
        except psycopg.Error as exc:
            await self._drop()
            return missing(metric, of, f"PostgreSQL: {_plain(exc)}")
        except OSError as exc:
            await self._drop()
            return missing(metric, of, f"PostgreSQL: {exc.strerror or exc}")
        now = StatementCounts(
            {int(qid): (int(calls), str(text)) for qid, calls, text in rows}, counted.total
        )
        before, self._statements[of] = self._statements.get(of), now
        if before is None:
            return missing(metric, of, "the first reading: statements per request need a second")
        found = per_request(before, now)
        if isinstance(found, str):
            return missing(metric, of, found)
        return Observation(
            metric,
            of,
            wall_clock(),
            value=round(found.value, 2),
            unit=PER_REQUEST_UNIT,
            detail=REDACTOR.scrub(found.describe()),
        )

    async def _lag(self, conn: _Conn) -> float:
        (standby,) = await _row(conn, "SELECT pg_is_in_recovery()")
        if standby:
            (lag,) = await _row(conn, _STANDBY_LAG)
            if lag is None:
                raise _Unavailable("this standby has not replayed any transaction yet")
            return float(lag)
        count, lag = await _row(conn, _PRIMARY_LAG)
        if not count:
            raise _Unavailable("no standby is connected to this primary")
        return float(lag)

    async def _mean_exec(
        self,
        conn: _Conn,
        metric: str,
        of: str | None,
        at: float,
    ) -> Observation:
        (installed,) = await _row(
            conn, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        )
        if not installed:
            raise _Unavailable(
                "PostgreSQL keeps no query times without the pg_stat_statements extension "
                "(shared_preload_libraries, then CREATE EXTENSION pg_stat_statements)"
            )
        (mean,) = await _row(conn, _MEAN_EXEC)
        if mean is None:
            raise _Unavailable("pg_stat_statements has recorded no statements yet")
        return Observation(metric, of, at, value=float(mean), unit=MEAN_UNIT)

    async def _connection(self) -> _Conn:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # It is broken already; the next read connects again.
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        await self._drop()


async def _row(
    conn: _Conn,
    sql: str,
    params: tuple[object, ...] = (),
) -> tuple[Any, ...]:
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    if row is None:
        raise _Unavailable("PostgreSQL returned no row for its own statistics")
    return row


def _plain(exc: psycopg.Error) -> str:
    """psycopg's message, first line only, with secrets scrubbed (it may quote the URL)."""
    text = REDACTOR.scrub(str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__
