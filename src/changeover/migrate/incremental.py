"""Incremental verify: re-check only the keys the changelog says changed since the last verify.

The forward sync row in ``_changeover_sync`` carries ``verified``: the changelog position up to
which every changed key was verified equal. This checks the keys of entries after it (up to the
applied position) and, when all are equal, moves ``verified`` forward. The handoff uses it
before and inside the write pause; ``migrate verify --changed`` runs it on demand.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from changeover.migrate.apply import SYNC_TABLE
from changeover.migrate.capture import changed_keys
from changeover.migrate.copy import MigrationError
from changeover.migrate.schema import PgPlan, quote
from changeover.migrate.sqlite import connect_readonly
from changeover.migrate.values import RawText
from changeover.migrate.verify import VerifyReport, verify_database
from changeover.secrets import REDACTOR


def verify_changed(
    sqlite_path: str | Path, pg_url: str, plan: PgPlan, *, schema: str = "public"
) -> tuple[int, VerifyReport | None]:
    """(keys checked, report or None when no key changed); ``verified`` advances when equal."""
    table = f"{quote(schema)}.{quote(SYNC_TABLE)}"
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            row = (
                conn.execute(
                    f"SELECT verified, position FROM {table} WHERE direction = 'forward'"
                ).fetchone()
                if exists and exists[0]
                else None
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot read the sync position: {REDACTOR.scrub(str(exc)).strip()}"
        ) from exc
    if row is None:
        raise MigrationError(
            "no sync to verify incrementally: run 'changeover migrate copy --capture' first"
        )
    verified, position = int(str(row[0])), int(str(row[1]))
    source = connect_readonly(sqlite_path)
    source.text_factory = RawText
    try:
        keys = changed_keys(source, plan, verified, position)
    finally:
        source.close()
    count = sum(len(k) for k in keys.values())
    report = None
    if keys:
        report = verify_database(sqlite_path, pg_url, plan, schema=schema, keys=keys, jobs=1)
        if not report.equal:
            return count, report
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {table} SET verified = GREATEST(verified, %s) WHERE direction = 'forward'",
            (position,),
        )
    return count, report
