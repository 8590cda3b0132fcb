"""The new app's data access: the migrated schema in PostgreSQL through psycopg's async pool.

Every connection runs with ``search_path`` set to the app's schema (``app`` in the demo) and a
statement timeout, in autocommit; a write is one explicit transaction. Order ids come from the
column's identity (the migration made the key an identity and the handoff resets it past the
legacy ids). Same method names as ``sqlite_store.SqliteStore``, as coroutines.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from changeover.demo.apps.common import (
    ITEM_COLUMNS,
    LINE_COLUMNS,
    ORDER_COLUMNS,
    USER_COLUMNS,
    NewOrder,
    Page,
)
from changeover.errors import ChangeoverError, UsageError

STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_SECONDS = 5
TABLES = ("users", "sessions", "orders", "order_items")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

Row = tuple[Any, ...]
OrderRows = tuple[Row, list[Row]]


def connection_kwargs(schema: str, instance: str) -> dict[str, Any]:
    """Settings of every pooled connection (a plain lower-case schema name: it goes in options)."""
    if not _SCHEMA_NAME.match(schema):
        raise UsageError(f"--schema {schema!r} must be a plain lower-case name, like 'app'")
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": f"changeover-demo-{instance}"[:63],
        "options": f"-c search_path={schema} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
    }


async def check_database(url: str, kwargs: dict[str, Any], schema: str) -> None:
    """One connection before the pool: a plain reason when PostgreSQL or the tables are missing."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise ChangeoverError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    async with conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        )
        found = {row[0] for row in await cursor.fetchall()}
    missing = [t for t in TABLES if t not in found]
    if missing:
        raise UsageError(
            f"schema {schema!r} has no {', '.join(missing)}: copy the legacy database first "
            "(changeover migrate copy)"
        )


class PgStore:
    """The API's queries over a pool; psycopg and pool errors reach the app's boundary."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def _one(self, sql: str, args: tuple[Any, ...]) -> Row | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, args)
            row: Row | None = await cursor.fetchone()
            return row

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, args)
            rows: list[Row] = await cursor.fetchall()
            return rows

    # --- reads -----------------------------------------------------------------------------

    async def user(self, user_id: int) -> Row | None:
        return await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,))

    async def user_by_email(self, email: str) -> Row | None:
        return await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE email = %s", (email,))

    async def users(self, page: Page) -> list[Row]:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE id > %s ORDER BY id LIMIT %s"
        return await self._all(sql, (page.after, page.limit))

    async def items(self, limit: int) -> list[Row]:
        sql = f"SELECT {ITEM_COLUMNS} FROM order_items ORDER BY order_id, line_no LIMIT %s"
        return await self._all(sql, (limit,))

    async def order(self, order_id: int) -> OrderRows | None:
        async with self.pool.connection() as conn:
            return await _order(conn, order_id)

    # --- writes ----------------------------------------------------------------------------

    async def add_session(self, token: str, user_id: int, expires_at: datetime) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO sessions (token, user_id, expires_at) VALUES (%s, %s, %s)",
                (token, user_id, expires_at),
            )

    async def create_order(self, order: NewOrder) -> OrderRows | None:
        """The new order with its items; None when the user does not exist (nothing written)."""
        async with self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    cursor = await conn.execute(
                        f"INSERT INTO orders (user_id, total) VALUES (%s, %s) "
                        f"RETURNING {ORDER_COLUMNS}",
                        (order.user_id, order.total),
                    )
                    row = await cursor.fetchone()
                    assert row is not None  # INSERT … RETURNING of one row
                    lines = [(n, sku, qty) for n, (sku, qty) in enumerate(order.items, 1)]
                    async with conn.cursor() as items:
                        await items.executemany(
                            "INSERT INTO order_items (order_id, line_no, sku, quantity) "
                            "VALUES (%s, %s, %s, %s)",
                            [(row[0], *line) for line in lines],
                        )
            except pg_errors.ForeignKeyViolation:
                return None
            return row, lines

    async def set_status(self, order_id: int, status: str) -> OrderRows | None:
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE orders SET status = %s WHERE id = %s", (status, order_id)
            )
            if cursor.rowcount == 0:
                return None
            return await _order(conn, order_id)


async def _order(conn: psycopg.AsyncConnection[Any], order_id: int) -> OrderRows | None:
    cursor = await conn.execute(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = %s", (order_id,))
    row = await cursor.fetchone()
    if row is None:
        return None
    cursor = await conn.execute(
        f"SELECT {LINE_COLUMNS} FROM order_items WHERE order_id = %s ORDER BY line_no",
        (order_id,),
    )
    return row, await cursor.fetchall()
