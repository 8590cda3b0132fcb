"""SQLite → PostgreSQL mapping: affinity, declared-type refinements, casts, defaults, DDL."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from changeover.errors import UsageError
from changeover.migrate.schema import (
    ROWID_COLUMN,
    CastRule,
    PgPlan,
    affinity,
    constraint_name,
    parse_cast,
    pg_type_for,
    plan_schema,
    quote,
    render_ddl,
    translate_default,
)
from changeover.migrate.sqlite import introspect
from migrate.corpus import make_app_db, make_weird_db


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INT", "INTEGER"),
        ("INTEGER", "INTEGER"),
        ("TINYINT", "INTEGER"),
        ("BIGINT", "INTEGER"),
        ("UNSIGNED BIG INT", "INTEGER"),
        ("INT8", "INTEGER"),
        ("CHARINT", "INTEGER"),  # rule 1 wins over rule 2
        ("POINT", "INTEGER"),  # "INT" inside a word still counts (SQLite's documented quirk)
        ("CHARACTER(20)", "TEXT"),
        ("VARCHAR(255)", "TEXT"),
        ("NATIVE CHARACTER(70)", "TEXT"),
        ("NVARCHAR(100)", "TEXT"),
        ("TEXT", "TEXT"),
        ("CLOB", "TEXT"),
        ("BLOB", "BLOB"),
        ("", "BLOB"),
        ("   ", "BLOB"),
        ("REAL", "REAL"),
        ("DOUBLE", "REAL"),
        ("DOUBLE PRECISION", "REAL"),
        ("FLOAT", "REAL"),
        ("NUMERIC", "NUMERIC"),
        ("DECIMAL(10,5)", "NUMERIC"),
        ("BOOLEAN", "NUMERIC"),
        ("DATE", "NUMERIC"),
        ("DATETIME", "NUMERIC"),
        ("STRING", "NUMERIC"),  # not TEXT: no CHAR/CLOB/TEXT in the name
        ("FLOATING POINT", "INTEGER"),  # "POINT" contains INT, rule 1 first
    ],
)
def test_affinity_follows_sqlite_rules(declared: str, expected: str) -> None:
    assert affinity(declared) == expected


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", "bigint"),
        ("int", "bigint"),
        ("SMALLINT", "bigint"),
        ("TEXT", "text"),
        ("VARCHAR(120)", "text"),
        ("CHAR(2)", "text"),
        ("BLOB", "bytea"),
        ("", "bytea"),
        ("REAL", "double precision"),
        ("FLOAT", "double precision"),
        ("NUMERIC", "numeric"),
        ("DECIMAL(12,2)", "numeric(12,2)"),
        ("numeric(10)", "numeric(10)"),
        ("DECIMAL", "numeric"),
        ("BOOLEAN", "boolean"),
        ("bool", "boolean"),
        ("DATE", "date"),
        ("DATETIME", "timestamptz"),
        ("TIMESTAMP", "timestamptz"),
        ("timestamp with time zone", "timestamptz"),
        ("TIME", "time"),
        ("JSON", "json"),
        ("STRING", "numeric"),
    ],
)
def test_declared_type_maps_to_postgres_type(declared: str, expected: str) -> None:
    assert pg_type_for(declared) == expected


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("timestamptz from epoch_ms", CastRule("timestamptz", "epoch_ms")),
        ("  TIMESTAMPTZ   FROM  epoch_s ", CastRule("timestamptz", "epoch_s")),
        ("date from iso8601", CastRule("date", "iso8601")),
        ("boolean from bool_int", CastRule("boolean", "bool_int")),
        ("jsonb", CastRule("jsonb", None)),
        ("varchar(20) from text", CastRule("varchar(20)", "text")),
        ("numeric(12, 2)", CastRule("numeric(12, 2)", None)),
        ("double precision", CastRule("double precision", None)),
    ],
)
def test_parse_cast_accepts_type_and_format(spec: str, rule: CastRule) -> None:
    assert parse_cast(spec) == rule


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("timestamp_tz from epoch_ms", "unknown PostgreSQL type 'timestamp_tz'"),
        ("timestamptz from epoch_us", "unknown source format 'epoch_us'"),
        ("bigint from epoch_ms", "only converts to date, timestamp"),
        ("text from bool_int", "only converts to boolean"),
        ("", "expected '<postgres type>"),
        ("text; drop table users", "unknown PostgreSQL type"),
    ],
)
def test_parse_cast_rejects_with_plain_message(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_cast(spec)


@pytest.mark.parametrize(
    ("expr", "pg_type", "sql"),
    [
        (None, "text", None),
        ("NULL", "text", None),
        ("0", "bigint", "0"),
        ("-1.5e3", "double precision", "-1.5e3"),
        ("'new'", "text", "'new'"),
        ("'it''s'", "text", "'it''s'"),
        ("0", "boolean", "false"),
        ("1", "boolean", "true"),
        ("TRUE", "boolean", "true"),
        ("'42'", "bigint", "'42'"),
        ("CURRENT_TIMESTAMP", "timestamptz", "now()"),
        ("(datetime('now'))", "timestamptz", "now()"),
        ("datetime('now')", "timestamptz", "now()"),
        (
            "CURRENT_TIMESTAMP",
            "text",
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
        ),
        ("CURRENT_DATE", "date", "(now() AT TIME ZONE 'UTC')::date"),
        ("strftime('%s', 'now')", "bigint", "extract(epoch from now())::bigint"),
        ("'2026-01-01'", "date", "'2026-01-01'"),
        ("7", "varchar(3)", "'7'"),
        ("7", "text", "'7'"),
        ("x'00ff'", "bytea", "'\\x00ff'::bytea"),
    ],
)
def test_translatable_defaults(expr: str | None, pg_type: str, sql: str | None) -> None:
    translated = translate_default(expr, pg_type)
    assert (translated.sql, translated.warning) == (sql, None)


@pytest.mark.parametrize(
    ("expr", "pg_type"),
    [
        ("lower(hex(randomblob(4)))", "text"),
        ("'abc'", "bigint"),
        ("0", "timestamptz"),
        ("'yes please'", "boolean"),
        ("CURRENT_TIMESTAMP", "bigint"),
        ("'not a date'", "date"),
    ],
)
def test_untranslatable_default_is_omitted_with_a_warning(expr: str, pg_type: str) -> None:
    translated = translate_default(expr, pg_type)
    assert translated.sql is None
    assert translated.warning is not None and expr in translated.warning


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("Order", '"Order"'), ("select", '"select"'), ("user name", '"user name"'), ('a"b', '"a""b"')],
)
def test_identifiers_are_always_quoted(name: str, quoted: str) -> None:
    assert quote(name) == quoted


@pytest.fixture
def app_plan(tmp_path: Path) -> PgPlan:
    return plan_schema(introspect(make_app_db(tmp_path / "app.db", rows=7)))


def test_rowid_alias_and_autoincrement_become_identity(app_plan: PgPlan) -> None:
    tables = {t.name: t for t in app_plan.tables}
    assert tables["users"].columns[0].identity
    assert tables["orders"].columns[0].identity
    assert not any(c.identity for c in tables["order_items"].columns)
    assert not any(c.identity for c in tables["sessions"].columns)
    assert '"id" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL' in tables["users"].create_sql


def test_sequence_reset_uses_sqlite_sequence_high_water_mark(app_plan: PgPlan) -> None:
    (users_reset,) = [r for r in app_plan.sequence_resets if '"users"' in r]
    assert 'GREATEST(COALESCE(max("id"), 0), 7) + 1' in users_reset
    assert len(app_plan.sequence_resets) == 4  # users, orders, payments, audit_log's added key


def test_table_without_key_gets_rowid_identity_column(app_plan: PgPlan) -> None:
    log = next(t for t in app_plan.tables if t.name == "audit_log")
    assert log.primary_key == (ROWID_COLUMN,)
    assert log.columns[0].name == ROWID_COLUMN and log.columns[0].identity
    assert any("audit_log: no primary key" in w for w in app_plan.warnings)


def test_composite_primary_key_in_create_table(app_plan: PgPlan) -> None:
    items = next(t for t in app_plan.tables if t.name == "order_items")
    assert 'PRIMARY KEY ("order_id", "line_no")' in items.create_sql


def test_indexes_constraints_and_foreign_keys_are_separate(app_plan: PgPlan) -> None:
    assert (
        'CREATE INDEX "orders_open" ON "orders" ("user_id", "placed_at") WHERE status <> \'done\';'
        in app_plan.indexes
    )
    assert app_plan.unique_constraints == (
        'ALTER TABLE "users" ADD CONSTRAINT "users_email_key" UNIQUE ("email");',
    )
    assert (
        'ALTER TABLE "payments" ADD CONSTRAINT "payments_order_id_fkey" FOREIGN KEY ("order_id") '
        'REFERENCES "orders" ("id") ON DELETE RESTRICT ON UPDATE CASCADE '
        "DEFERRABLE INITIALLY IMMEDIATE;"
    ) in app_plan.foreign_keys
    assert len(app_plan.foreign_keys) == 4
    assert not any("CREATE TABLE" in s for s in app_plan.indexes + app_plan.foreign_keys)


def test_expression_index_is_copied_with_a_warning(app_plan: PgPlan) -> None:
    assert any("lower(action)" in s for s in app_plan.indexes)
    assert any("expression index 'audit_actor_lower'" in w for w in app_plan.warnings)


def test_cast_override_changes_type_and_records_format(tmp_path: Path) -> None:
    schema = introspect(make_weird_db(tmp_path / "weird.db"))
    plan = plan_schema(schema, {"events.updated_at": "timestamptz from epoch_ms"})
    events = next(t for t in plan.tables if t.name == "events")
    column = next(c for c in events.columns if c.name == "updated_at")
    assert (column.pg_type, column.source_format) == ("timestamptz", "epoch_ms")


def test_cast_override_for_unknown_column_is_rejected(tmp_path: Path) -> None:
    schema = introspect(make_weird_db(tmp_path / "weird.db"))
    with pytest.raises(UsageError, match=r"'events\.nope': no such column"):
        plan_schema(schema, {"events.nope": "timestamptz"})


def test_weird_identifiers_and_omitted_default_in_ddl(tmp_path: Path) -> None:
    plan = plan_schema(introspect(make_weird_db(tmp_path / "weird.db")))
    ddl = render_ddl(plan)
    assert 'CREATE TABLE "Order" (' in ddl
    assert "\"user name\" text NOT NULL DEFAULT ''" in ddl
    assert '"select" text,' in ddl
    assert "Order.select: default 'lower(hex(randomblob(4)))'" in ddl  # listed, not silent


def test_render_ddl_orders_sections_for_loading(app_plan: PgPlan) -> None:
    ddl = render_ddl(app_plan)
    positions = [
        ddl.index(marker)
        for marker in ("CREATE TABLE", "CREATE INDEX", "UNIQUE (", "FOREIGN KEY", "setval(")
    ]
    assert positions == sorted(positions)


@pytest.mark.integration
@pytest.mark.parametrize("make", [make_app_db, make_weird_db])
def test_every_planned_statement_executes_on_postgres(
    tmp_path: Path, pg_url: str, make: Callable[[Path], Path]
) -> None:
    plan = plan_schema(introspect(make(tmp_path / "source.db")))
    statements = [t.create_sql for t in plan.tables]
    statements += [*plan.indexes, *plan.unique_constraints, *plan.foreign_keys]
    statements += plan.sequence_resets
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())  # bytes: the DDL is data here, not a literal
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (len(plan.tables),)


@pytest.mark.integration
def test_identity_continues_past_sqlite_sequence_on_postgres(tmp_path: Path, pg_url: str) -> None:
    plan = plan_schema(introspect(make_app_db(tmp_path / "app.db", rows=9)))
    users = next(t for t in plan.tables if t.name == "users")
    (reset,) = [r for r in plan.sequence_resets if '"users"' in r]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(users.create_sql.encode())
        conn.execute(reset.encode())
        row = conn.execute(
            "INSERT INTO users (email, name) VALUES ('new@example.com', 'New') RETURNING id, "
            "is_admin, created_at IS NOT NULL"
        ).fetchone()
    assert row == (10, False, True)


def test_long_constraint_names_fit_postgres_limit() -> None:
    name = constraint_name("a" * 40, "b" * 40, "fkey")
    assert len(name.strip('"').encode()) == 63
    assert name != constraint_name("a" * 40, "b" * 39 + "c", "fkey")
    assert constraint_name("users", "email", "key") == '"users_email_key"'


def test_partial_index_condition_is_warned_about(app_plan: PgPlan) -> None:
    assert any("partial index 'orders_open'" in w for w in app_plan.warnings)


def test_virtual_table_is_listed_as_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    conn.close()
    plan = plan_schema(introspect(path))
    assert plan.tables == ()
    assert any(w.startswith("docs: not migrated: virtual table") for w in plan.warnings)
