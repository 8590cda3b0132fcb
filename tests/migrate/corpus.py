"""Generated SQLite corpora for the migration tests (later also the benchmarks); none downloaded.

``make_app_db`` builds a realistic application schema scaled by ``rows``; ``make_weird_db`` holds
every dynamic-typing case of issue 4. What SQLite itself does with the odd values is noted inline:
a REAL NaN cannot be stored (SQLite turns it into NULL), so the weird corpus stores NaN as text.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

APP_SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name VARCHAR(120) NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT 0,
    deleted_at DATETIME,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE sessions (
    token TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at TIMESTAMP NOT NULL,
    data JSON
) WITHOUT ROWID;
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    status TEXT NOT NULL DEFAULT 'new',
    total DECIMAL(12,2) NOT NULL DEFAULT 0,
    placed_at DATETIME NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line_no INTEGER NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL DEFAULT 1,
    unit_price REAL NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id) ON UPDATE CASCADE ON DELETE RESTRICT,
    amount NUMERIC NOT NULL,
    provider_ref BLOB,
    paid_at TIMESTAMP
);
CREATE TABLE audit_log (
    at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor_id INTEGER,
    action TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX orders_open ON orders (user_id, placed_at) WHERE status <> 'done';
CREATE UNIQUE INDEX payments_ref ON payments (provider_ref);
CREATE INDEX audit_actor_lower ON audit_log (actor_id, lower(action));
"""

STATUSES = ("new", "paid", "shipped", "done")


def make_app_db(path: str | Path, rows: int = 100, seed: int = 1) -> Path:
    """A realistic app database: ``rows`` users and orders, two items and one payment per order."""
    path = Path(path)
    rng = random.Random(seed)
    with sqlite3.connect(path) as conn:
        conn.executescript(APP_SCHEMA)
        conn.executemany(
            "INSERT INTO users (email, name, is_admin) VALUES (?, ?, ?)",
            ((f"user{i}@example.com", f"User {i}", int(i % 50 == 0)) for i in range(rows)),
        )
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?)",
            (
                (f"tok{i:08d}", i % rows + 1, "2026-12-01 02:00:00", '{"theme": "dark"}')
                for i in range(rows)
            ),
        )
        conn.executemany(
            "INSERT INTO orders (id, user_id, status, total) VALUES (?, ?, ?, ?)",
            ((i + 1, rng.randint(1, rows), STATUSES[i % 4], i * 1.25) for i in range(rows)),
        )
        conn.executemany(
            "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
            (
                (order, line, f"SKU-{order}-{line}", rng.randint(1, 5), 9.99)
                for order in range(1, rows + 1)
                for line in (1, 2)
            ),
        )
        conn.executemany(
            "INSERT INTO payments (order_id, amount, provider_ref, paid_at) VALUES (?, ?, ?, ?)",
            (
                (i + 1, f"{i * 1.25:.2f}", i.to_bytes(8, "big"), "2026-11-20T10:00:00Z")
                for i in range(rows)
            ),
        )
        conn.executemany(
            "INSERT INTO audit_log (actor_id, action, detail) VALUES (?, ?, ?)",
            ((i % rows + 1, "login", None) for i in range(rows)),
        )
    conn.close()
    return path


WEIRD_SCHEMA = """
CREATE TABLE numbers (
    id INTEGER PRIMARY KEY,
    qty INTEGER,
    big INTEGER,
    ratio REAL
);
CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    body TEXT,
    note TEXT
);
CREATE TABLE blobs (
    id INTEGER PRIMARY KEY,
    data BLOB,
    label TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    happened_at DATETIME,
    created_at INTEGER,
    updated_at INTEGER,
    day DATE
);
CREATE TABLE flags (
    id INTEGER PRIMARY KEY,
    active BOOLEAN,
    verified BOOLEAN
);
CREATE TABLE "Order" (
    "Id" INTEGER PRIMARY KEY,
    "select" TEXT DEFAULT (lower(hex(randomblob(4)))),
    "user name" TEXT NOT NULL DEFAULT '',
    "CamelCase" INTEGER DEFAULT (strftime('%s', 'now')),
    stamp TEXT DEFAULT CURRENT_TIMESTAMP
);
"""

TEN_MB = 10 * 1024 * 1024

# The cast rules the weird corpus needs: integers that are epoch seconds / milliseconds.
WEIRD_CASTS = {
    "events.created_at": "timestamptz from epoch_s",
    "events.updated_at": "timestamptz from epoch_ms",
}


def make_weird_db(path: str | Path) -> Path:
    """Every dynamic-typing case of issue 4, each in a table/column the tests name (ids below)."""
    path = Path(path)
    with sqlite3.connect(path) as conn:
        conn.executescript(WEIRD_SCHEMA)
        # numbers: 1 ok; 2-3 text in INTEGER; 4 2**70 (SQLite stores it as REAL);
        # 5 '2**70' as text digits; 6 +Inf; 7 -Inf; 8 NaN (stored as text: REAL NaN becomes NULL)
        conn.executemany(
            "INSERT INTO numbers VALUES (?, ?, ?, ?)",
            [
                (1, 10, 5, 0.5),
                (2, "ten", 5, 0.5),
                (3, "12abc", 5, 0.5),
                (5, 1, str(2**70), 0.5),
                (6, 1, 5, float("inf")),
                (7, 1, 5, float("-inf")),
                (8, 1, 5, float("nan")),
                (9, 1, 5, "NaN"),
            ],
        )
        # Python cannot bind 2**70; as a SQL literal SQLite parses it into a REAL.
        conn.execute(f"INSERT INTO numbers VALUES (4, 1, {2**70}, 0.5)")
        # texts: 1 emoji; 2 invalid UTF-8; 3 NUL inside text; 4 empty string; 5 NULL; 6 blob in TEXT
        conn.executemany(
            "INSERT INTO texts VALUES (?, ?, ?)",
            [(1, "café ☕ 🚀", "ok"), (4, "", ""), (5, None, None)],
        )
        conn.execute("INSERT INTO texts VALUES (2, CAST(x'66fe6f80' AS TEXT), 'bad utf8')")
        conn.execute("INSERT INTO texts VALUES (3, CAST(x'610062' AS TEXT), 'nul')")
        conn.execute("INSERT INTO texts VALUES (6, x'deadbeef', 'blob in text')")
        # blobs: NUL bytes in a blob are fine; a 10 MB blob; an empty blob
        conn.executemany(
            "INSERT INTO blobs VALUES (?, ?, ?)",
            [(1, b"\x00\x01\x00", "nuls"), (2, bytes(TEN_MB), "10 MB"), (3, b"", "empty")],
        )
        # events: dates in four formats
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [
                (1, "2026-11-20T10:00:00Z", 1_763_632_800, 1_763_632_800_000, "2026-11-20"),
                (2, "2026-11-20 10:00:00", 1_763_632_801, 1_763_632_801_000, "2026-11-21"),
                (3, 1_763_632_800, 1_763_632_802, 1_763_632_802_000, "2026-11-22"),
                (4, 1_763_632_800_000, 1_763_632_803, 1_763_632_803_000, "2026-11-23"),
            ],
        )
        # flags: 0/1, 'true'/'false' text, NULL
        conn.executemany(
            "INSERT INTO flags VALUES (?, ?, ?)",
            [(1, 1, 0), (2, 0, 1), (3, "true", 1), (4, "false", 0), (5, None, 1)],
        )
        conn.execute('INSERT INTO "Order" ("Id", "user name") VALUES (1, ?)', ("Zoë",))
        conn.execute('INSERT INTO "Order" ("Id") VALUES (2)')
    conn.close()
    return path
