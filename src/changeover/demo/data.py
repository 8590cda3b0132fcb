"""The demo's legacy data: the SQLite schema the legacy app serves, seeded with users, sessions,
orders and order items (five rows a user), which the demo plan's migration moves to PostgreSQL.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

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
