"""PostgreSQL advice after the cutover: slow statements, tables read by sequential scans and
indexes nobody uses.

``slow_queries``, ``seq_scan_tables`` and ``unused_indexes`` are pure functions over catalog rows
(tested without a server); ``fetch_postgres`` reads those rows in one read-only session, which
also samples ``pg_stat_activity`` for the pool advice (``changeover.advise.pool``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR

# A table is "scanned sequentially" when it was read that way at least this often, holds at least
# this many rows (a seq scan of a tiny table is the right plan) and index scans do not dominate.
MIN_SEQ_SCANS = 50
MIN_LIVE_ROWS = 1000
TOP_QUERIES = 5
QUERY_TEXT_LIMIT = 300
# pg_stat_statements normalises constants to $1, but keeps utility statements (ALTER ROLE …
# PASSWORD '…') verbatim: string literals never leave the server in advice.
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SECRET_WORDS = re.compile(r"(?i)\b(password|secret|token)\b(\s*=?\s*)\S+")


@dataclass(frozen=True)
class SlowQuery:
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int


@dataclass(frozen=True)
class SeqScanTable:
    table: str
    seq_scan: int
    idx_scan: int
    live_rows: int
    rows_read_by_seq_scans: int
    advice: str


@dataclass(frozen=True)
class UnusedIndex:
    index: str
    table: str
    size_bytes: int
    definition: str
    advice: str


@dataclass(frozen=True)
class PostgresAdvice:
    """What ``fetch_postgres`` found; ``notes`` say what could not be looked at and why."""

    database: str
    by_total: list[SlowQuery]
    by_mean: list[SlowQuery]
    seq_scan_tables: list[SeqScanTable]
    unused_indexes: list[UnusedIndex]
    activity: list[int]  # active client connections, one count per pg_stat_activity sample
    max_connections: int
    stats_since: str | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["peak_active"] = max(self.activity, default=0)
        return data


def redact_query(text: str, limit: int = QUERY_TEXT_LIMIT) -> str:
    """Query text safe to print: literals and secret-looking words masked, whitespace folded."""
    text = _LITERAL.sub("'…'", text)
    text = _SECRET_WORDS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = " ".join(REDACTOR.scrub(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slow_queries(
    rows: Sequence[Mapping[str, Any]], top: int = TOP_QUERIES
) -> tuple[list[SlowQuery], list[SlowQuery]]:
    """The ``top`` statements by total time and by mean time (pg_stat_statements rows with
    ``query``, ``calls``, ``total_ms``, ``mean_ms``, ``rows``)."""
    queries = [
        SlowQuery(
            query=redact_query(str(r["query"])),
            calls=int(r["calls"]),
            total_ms=round(float(r["total_ms"]), 3),
            mean_ms=round(float(r["mean_ms"]), 3),
            rows=int(r["rows"]),
        )
        for r in rows
        if int(r["calls"]) > 0
    ]
    by_total = sorted(queries, key=lambda q: q.total_ms, reverse=True)[:top]
    by_mean = sorted(queries, key=lambda q: q.mean_ms, reverse=True)[:top]
    return by_total, by_mean


def seq_scan_tables(
    rows: Sequence[Mapping[str, Any]],
    min_seq_scans: int = MIN_SEQ_SCANS,
    min_rows: int = MIN_LIVE_ROWS,
) -> list[SeqScanTable]:
    """Tables read mostly by sequential scans although they are big enough for an index to pay
    (pg_stat_user_tables rows: ``table``, ``seq_scan``, ``idx_scan``, ``live_rows``,
    ``seq_tup_read``); the worst first."""
    found = []
    for r in rows:
        seq, idx = int(r["seq_scan"] or 0), int(r["idx_scan"] or 0)
        live = int(r["live_rows"] or 0)
        if seq < min_seq_scans or live < min_rows or idx >= seq:
            continue
        read = int(r["seq_tup_read"] or 0)
        no_index = "it has no index" if r.get("idx_scan") is None else f"{idx:,} index scans"
        found.append(
            SeqScanTable(
                table=str(r["table"]),
                seq_scan=seq,
                idx_scan=idx,
                live_rows=live,
                rows_read_by_seq_scans=read,
                advice=(
                    f"{r['table']}: {seq:,} sequential scans of {live:,} rows ({no_index}); "
                    "find the filtering columns (the slow queries below, or EXPLAIN) and "
                    "CREATE INDEX CONCURRENTLY on them"
                ),
            )
        )
    return sorted(found, key=lambda t: t.rows_read_by_seq_scans, reverse=True)


def unused_indexes(rows: Sequence[Mapping[str, Any]]) -> list[UnusedIndex]:
    """Indexes never scanned that enforce nothing (not unique, not a primary key, backing no
    constraint): they cost writes and space for no reads. Biggest first."""
    found = [
        UnusedIndex(
            index=str(r["index"]),
            table=str(r["table"]),
            size_bytes=int(r["size_bytes"]),
            definition=redact_query(str(r["definition"])),
            advice=(
                f"{r['index']} on {r['table']} was never used for a read since the statistics "
                f"were reset ({int(r['size_bytes']):,} bytes); if that span covers the full "
                f"traffic cycle, DROP INDEX CONCURRENTLY {r['index']}"
            ),
        )
        for r in rows
        if int(r["idx_scan"] or 0) == 0
        and not r["is_unique"]
        and not r["is_primary"]
        and not r["backs_constraint"]
    ]
    return sorted(found, key=lambda i: i.size_bytes, reverse=True)


# --- I/O ----------------------------------------------------------------------------------------

_STATEMENTS = """
SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms, rows
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.query NOT ILIKE '%pg_stat_statements%'
ORDER BY total_exec_time DESC
LIMIT 200
"""
_TABLES = """
SELECT format('%I.%I', schemaname, relname) AS table, seq_scan, idx_scan,
       n_live_tup AS live_rows, seq_tup_read
FROM pg_stat_user_tables
"""
_INDEXES = """
SELECT format('%I.%I', s.schemaname, s.indexrelname) AS index,
       format('%I.%I', s.schemaname, s.relname) AS table,
       s.idx_scan, pg_relation_size(s.indexrelid) AS size_bytes,
       i.indisunique AS is_unique, i.indisprimary AS is_primary,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) AS backs_constraint,
       pg_get_indexdef(s.indexrelid) AS definition
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
"""
_ACTIVE = """
SELECT count(*) FILTER (WHERE state = 'active') AS active
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
"""


async def fetch_postgres(
    system: str,
    ctx: ProbeContext,
    *,
    top: int = TOP_QUERIES,
    sample_seconds: float = 2.0,
    sample_every: float = 0.2,
    timeout: float = 10.0,
) -> PostgresAdvice:
    """Read the statistics views of the plan's PostgreSQL ``system`` (read-only) and sample its
    active connections for ``sample_seconds``; connection problems raise ``Unreachable``."""
    # One read-only session with the probes' error translation (a plain reason, no traceback).
    from changeover.probes.postgres import _session

    notes: list[str] = []
    async with _session(system, ctx, timeout) as session:
        facts = await session.one(
            "SELECT current_database() AS db, current_setting('max_connections')::int AS maxc, "
            "(SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database())"
            " AS since, EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
            " AS pss"
        )
        by_total: list[SlowQuery] = []
        by_mean: list[SlowQuery] = []
        if facts["pss"]:
            by_total, by_mean = slow_queries(await session.rows(_STATEMENTS), top)
        else:
            notes.append(
                "slow queries: pg_stat_statements is not installed in this database — add it "
                "to shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
            )
        tables = seq_scan_tables(await session.rows(_TABLES))
        indexes = unused_indexes(await session.rows(_INDEXES))
        activity = []
        deadline = time.monotonic() + sample_seconds
        while True:
            activity.append(int((await session.one(_ACTIVE))["active"]))
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(sample_every)
    if facts["since"] is None:
        notes.append("statistics: never reset, so the counts cover the server's whole life")
    return PostgresAdvice(
        database=str(facts["db"]),
        by_total=by_total,
        by_mean=by_mean,
        seq_scan_tables=tables,
        unused_indexes=indexes,
        activity=activity,
        max_connections=int(facts["maxc"]),
        stats_since=facts["since"],
        notes=notes,
    )
