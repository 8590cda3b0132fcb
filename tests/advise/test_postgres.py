"""Advice against a real PostgreSQL: staged problems are each found and named; a healthy
database gives no table or index findings; an unreachable server is a plain error."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from changeover.advise.postgres import (
    fetch_postgres,
    redact_query,
    seq_scan_tables,
    slow_queries,
    unused_indexes,
)
from changeover.plan.systems import PostgresSystem
from changeover.probes.base import ProbeContext, Unreachable


def ctx_for(url: str) -> ProbeContext:
    return ProbeContext(systems={"db": PostgresSystem(url="${PG_URL}")}, environ={"PG_URL": url})


def flush_stats(conn: psycopg.Connection) -> None:
    # Statistics reach the shared views when the backend next goes idle; force it now.
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")


def stage_problems(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE TABLE orders (id bigint, customer int, note text)")
        conn.execute("INSERT INTO orders SELECT g, g % 100, 'n' FROM generate_series(1, 5000) g")
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text)")
        conn.execute(
            "INSERT INTO customers SELECT g, 'c' || g || '@example.com' "
            "FROM generate_series(1, 2000) g"
        )
        conn.execute("CREATE INDEX customers_email_idx ON customers (email)")
        for _ in range(100):
            conn.execute("SELECT count(*) FROM orders WHERE customer = 7")
        conn.execute("SELECT pg_sleep(0.3)")
        flush_stats(conn)


@pytest.mark.timeout(60)
def test_staged_problems_are_each_found_and_named(pg_url: str) -> None:
    stage_problems(pg_url)

    advice = asyncio.run(fetch_postgres("db", ctx_for(pg_url), sample_seconds=0.1))

    assert [t.table for t in advice.seq_scan_tables] == ["public.orders"]
    orders = advice.seq_scan_tables[0]
    assert orders.seq_scan >= 100 and orders.live_rows == 5000
    assert "CREATE INDEX CONCURRENTLY" in orders.advice and "it has no index" in orders.advice
    assert [i.index for i in advice.unused_indexes] == ["public.customers_email_idx"]
    assert advice.unused_indexes[0].size_bytes > 0
    assert "DROP INDEX CONCURRENTLY public.customers_email_idx" in advice.unused_indexes[0].advice
    assert "pg_sleep" in advice.by_mean[0].query and advice.by_mean[0].mean_ms >= 300
    scans = [q for q in advice.by_total if "FROM orders" in q.query]
    assert scans and scans[0].calls == 100
    assert advice.notes == [] or all("pg_stat_statements" not in n for n in advice.notes)


@pytest.mark.timeout(60)
def test_a_healthy_database_gives_no_table_or_index_findings(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, sku text NOT NULL)")
        conn.execute("INSERT INTO items SELECT g, 'sku-' || g FROM generate_series(1, 5000) g")
        conn.execute("CREATE INDEX items_sku_idx ON items (sku)")
        conn.execute("ANALYZE items")
        for n in range(100):
            conn.execute("SELECT id FROM items WHERE sku = %s", (f"sku-{n}",))
            conn.execute("SELECT sku FROM items WHERE id = %s", (n,))
        flush_stats(conn)

    advice = asyncio.run(fetch_postgres("db", ctx_for(pg_url), sample_seconds=0.1))

    assert advice.seq_scan_tables == []
    assert advice.unused_indexes == []


@pytest.mark.timeout(60)
def test_without_pg_stat_statements_the_note_says_how_to_enable_it(pg_url: str) -> None:
    advice = asyncio.run(fetch_postgres("db", ctx_for(pg_url), sample_seconds=0))

    assert advice.by_total == [] and advice.by_mean == []
    assert any("CREATE EXTENSION pg_stat_statements" in note for note in advice.notes)


@pytest.mark.timeout(60)
def test_the_activity_sample_sees_a_running_query(pg_url: str) -> None:
    started = threading.Event()

    def busy() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            started.set()
            conn.execute("SELECT pg_sleep(2)")

    worker = threading.Thread(target=busy)
    worker.start()
    started.wait(10)
    time.sleep(0.3)
    try:
        advice = asyncio.run(fetch_postgres("db", ctx_for(pg_url), sample_seconds=0.6))
    finally:
        worker.join(10)

    assert max(advice.activity) >= 1 and len(advice.activity) >= 2
    assert advice.to_json()["peak_active"] >= 1
    assert advice.max_connections > 0


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_a_plain_error() -> None:
    ctx = ctx_for("postgresql://changeover:s3cret-pw@127.0.0.1:1/db")

    with pytest.raises(Unreachable) as caught:
        asyncio.run(fetch_postgres("db", ctx, sample_seconds=0, timeout=3))

    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_slow_queries_rank_by_total_and_by_mean_separately() -> None:
    rows = [
        {"query": "SELECT a", "calls": 1000, "total_ms": 5000.0, "mean_ms": 5.0, "rows": 1},
        {"query": "SELECT b", "calls": 2, "total_ms": 3000.0, "mean_ms": 1500.0, "rows": 1},
        {"query": "SELECT c", "calls": 0, "total_ms": 0.0, "mean_ms": 0.0, "rows": 0},
    ]
    by_total, by_mean = slow_queries(rows, top=5)
    assert [q.query for q in by_total] == ["SELECT a", "SELECT b"]
    assert [q.query for q in by_mean] == ["SELECT b", "SELECT a"]


def test_query_text_never_shows_literals_or_passwords() -> None:
    text = redact_query("ALTER ROLE app PASSWORD 'hunter2-long'; SELECT token = abc123")
    assert "hunter2" not in text and "abc123" not in text
    assert redact_query("SELECT " + "x, " * 200, limit=50).endswith("…")


def test_small_or_index_read_tables_are_not_seq_scan_findings() -> None:
    base = {"seq_tup_read": 1, "table": "t"}
    small = {**base, "seq_scan": 500, "idx_scan": 0, "live_rows": 10}
    indexed = {**base, "seq_scan": 500, "idx_scan": 5000, "live_rows": 10_000}
    rare = {**base, "seq_scan": 3, "idx_scan": 0, "live_rows": 10_000}
    heavy = {**base, "seq_scan": 500, "idx_scan": 20, "live_rows": 10_000}
    assert [t.seq_scan for t in seq_scan_tables([small, indexed, rare, heavy])] == [500]


def test_unique_primary_and_constraint_indexes_are_never_unused_findings() -> None:
    row = {
        "index": "i",
        "table": "t",
        "idx_scan": 0,
        "size_bytes": 8192,
        "definition": "CREATE INDEX i ON t (a)",
        "is_unique": False,
        "is_primary": False,
        "backs_constraint": False,
    }
    keep = [
        {**row, "is_unique": True},
        {**row, "is_primary": True},
        {**row, "backs_constraint": True},
        {**row, "idx_scan": 4},
    ]
    assert unused_indexes(keep) == []
    assert [i.index for i in unused_indexes([row])] == ["i"]
