"""The watch's journal events and what they add up to (pure): rounds done, alerts open.

A restarted daemon folds the journal into a ``WatchState``: the rounds already run (never run
again), the alerts raised, who acknowledged them and how far each was escalated. ``ack`` is
what ``changeover watch ack`` calls from any shell; the running daemon reads it from the journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changeover.errors import UsageError
from changeover.journal import Journal
from changeover.journal.events import Event

STARTED = "watch.started"
ROUND = "watch.round"
ALERT = "watch.alert"
ACK = "watch.ack"
ESCALATED = "watch.escalated"
STOPPED = "watch.stopped"
KINDS = (STARTED, ROUND, ALERT, ACK, ESCALATED, STOPPED)


@dataclass
class Alert:
    """A failed round waiting for a person: who was told (in order) and who acknowledged it."""

    id: str
    due: str
    raised_at: datetime  # plan time (the daemon's clock), from which escalation is counted
    roles: list[str]  # the roles notified so far, first one at raise time
    failed: list[str]
    acked_by: str | None = None

    @property
    def level(self) -> int:
        return len(self.roles) - 1


@dataclass
class WatchState:
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # due (ISO) → round payload
    alerts: dict[str, Alert] = field(default_factory=dict)
    seq: int = 0

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> WatchState:
        state = cls()
        state.update(events)
        return state

    def update(self, events: Iterable[Event]) -> WatchState:
        for event in events:
            self.seq = max(self.seq, event.seq)
            payload = event.payload
            if event.kind == ROUND:
                self.done[payload["due"]] = payload
            elif event.kind == ALERT:
                self.alerts[payload["alert"]] = Alert(
                    id=payload["alert"],
                    due=payload["due"],
                    raised_at=datetime.fromisoformat(payload["raised_at"]),
                    roles=[payload["role"]] if payload.get("role") else [],
                    failed=list(payload.get("failed", [])),
                )
            elif event.kind == ESCALATED and payload.get("alert") in self.alerts:
                self.alerts[payload["alert"]].roles.append(payload["role"])
            elif event.kind == ACK and payload.get("alert") in self.alerts:
                self.alerts[payload["alert"]].acked_by = payload.get("by") or event.actor
        return self

    @property
    def last_done(self) -> datetime | None:
        if not self.done:
            return None
        return max(datetime.fromisoformat(due) for due in self.done)

    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.acked_by is None]


def ack(journal: Journal, alert_id: str, *, by: str, note: str | None = None) -> Event:
    """Journal that ``by`` took on an alert: the daemon escalates it no further."""
    if not by.strip():
        raise UsageError("--by needs the name of the person acknowledging the alert")
    state = WatchState.from_events(journal.events(kinds=[ALERT, ACK, ESCALATED]))
    alert = state.alerts.get(alert_id)
    if alert is None:
        open_ids = ", ".join(a.id for a in state.open_alerts()) or "none"
        raise UsageError(f"no watch alert {alert_id!r} in the journal (open alerts: {open_ids})")
    if alert.acked_by is not None:
        raise UsageError(f"alert {alert_id} was already acknowledged by {alert.acked_by}")
    payload: dict[str, Any] = {"alert": alert_id, "by": by}
    if note:
        payload["note"] = note
    return journal.append(ACK, payload, actor=by)
