"""The data migration as metrics: the live sync's lag, and what the last verify found.

``sync_lag`` reads what the ``migrate.sync_lag`` probe reads (``changeover.probes.migration.
_read``): the SQLite changelog and the applied position before the handoff, the reverse log
after it; the value is the lag in seconds, ``events`` the changes still waiting (a current
count, not a cumulative one). ``data_corruption`` (rows different or extra in PostgreSQL) and
``data_loss`` (rows missing from it) are gauges from the latest ``migrate verify`` run — the
seed's immediate rollback triggers "data corruption detected" and "data loss confirmed".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation
from changeover.probes.base import Unreachable
from changeover.probes.migration import _read

SERVED = frozenset({"sync_lag", "data_corruption", "data_loss"})


class SyncLagSource:
    """The sync between ``sqlite_path`` (legacy) and the PostgreSQL at ``pg_url`` (resolved)."""

    def __init__(
        self, sqlite_path: str | Path, pg_url: str, *, schema: str = "public", name: str = "sync"
    ) -> None:
        self.name = name
        self._path = Path(sqlite_path)
        self._url = pg_url
        self._schema = schema

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the sync source does not serve {metric!r}")
        if metric in ("data_corruption", "data_loss"):
            return await asyncio.to_thread(self._verified, metric, of)
        try:
            lag = await asyncio.to_thread(_read, self._path, self._url, self._schema)
        except Unreachable as exc:  # _read turns every foreseeable failure into this
            return missing(metric, of, str(exc))
        except OSError as exc:
            return missing(metric, of, f"cannot read {self._path}: {exc.strerror or exc}")
        unit = f"s ({lag.direction}; events = changes waiting)"
        return Observation(metric, of, wall_clock(), events=lag.rows, value=lag.seconds, unit=unit)

    def _verified(self, metric: str, of: str | None) -> Observation:
        from changeover.errors import ChangeoverError
        from changeover.migrate.verify import last_verify

        try:
            run = last_verify(self._url, self._schema)
        except ChangeoverError as exc:
            return missing(metric, of, str(exc))
        if run is None:
            return missing(metric, of, "no verify has run yet: changeover migrate verify")
        summary = run.summary
        if metric == "data_loss":
            rows = int(summary.get("missing", 0))
        else:
            rows = int(summary.get("different", 0)) + int(summary.get("extra", 0))
        unit = f" rows ({run.mode} verify at {run.finished_at:%H:%M:%S})"
        return Observation(metric, of, wall_clock(), value=float(rows), unit=unit)

    async def close(self) -> None:
        return None
