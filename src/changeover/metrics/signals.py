"""Signals people and outside systems raise: "security breach", "bugs in critical features".

Some rollback triggers are not measured: a SIEM sees an intrusion, support sees a broken
checkout. ``changeover signal security_breach --reason ... --by ...`` journals the signal; this
source counts the journal's signals per metric (and system) as cumulative events, so a gate on
the metric fires exactly like a measured one — with the reason and who raised it as evidence —
and the rollback mode (immediate or graceful) stays the plan's decision, not the caller's.
"""

from __future__ import annotations

from changeover.journal.store import Journal
from changeover.metrics._common import missing, wall_clock
from changeover.metrics.base import Observation

SIGNAL = "signal.raised"
SIGNALLED = frozenset({"security_breach", "critical_features"})


class SignalSource:
    """Signals journaled by ``changeover signal``; reads only events newer than its last look."""

    name = "signals"

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._seq = 0
        self._counts: dict[tuple[str, str | None], int] = {}
        self._last: dict[str, str] = {}  # metric → "reason (by whom)" of its newest signal

    def serves(self, metric: str) -> bool:
        return metric in SIGNALLED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SIGNALLED:
            return missing(metric, of, f"no signal is raised for {metric!r}")
        head = self._journal.head().seq  # read first: nothing appended meanwhile is skipped
        for event in self._journal.events(since_seq=self._seq, kinds=[SIGNAL]):
            head = max(head, event.seq)
            key = (str(event.payload.get("metric")), event.payload.get("of"))
            self._counts[key] = self._counts.get(key, 0) + 1
            self._last[key[0]] = f"{event.payload.get('reason', '')} (by {event.actor})"
        self._seq = head
        # A signal about no system in particular counts against every system.
        count = self._counts.get((metric, of), 0) + (
            self._counts.get((metric, None), 0) if of is not None else 0
        )
        unit = "signals raised"
        if count and metric in self._last:
            unit += f"; latest: {self._last[metric]}"
        return Observation(metric, of, wall_clock(), events=count, total=count, unit=unit)

    async def close(self) -> None:
        return None


def raise_signal(journal: Journal, metric: str, of: str | None, reason: str, by: str) -> None:
    """Journal a signal; the running controller's gate on ``metric`` sees it at its next look."""
    journal.append(SIGNAL, {"metric": metric, "of": of, "reason": reason}, actor=by)
