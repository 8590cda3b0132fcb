"""``migrate copy --dry-run``: the whole migration into a scratch schema, verified, timed, dropped.

Nothing changes in the SQLite file (no capture) or in the target's real schema; the scratch
schema ``_changeover_dryrun_<random>`` is dropped even when the copy or the verify fails.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from changeover.migrate.copy import CopySummary, MigrationError, OnError, Progress, copy_database
from changeover.migrate.schema import PgPlan, quote
from changeover.migrate.verify import VerifyReport, verify_database
from changeover.secrets import REDACTOR


@dataclass(frozen=True)
class DryRun:
    schema: str
    copy: CopySummary
    verify: VerifyReport
    copy_seconds: float
    verify_seconds: float

    @property
    def ok(self) -> bool:
        return self.verify.equal and not self.copy.rejected and not self.copy.failed_statements

    def to_json(self) -> dict[str, Any]:
        return {
            "scratch_schema": self.schema,
            "dropped": True,
            "ok": self.ok,
            "copy_seconds": round(self.copy_seconds, 2),
            "verify_seconds": round(self.verify_seconds, 2),
            "copied": self.copy.copied,
            "rejected": self.copy.rejected,
            "rows_per_second": round(self.copy.rows_per_second),
            "failed_statements": [list(f) for f in self.copy.failed_statements],
            "verify": self.verify.to_json(details=True),
        }


def dry_run(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    *,
    on_error: OnError = "quarantine",
    jobs: int = 2,
    progress: Progress | None = None,
) -> DryRun:
    """Copy into a fresh scratch schema, verify every row, drop the schema; time both steps."""
    schema = f"_changeover_dryrun_{secrets.token_hex(4)}"
    try:
        started = time.monotonic()
        summary = copy_database(
            sqlite_path,
            pg_url,
            plan,
            schema=schema,
            on_error=on_error,
            jobs=jobs,
            progress=progress,
        )
        copied = time.monotonic()
        report = verify_database(sqlite_path, pg_url, plan, schema=schema)
        verified = time.monotonic()
    finally:
        _drop(pg_url, schema)
    return DryRun(schema, summary, report, copied - started, verified - copied)


def _drop(pg_url: str, schema: str) -> None:
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    except psycopg.Error as exc:
        raise MigrationError(
            f"dry run: could not drop the scratch schema {schema!r}; drop it by hand: "
            f"{REDACTOR.scrub(str(exc)).strip()}"
        ) from exc
