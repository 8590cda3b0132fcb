"""The legacy app's data access: the demo's SQLite schema (``demo/data.py``), one connection per
server thread.

Reads run in autocommit; each write is one ``BEGIN IMMEDIATE`` transaction, and the app lets one
writer in at a time (SQLite's busy handler sleeps in growing steps when writers collide, which
under load turns into seconds of latency). ``busy_timeout`` is 5 s: the migration's capture and
reverse sync also write to this file. WAL mode is left to the capture, which sets it. Order ids
come from SQLite (``INTEGER PRIMARY KEY``). Same method names as ``pg_store.PgStore``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from changeover.demo.apps.common import (
    ITEM_COLUMNS,
    LINE_COLUMNS,
    ORDER_COLUMNS,
    USER_COLUMNS,
    NewOrder,
    Page,
)
from changeover.errors import ChangeoverError, UsageError

BUSY_TIMEOUT_MS = 5000
TABLES = ("users", "sessions", "orders", "order_items")

Row = tuple[Any, ...]
OrderRows = tuple[Row, list[Row]]


def check_database(path: Path) -> None:
    """Fail at start, plainly, when ``path`` is not the demo's legacy database."""
    if not path.is_file():
        raise UsageError(f"no legacy database at {path} (seed one with seed_legacy_db)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ChangeoverError(f"cannot open the legacy database {path}: {exc}") from exc
    missing = [t for t in TABLES if t not in found]
    if missing:
        raise UsageError(f"{path} is not the demo's legacy database: no {', '.join(missing)}")


class SqliteStore:
    """One server thread's connection (sqlite3 connections stay in the thread that made them)."""

    def __init__(self, path: Path, write_lock: threading.Lock) -> None:
        self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.write_lock = write_lock

    def close(self) -> None:
        self.conn.close()

    def ping(self) -> None:
        self.conn.execute("SELECT 1 FROM users LIMIT 1").fetchall()

    # --- reads -----------------------------------------------------------------------------

    def user(self, user_id: int) -> Row | None:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE id = ?"
        row: Row | None = self.conn.execute(sql, (user_id,)).fetchone()
        return row

    def user_by_email(self, email: str) -> Row | None:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE email = ?"
        row: Row | None = self.conn.execute(sql, (email,)).fetchone()
        return row

    def users(self, page: Page) -> list[Row]:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE id > ? ORDER BY id LIMIT ?"
        return self.conn.execute(sql, (page.after, page.limit)).fetchall()

    def items(self, limit: int) -> list[Row]:
        sql = f"SELECT {ITEM_COLUMNS} FROM order_items ORDER BY order_id, line_no LIMIT ?"
        return self.conn.execute(sql, (limit,)).fetchall()

    def order(self, order_id: int) -> OrderRows | None:
        row = self.conn.execute(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?", (order_id,)
        ).fetchone()
        if row is None:
            return None
        return row, self._lines(order_id)

    def _lines(self, order_id: int) -> list[Row]:
        sql = f"SELECT {LINE_COLUMNS} FROM order_items WHERE order_id = ? ORDER BY line_no"
        return self.conn.execute(sql, (order_id,)).fetchall()

    # --- writes ----------------------------------------------------------------------------

    def add_session(self, token: str, user_id: int, expires_at: datetime) -> None:
        # The seed's format: UTC text, which the migration reads as timestamptz.
        expires = expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with self._transaction():
            self.conn.execute(
                "INSERT INTO sessions (token, user_id, expires_at) VALUES (?, ?, ?)",
                (token, user_id, expires),
            )

    def create_order(self, order: NewOrder) -> OrderRows | None:
        """The new order with its items; None when the user does not exist (nothing written)."""
        with self._transaction():
            if self.conn.execute("SELECT 1 FROM users WHERE id = ?", (order.user_id,)).fetchone():
                cursor = self.conn.execute(
                    "INSERT INTO orders (user_id, total) VALUES (?, ?)",
                    # Text, as the seed writes it; DECIMAL's affinity stores it as a number.
                    (order.user_id, str(order.total)),
                )
                order_id = int(cursor.lastrowid or 0)
                self.conn.executemany(
                    "INSERT INTO order_items (order_id, line_no, sku, quantity) "
                    "VALUES (?, ?, ?, ?)",
                    [(order_id, n, sku, qty) for n, (sku, qty) in enumerate(order.items, 1)],
                )
            else:
                return None
        return self.order(order_id)

    def set_status(self, order_id: int, status: str) -> OrderRows | None:
        with self._transaction():
            cursor = self.conn.execute(
                "UPDATE orders SET status = ? WHERE id = ?", (status, order_id)
            )
        return self.order(order_id) if cursor.rowcount else None

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn, self.write_lock)


class _Transaction:
    """One writer at a time in this app, ``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.conn.execute("COMMIT")
        finally:
            # A failed statement or COMMIT leaves the transaction open: close it, or this
            # thread's next BEGIN fails on a connection that looks healthy.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            self.lock.release()
