"""The data migration's sync lag as a check: the seed's "Database replication lag < 100ms".

``migrate.sync_lag`` reads the changelog (SQLite before the handoff, PostgreSQL after) and the
applied position, now — it does not trust a number the applier wrote, so a stopped ``migrate
sync`` shows as growing lag, not as the last good value.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import Field

from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    SystemParams,
    Unreachable,
)
from changeover.secrets import REDACTOR
from changeover.units import Duration, parse_duration


class SyncLagParams(SystemParams):
    source: str = Field(description="The legacy SQLite file (relative to the plan), e.g. app.db.")
    schema_: str = Field(
        default="public", alias="schema", description="Target schema the copy wrote into."
    )
    max_lag: Duration = Field(
        default=parse_duration("100ms"),
        description="Largest acceptable age of the oldest change not yet applied.",
    )
    max_rows: int | None = Field(
        default=None, ge=0, description="Largest acceptable number of changes not yet applied."
    )


@dataclass(frozen=True)
class SyncLag:
    direction: str  # forward (SQLite → PostgreSQL) or reverse
    rows: int
    seconds: float
    position: int


class SyncLagProbe(Probe[SyncLagParams, SyncLag]):
    """Age and count of captured changes not yet applied, in the current direction."""

    name = "migrate.sync_lag"
    summary = "the migration's live sync is caught up (lag in time and rows)"
    Params = SyncLagParams
    system_kinds = ("postgres",)

    async def gather(self, params: SyncLagParams, ctx: ProbeContext) -> SyncLag:
        system = ctx.system(params.system, self.system_kinds)
        url = ctx.secret(system.url, what=f"systems.{params.system}.url")
        path = ctx.path(params.source)
        return await asyncio.to_thread(_read, path, url, params.schema_)

    def interpret(self, params: SyncLagParams, raw: SyncLag) -> CheckResult:
        limit_ms = params.max_lag.total_seconds() * 1000
        evidence = [
            Measure(
                "sync_lag_ms",
                round(raw.seconds * 1000, 1),
                expected=f"<= {limit_ms:g}",
                ok=raw.seconds * 1000 <= limit_ms,
                unit="ms",
            ),
            Measure(
                "pending_changes",
                raw.rows,
                expected=None if params.max_rows is None else f"<= {params.max_rows}",
                ok=None if params.max_rows is None else raw.rows <= params.max_rows,
            ),
        ]
        return CheckResult.judge(
            evidence,
            passed=f"{raw.direction} sync caught up to {raw.rows} pending changes",
            details={"direction": raw.direction, "position": raw.position},
        )


def _read(path: Path, url: str, schema: str) -> SyncLag:
    from changeover.errors import UsageError
    from changeover.migrate.apply import pending_forward
    from changeover.migrate.copy import MigrationError
    from changeover.migrate.handoff import read_handoff
    from changeover.migrate.reverse import read_reverse_lag
    from changeover.migrate.schema import quote

    try:
        owner = read_handoff(url, schema).owner
        if owner == "legacy":
            lag = pending_forward(path, url, schema)
            if lag is None:
                raise Unreachable(
                    f"no change capture in {path}: run 'changeover migrate copy --capture'"
                )
            return SyncLag("forward", lag.rows, lag.seconds, lag.position)
        with psycopg.connect(url) as pg:
            pg.execute(f"SET search_path TO {quote(schema)}")
            lag = read_reverse_lag(path, pg)
        return SyncLag("reverse", lag.rows, lag.seconds, lag.position)
    except (MigrationError, UsageError) as exc:
        raise Unreachable(str(exc)) from exc
    except psycopg.Error as exc:
        raise Unreachable(f"PostgreSQL: {REDACTOR.scrub(str(exc)).strip()}") from exc
