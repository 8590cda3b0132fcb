"""What the rollout controller reads about a running system: observations of named metrics.

An ``Observation`` is read *now*; counters are cumulative (since the source started), so the
controller takes differences between two readings for any window it cares about, and a restart
of the controller loses nothing. A metric a source cannot read comes back with ``unavailable``
set to a plain reason — never a guess — and the gate using it stays undecided.

Metric names are the plan's gate metrics (``Gate.metric``): error_rate, latency_p95,
cache_hit_rate, memory_leak, db_connections, … Each source says which it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Observation:
    metric: str
    of: str | None  # the system the metric is about (legacy, new), None when system-wide
    at: float  # wall-clock seconds when read
    events: int | None = None  # cumulative count of "bad" events (errors, slow, 401/403, ...)
    total: int | None = None  # cumulative count of trials the events are out of
    value: float | None = None  # a gauge: MB of memory, CPU %, lag seconds, hit rate 0..1, ...
    # cumulative latency histogram: (upper bound in seconds, count of samples <= bound), +inf last
    histogram: tuple[tuple[float, int], ...] | None = None
    unit: str | None = None
    unavailable: str | None = None  # why this could not be read; every other field is None
    # what the number alone does not say, shown as a verdict's evidence: the statements behind
    # a queries-per-request figure, who holds the connections, ...
    detail: str | None = None

    @classmethod
    def missing(cls, metric: str, of: str | None, at: float, reason: str) -> Observation:
        return cls(metric, of, at, unavailable=reason)


class MetricSource(Protocol):
    """Reads metrics of one kind of system (the built-in proxy, Prometheus, PostgreSQL, ...)."""

    name: str

    def serves(self, metric: str) -> bool:
        """Whether this source can read ``metric`` at all."""
        ...

    async def read(self, metric: str, of: str | None) -> Observation:
        """The metric now; failures come back as ``Observation.missing`` with a reason."""
        ...

    async def close(self) -> None: ...
