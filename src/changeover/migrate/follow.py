"""``migrate sync``: keep applying changes in whichever direction the write owner dictates.

While legacy owns writes, the forward applier runs (SQLite → PostgreSQL); after the handoff the
reverse applier (PostgreSQL → SQLite); the owner is re-read every second, so one long-running
process follows the handoff both ways. Lag is reported to a callback (and, from the CLI, as
Prometheus gauges) for the controller's "replication lag < 100ms" gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from changeover.migrate.apply import ForwardApplier, Lag
from changeover.migrate.copy import MigrationError
from changeover.migrate.handoff import Owner, read_handoff
from changeover.migrate.reverse import ReverseApplier
from changeover.migrate.schema import PgPlan


@dataclass(frozen=True)
class SyncStatus:
    direction: str  # forward | reverse
    lag: Lag
    applied: int  # entries applied by this process so far


def follow(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    stop: threading.Event,
    *,
    schema: str = "public",
    report: Callable[[SyncStatus], None] | None = None,
    report_every: float = 1.0,
    idle: float = 0.01,
    once: bool = False,
) -> int:
    """Apply until ``stop`` is set (or, with ``once``, until caught up); returns entries applied."""
    applied = 0
    while not stop.is_set():
        owner: Owner = read_handoff(pg_url, schema).owner
        direction = "forward" if owner == "legacy" else "reverse"
        applier: ForwardApplier | ReverseApplier = (
            ForwardApplier(sqlite_path, pg_url, plan, schema=schema)
            if direction == "forward"
            else ReverseApplier(sqlite_path, pg_url, plan, schema=schema)
        )
        with applier:
            checked = reported = time.monotonic()
            while not stop.is_set():
                try:
                    done = applier.apply_batch().entries
                except MigrationError:
                    # A handoff swaps capture while it holds writes (the reverse changelog is
                    # dropped on the way back): expected then, so wait and follow the new owner.
                    state = read_handoff(pg_url, schema)
                    if state.owner == owner and state.phase != "holding":
                        raise
                    stop.wait(0.05)
                    break
                applied += done
                now = time.monotonic()
                if report is not None and (now - reported >= report_every or (once and not done)):
                    report(SyncStatus(direction, applier.lag(), applied))
                    reported = now
                if done == 0:
                    if once:
                        return applied
                    if isinstance(applier, ForwardApplier):
                        applier.trim()
                    stop.wait(idle)
                if now - checked >= 1.0:
                    checked = now
                    if read_handoff(pg_url, schema).owner != owner:
                        break  # a handoff happened: switch appliers
    return applied
