"""The data migration's live sync lag as a metric: age of the oldest change not yet applied.

Reads what the ``migrate.sync_lag`` probe reads (``changeover.probes.migration._read``): the
SQLite changelog and the applied position before the handoff, the reverse log after it. The
value is the lag in seconds; ``events`` is the number of changes still waiting (a current
count, not a cumulative one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation
from changeover.probes.base import Unreachable
from changeover.probes.migration import _read

SERVED = frozenset({"sync_lag"})


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
        try:
            lag = await asyncio.to_thread(_read, self._path, self._url, self._schema)
        except Unreachable as exc:  # _read turns every foreseeable failure into this
            return missing(metric, of, str(exc))
        except OSError as exc:
            return missing(metric, of, f"cannot read {self._path}: {exc.strerror or exc}")
        unit = f"s ({lag.direction}; events = changes waiting)"
        return Observation(metric, of, wall_clock(), events=lag.rows, value=lag.seconds, unit=unit)

    async def close(self) -> None:
        return None
