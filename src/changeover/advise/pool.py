"""How big each instance's connection pool should be, from what the cutover observed.

Two estimates of the connections in use at once: the peak of active connections sampled from
``pg_stat_activity``, and Little's law over the traffic (L = λ × W: requests/s × seconds per
request — the requests in flight, each holding at most one connection). The larger one, with
headroom, is split across the instances and capped by the server's ``max_connections``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

HEADROOM = 1.5  # bursts above the observed peak, and one instance down during a deploy
MIN_POOL = 2
# superuser_reserved_connections' default plus room for psql and the monitoring.
RESERVED_CONNECTIONS = 5


@dataclass(frozen=True)
class Traffic:
    """The busiest moment of the cutover's samples: requests/s and p95 latency (seconds)."""

    rps: float
    latency_s: float
    source: str


@dataclass(frozen=True)
class PoolAdvice:
    peak_active: int
    littles_law: float | None
    formula: str
    per_instance: int
    instances: int
    total: int
    max_connections: int
    advice: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recommend_pool(
    peak_active: int,
    traffic: Traffic | None,
    *,
    instances: int,
    max_connections: int,
    headroom: float = HEADROOM,
) -> PoolAdvice:
    """The pool size per instance (the formula is part of the result, for the operator)."""
    instances = max(1, instances)
    littles = traffic.rps * traffic.latency_s if traffic is not None else None
    needed = max(float(peak_active), littles or 0.0)
    per_instance = max(MIN_POOL, math.ceil(needed * headroom / instances))
    usable = max(1, max_connections - RESERVED_CONNECTIONS)
    formula = f"peak active connections observed = {peak_active}"
    if traffic is not None and littles is not None:
        formula += (
            f"; Little's law L = λ × W = {traffic.rps:g} req/s × {traffic.latency_s:g} s "
            f"= {littles:.1f} in flight ({traffic.source})"
        )
    formula += (
        f"; pool per instance = ceil(max({peak_active}, {littles or 0:.1f}) × {headroom:g} / "
        f"{instances}) = {per_instance}"
    )
    capped = per_instance * instances > usable
    if capped:
        per_instance = max(1, usable // instances)
        advice = (
            f"{instances} instances × the wanted pool exceed max_connections {max_connections} "
            f"(less {RESERVED_CONNECTIONS} reserved): use a pool of {per_instance} per instance "
            "and put PgBouncer in front, or raise max_connections"
        )
    else:
        advice = (
            f"a pool of {per_instance} per instance ({per_instance * instances} connections "
            f"for {instances} instance{'s' if instances != 1 else ''}, of {max_connections} "
            "max_connections)"
        )
    return PoolAdvice(
        peak_active=peak_active,
        littles_law=None if littles is None else round(littles, 3),
        formula=formula,
        per_instance=per_instance,
        instances=instances,
        total=per_instance * instances,
        max_connections=max_connections,
        advice=advice,
    )


def busiest_sample(samples: Iterable[Mapping[str, Any]]) -> Traffic | None:
    """The ``rollout.sample`` payload with the most requests/s over all backends, as Traffic
    (latency: the backends' p95 weighted by their requests/s); None without usable samples."""
    best: Traffic | None = None
    for payload in samples:
        backends = payload.get("backends") or {}
        rps = 0.0
        weighted = 0.0
        for numbers in backends.values():
            backend_rps, p95 = numbers.get("rps"), numbers.get("p95_ms")
            if not isinstance(backend_rps, int | float) or not isinstance(p95, int | float):
                continue
            rps += backend_rps
            weighted += backend_rps * p95 / 1000
        if rps > 0 and (best is None or rps > best.rps):
            phase = payload.get("phase", "?")
            best = Traffic(
                round(rps, 3), round(weighted / rps, 4), f"busiest sample, phase {phase}"
            )
    return best
