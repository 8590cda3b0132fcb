"""The demo's data step: a legacy SQLite file moved into PostgreSQL live, handed off, and back.

A seeded legacy database (users, sessions, orders, order items) is copied with capture into the
embedded PostgreSQL (schema ``app``) while a stand-in for the legacy app keeps writing; the
forward applier keeps up; every row is verified; writes are handed to the new side, a write made
there flows back into SQLite through reverse sync, and a final verify is equal again.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from changeover.migrate.apply import ForwardApplier
from changeover.migrate.copy import copy_database
from changeover.migrate.handoff import NoSwitch, run_handoff
from changeover.migrate.reverse import ReverseApplier
from changeover.migrate.schema import plan_schema, quote
from changeover.migrate.sqlite import introspect
from changeover.migrate.verify import verify_database

SCHEMA = "app"
LEGACY_SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE sessions (
    token TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    expires_at TIMESTAMP NOT NULL
) WITHOUT ROWID;
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    status TEXT NOT NULL DEFAULT 'new',
    total DECIMAL(12,2) NOT NULL,
    placed_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    line_no INTEGER NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX orders_user ON orders (user_id);
"""


def seed_legacy_db(path: Path, users: int, seed: int = 1) -> int:
    """A legacy app's database: ``users`` users, as many sessions and orders, two items each."""
    rng = random.Random(seed)
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_SCHEMA)
        conn.executemany(
            "INSERT INTO users (email, name) VALUES (?, ?)",
            ((f"user{i}@example.com", f"User {i}") for i in range(users)),
        )
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?)",
            ((f"s{i:09d}", i + 1, "2026-12-01 02:00:00") for i in range(users)),
        )
        conn.executemany(
            "INSERT INTO orders (id, user_id, total) VALUES (?, ?, ?)",
            (
                (i + 1, rng.randint(1, users), f"{rng.randint(100, 99999) / 100:.2f}")
                for i in range(users)
            ),
        )
        conn.executemany(
            "INSERT INTO order_items VALUES (?, ?, ?, ?)",
            (
                (o, n, f"SKU-{o}-{n}", rng.randint(1, 5))
                for o in range(1, users + 1)
                for n in (1, 2)
            ),
        )
    conn.close()
    return users * 5


def move_data(workdir: Path, pg_url: str, users: int = 10_000) -> dict[str, Any]:
    """Copy live, sync, verify, hand off and back; the numbers for the demo's table."""
    legacy = workdir / "legacy.db"
    legacy.unlink(missing_ok=True)
    rows = seed_legacy_db(legacy, users)
    plan = plan_schema(introspect(legacy))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {quote(SCHEMA)} CASCADE")
    writer = _LegacyWriter(legacy, users)
    copy_started = time.monotonic()
    copied = copy_database(legacy, pg_url, plan, schema=SCHEMA, capture=True)
    copy_seconds = time.monotonic() - copy_started
    writer.start()  # the legacy app keeps taking orders while sync follows it
    lags: list[float] = []
    with ForwardApplier(legacy, pg_url, plan, schema=SCHEMA) as applier:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            applier.apply_batch()
            lags.append(applier.lag().seconds)
            time.sleep(0.02)
        writer.stop()
        applier.catch_up()
    verified = verify_database(legacy, pg_url, plan, schema=SCHEMA)
    handoff = run_handoff(legacy, pg_url, plan, NoSwitch(), schema=SCHEMA)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {quote(SCHEMA)}")
        conn.execute("UPDATE orders SET status = 'refunded-on-new' WHERE id = 1")
    with ReverseApplier(legacy, pg_url, plan, schema=SCHEMA) as reverse:
        written_back = reverse.catch_up()
    final = verify_database(legacy, pg_url, plan, schema=SCHEMA)
    return {
        "legacy_rows": rows,
        "copied": copied.copied,
        "copy_seconds": round(copy_seconds, 2),
        "copy_rows_per_second": round(copied.copied / copy_seconds) if copy_seconds else 0,
        "legacy_writes_during_sync": writer.count,
        "sync_lag_p95_ms": round(1000 * _p95(lags), 1),
        "verify_equal": verified.equal,
        "handoff_pause_ms": round(handoff.pause_seconds * 1000, 1),
        "written_back": written_back,
        "final_verify_equal": final.equal,
    }


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class _LegacyWriter:
    """The legacy app taking orders: about 200 writes per second until stopped."""

    def __init__(self, path: Path, users: int) -> None:
        self.path, self.users, self.count = path, users, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        rng = random.Random(2)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            next_id = self.users + 1
            while not self._stop.is_set():
                conn.execute(
                    "INSERT INTO orders (id, user_id, total) VALUES (?, ?, ?)",
                    (next_id, rng.randint(1, self.users), "19.99"),
                )
                conn.execute(
                    "UPDATE users SET name = ? WHERE id = ?",
                    (f"renamed {next_id}", rng.randint(1, self.users)),
                )
                next_id += 1
                self.count += 2
                self._stop.wait(0.01)
        finally:
            conn.close()
