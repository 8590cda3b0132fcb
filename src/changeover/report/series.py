"""The report's charts as data (pure): per-backend requests/s, error rate and p50/p95/p99 over
the night from the ``rollout.sample`` events, with phase boundaries and rollback marks.

x is seconds since the first phase started (or the first sample); a missing number leaves a
gap in its line rather than a zero. ``svg.py`` draws these; the JSON report carries them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changeover.report.timeline import Sample, Timeline

Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    name: str
    points: list[Point]


@dataclass(frozen=True)
class Mark:
    x: float
    label: str
    kind: str  # phase | rollback | restart


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    series: list[Series]
    marks: list[Mark] = field(default_factory=list)
    steps: bool = False  # a setting that holds until changed (weights): drawn as steps

    @property
    def empty(self) -> bool:
        return not any(y is not None for s in self.series for _, y in s.points)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "series": [
                {"name": s.name, "points": [list(p) for p in s.points]} for s in self.series
            ],
            "marks": [{"x": m.x, "label": m.label, "kind": m.kind} for m in self.marks],
            "steps": self.steps,
        }


def backends(samples: list[Sample]) -> list[str]:
    """The backends the samples name: legacy first, then new, then any other."""
    names: list[str] = []
    for sample in samples:
        for name in sample.backends:
            if name not in names:
                names.append(name)
    order = {"legacy": 0, "new": 1}
    return sorted(names, key=lambda n: (order.get(n, 2), names.index(n)))


def origin(timeline: Timeline) -> datetime | None:
    starts = [p.started_at for p in timeline.phases] + [s.at for s in timeline.samples[:1]]
    return min(starts) if starts else None


def charts(timeline: Timeline) -> list[Chart]:
    """Traffic share, requests/s, error rate and each backend's latency; [] without samples."""
    samples = timeline.samples
    start = origin(timeline)
    if not samples or start is None:
        return []

    def x(at: datetime) -> float:
        return round((at - start).total_seconds(), 3)

    marks = [Mark(x(p.started_at), f"{p.phase} {_pct(p.weight)}", "phase") for p in timeline.phases]
    marks += [Mark(x(r.started_at), f"rollback ({r.mode})", "rollback") for r in timeline.rollbacks]
    names = backends(samples)

    def line(name: str, backend: str, key: str, scale: float = 1.0) -> Series:
        points: list[Point] = []
        for sample in samples:
            value = sample.backends.get(backend, {}).get(key)
            number = value * scale if isinstance(value, int | float) else None
            points.append((x(sample.at), None if number is None else round(number, 4)))
        return Series(name, points)

    # The weights from the route changes themselves: a sample only sees the weight at its end.
    routes = [
        (x(a.at), a.weight)
        for a in timeline.actions
        if a.action == "route" and a.ok and a.weight is not None
    ]
    end = max(x(samples[-1].at), routes[-1][0] if routes else 0.0)
    share = Series("new app", [*routes, (end, routes[-1][1])] if routes else [])
    out = [
        Chart("weights", "Share of traffic to the new app", "%", [share], marks, steps=True),
        Chart("rps", "Requests per second", "req/s", [line(b, b, "rps") for b in names], marks),
        Chart(
            "errors",
            "Error rate (5xx and unanswered)",
            "%",
            [line(b, b, "error_rate", 100.0) for b in names],
            marks,
        ),
    ]
    for backend in names:
        out.append(
            Chart(
                f"latency-{backend}",
                f"Latency of {backend}",
                "ms",
                [line(q, backend, f"{q}_ms") for q in ("p50", "p95", "p99")],
                marks,
            )
        )
    return out


def _pct(weight: float | None) -> str:
    return f"{weight:g}%" if weight is not None else ""
