"""N+1 queries: database statements per HTTP request over a window, and which statements.

Two ``StatementCounts`` (pg_stat_statements' cumulative calls per statement plus the HTTP
requests of one app, read together) a window apart give ``per_request``: the statements the
database ran per request in between and the worst statements by calls per request. Pure; the
PostgreSQL source reads the counts (``changeover.metrics.postgres``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: How many statements the evidence names, and how much of each statement's text.
WORST = 3
TEXT_CHARS = 160

# Our own reads carry this marker so that they never count as the application's statements.
MARKER = "/* changeover-metrics */"
# Transaction control and session settings are not queries an N+1 pattern multiplies: a request
# with one SELECT in a transaction shows BEGIN, SELECT and COMMIT.
STATEMENTS_SQL = (
    MARKER
    + r"""
SELECT queryid, sum(calls)::bigint, min(query)
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND queryid IS NOT NULL
  AND position('changeover-metrics' in query) = 0
  AND query !~* ('^\s*(begin|commit|rollback|start|end|abort|set|reset|show|savepoint|release'
                 || '|discard|deallocate|prepare transaction)\y')
GROUP BY queryid
"""
)
INSTALLED_SQL = MARKER + " SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
NOT_INSTALLED = (
    "PostgreSQL keeps no statement counts without the pg_stat_statements extension "
    "(shared_preload_libraries, then CREATE EXTENSION pg_stat_statements)"
)


@dataclass(frozen=True)
class StatementCounts:
    """Cumulative calls per statement (queryid → (calls, text)) and HTTP requests, read now."""

    calls: Mapping[int, tuple[int, str]]
    requests: int


@dataclass(frozen=True)
class PerRequest:
    """The window's statements per request, and the worst statements (calls/request, text)."""

    value: float
    requests: int
    statements: int
    worst: tuple[tuple[float, str], ...]

    def describe(self) -> str:
        shown = "; ".join(f"{rate:.3g}/request: {text}" for rate, text in self.worst)
        return f"{self.statements:,} statements for {self.requests:,} requests" + (
            f"; worst: {shown}" if shown else ""
        )


def per_request(before: StatementCounts, after: StatementCounts) -> PerRequest | str:
    """Statements per request between two readings, or the reason it cannot be said."""
    requests = after.requests - before.requests
    if requests < 0:
        return "the HTTP request counter restarted during the window (the proxy restarted?)"
    if requests == 0:
        return "no HTTP requests in the window: statements per request cannot be told"
    deltas: list[tuple[int, str]] = []
    for queryid, (calls, text) in after.calls.items():
        earlier = before.calls.get(queryid)
        # A statement evicted and seen again, or a pg_stat_statements_reset(), starts from 0.
        delta = calls - earlier[0] if earlier is not None and earlier[0] <= calls else calls
        if delta > 0:
            deltas.append((delta, text))
    total = sum(delta for delta, _ in deltas)
    deltas.sort(key=lambda pair: pair[0], reverse=True)
    worst = tuple((delta / requests, _short(text)) for delta, text in deltas[:WORST])
    return PerRequest(total / requests, requests, total, worst)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_CHARS else flat[: TEXT_CHARS - 1] + "…"
