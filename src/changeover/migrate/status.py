"""``migrate status``: copy state, write owner, sync positions and lag, last verify (read-only)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from changeover.migrate.apply import SYNC_TABLE, read_lag
from changeover.migrate.capture import read_state
from changeover.migrate.copy import COPY_STATE, MigrationError
from changeover.migrate.handoff import read_handoff
from changeover.migrate.reverse import read_reverse_lag, read_reverse_position
from changeover.migrate.schema import PgPlan, quote
from changeover.migrate.sqlite import connect_readonly
from changeover.migrate.verify import last_verify
from changeover.secrets import REDACTOR


def migration_status(
    sqlite_path: str | Path, pg_url: str, plan: PgPlan, *, schema: str = "public"
) -> dict[str, Any]:
    """Everything an operator asks at 3 a.m., as JSON-safe values."""
    source = connect_readonly(sqlite_path)
    try:
        capture = read_state(source)
        try:
            pg = psycopg.connect(pg_url)
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot connect to the PostgreSQL target: {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
        with pg:
            pg.execute(f"SET search_path TO {quote(schema)}")
            copy = _copy_state(pg)
            forward = None
            if capture.head or _exists(pg, SYNC_TABLE):
                try:
                    forward = read_lag(source, pg).to_json()
                except (psycopg.Error, sqlite3.Error):
                    pg.rollback()
            reverse = None
            if read_reverse_position(sqlite_path) is not None:
                try:
                    reverse = read_reverse_lag(sqlite_path, pg).to_json()
                except psycopg.Error:
                    pg.rollback()
    finally:
        source.close()
    handoff = read_handoff(pg_url, schema)
    verify = last_verify(pg_url, schema)
    return {
        "copy": copy,
        "write_owner": handoff.owner,
        "handoff_phase": handoff.phase,
        "capture": {
            "sqlite_triggers": capture.installed,
            "tables": len(capture.tables),
            "changelog_head": capture.head,
        },
        "forward": forward,
        "reverse": reverse,
        "last_verify": None
        if verify is None
        else {
            "mode": verify.mode,
            "equal": verify.equal,
            "finished_at": str(verify.finished_at),
        },
        "tables": len(plan.tables),
    }


def render_status(status: dict[str, Any]) -> str:
    lines = [f"copy: {status['copy']}", f"write owner: {status['write_owner']}"]
    if status["handoff_phase"] != "idle":
        lines.append(f"handoff: {status['handoff_phase']} (run 'migrate handoff' again to finish)")
    capture = status["capture"]
    lines.append(
        f"SQLite capture: {'on' if capture['sqlite_triggers'] else 'off'} "
        f"({capture['tables']} tables, changelog head {capture['changelog_head']:,})"
    )
    for direction in ("forward", "reverse"):
        lag = status[direction]
        if lag:
            lines.append(
                f"{direction} sync: position {lag['position']:,}, lag {lag['rows']:,} rows, "
                f"{lag['seconds'] * 1000:.0f} ms"
            )
    verify = status["last_verify"]
    lines.append(
        "last verify: never"
        if verify is None
        else f"last verify: {verify['mode']}, {'EQUAL' if verify['equal'] else 'DIFFERENT'}, "
        f"at {verify['finished_at']}"
    )
    return "\n".join(lines)


def _exists(pg: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    row = pg.execute("SELECT to_regclass(%s) IS NOT NULL", (quote(table),)).fetchone()
    return bool(row and row[0])


def _copy_state(pg: psycopg.Connection[tuple[object, ...]]) -> str:
    if not _exists(pg, COPY_STATE):
        return "not started"
    items = {str(row[0]) for row in pg.execute(f"SELECT item FROM {quote(COPY_STATE)}")}
    tables = len([item for item in items if item.startswith("table:")])
    if "finished" in items:
        return f"finished ({tables} tables)"
    return f"interrupted after {tables} tables (run 'migrate copy' again to resume)"
