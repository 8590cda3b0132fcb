"""Introspection of the generated corpora: keys, rowid aliases, indexes, foreign keys, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from changeover.errors import UsageError
from changeover.migrate.sqlite import SqliteSchema, introspect, split_index_sql
from migrate.corpus import make_app_db, make_weird_db


@pytest.fixture
def app(tmp_path: Path) -> SqliteSchema:
    return introspect(make_app_db(tmp_path / "app.db", rows=20))


def test_lists_user_tables_and_skips_internal_ones(tmp_path: Path) -> None:
    path = make_app_db(tmp_path / "app.db", rows=5)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE _changeover_changelog (id INTEGER PRIMARY KEY)")
    conn.close()
    names = [t.name for t in introspect(path).tables]
    assert names == ["audit_log", "order_items", "orders", "payments", "sessions", "users"]


def test_autoincrement_table_has_sequence_value(app: SqliteSchema) -> None:
    users = app.table("users")
    assert users.primary_key == ("id",)
    assert users.rowid_alias == "id"
    assert users.autoincrement
    assert users.sequence == 20


def test_plain_integer_primary_key_is_rowid_alias_without_autoincrement(app: SqliteSchema) -> None:
    orders = app.table("orders")
    assert orders.rowid_alias == "id"
    assert not orders.autoincrement
    assert orders.sequence is None


def test_composite_key_in_key_order(app: SqliteSchema) -> None:
    items = app.table("order_items")
    assert items.primary_key == ("order_id", "line_no")
    assert items.rowid_alias is None


def test_table_without_declared_key_uses_rowid(app: SqliteSchema) -> None:
    log = app.table("audit_log")
    assert log.primary_key == ()
    assert log.key_columns == ("rowid",)


def test_without_rowid_table_is_detected(app: SqliteSchema) -> None:
    sessions = app.table("sessions")
    assert sessions.without_rowid
    assert sessions.primary_key == ("token",)
    assert not app.table("orders").without_rowid


def test_foreign_keys_with_actions(app: SqliteSchema) -> None:
    (fk,) = app.table("payments").foreign_keys
    assert (fk.columns, fk.ref_table, fk.ref_columns) == (("order_id",), "orders", ("id",))
    assert (fk.on_update, fk.on_delete) == ("CASCADE", "RESTRICT")


def test_partial_and_expression_indexes(app: SqliteSchema) -> None:
    indexes = {i.name: i for i in app.table("orders").indexes}
    assert indexes["orders_open"].where == "status <> 'done'"
    assert indexes["orders_open"].columns == ("user_id", "placed_at")
    assert indexes["orders_user"].where is None
    (expr,) = app.table("audit_log").indexes
    assert expr.has_expressions
    assert expr.keys_sql == "actor_id, lower(action)"


def test_unique_constraint_index_has_origin_u(app: SqliteSchema) -> None:
    (unique,) = app.table("users").indexes
    assert unique.unique and unique.origin == "u" and unique.columns == ("email",)


def test_defaults_are_kept_as_sqlite_text(app: SqliteSchema) -> None:
    assert app.table("users").column("created_at").default == "CURRENT_TIMESTAMP"
    assert app.table("orders").column("placed_at").default == "datetime('now')"
    assert app.table("orders").column("status").default == "'new'"


def test_weird_identifiers_survive(tmp_path: Path) -> None:
    order = introspect(make_weird_db(tmp_path / "weird.db")).table("Order")
    assert [c.name for c in order.columns] == ["Id", "select", "user name", "CamelCase", "stamp"]
    assert order.rowid_alias == "Id"


def test_generated_columns_are_flagged(tmp_path: Path) -> None:
    path = tmp_path / "gen.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) STORED)")
    conn.close()
    table = introspect(path).table("t")
    assert [c.generated for c in table.columns] == [False, True]


def test_split_index_sql_handles_quoted_parentheses() -> None:
    keys, where = split_index_sql(
        'CREATE INDEX "i(" ON "t(x" ("a)", lower(b)) WHERE c = \')\' AND d > 0'
    )
    assert keys == '"a)", lower(b)'
    assert where == "c = ')' AND d > 0"


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        introspect(tmp_path / "nope.db")


def test_non_sqlite_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text that is long enough" * 100)
    with pytest.raises(UsageError, match="not a SQLite database"):
        introspect(path)


def test_locked_database_is_a_usage_error(tmp_path: Path) -> None:
    path = make_app_db(tmp_path / "app.db", rows=1)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(UsageError, match="locked"):
            introspect(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_introspection_does_not_write_the_file(tmp_path: Path) -> None:
    path = make_app_db(tmp_path / "app.db", rows=3)
    before = path.read_bytes()
    introspect(path)
    assert path.read_bytes() == before


def test_virtual_and_shadow_tables_are_skipped_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    schema = introspect(path)
    assert [t.name for t in schema.tables] == ["notes"]
    reasons = dict(schema.skipped)
    assert reasons["docs"].startswith("virtual table")
    assert "docs_content" in reasons
