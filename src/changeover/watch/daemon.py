"""The watch daemon: run the post-cutover suite at each due time, alert, escalate, resume.

A foreground loop (systemd ``Type=simple``): at each due round it runs the suite's checks
through ``Runbook.check``, journals ``watch.round`` and, when a required step failed, raises a
``watch.alert`` to the first alert role. An alert nobody acknowledges (``changeover watch ack``)
within ``escalate_after`` goes to the next role, and so on. On restart the journal says which
rounds are done: the daemon runs only the newest round due (naming the ones it missed) and never
repeats one (with ``catch_up``, for compressed time, it runs each due round in turn instead).
``stop()`` (SIGTERM) ends it between rounds; a round in progress is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from changeover.engine.check import StepOutcome
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.notify.message import Notification
from changeover.notify.notifier import Delivery
from changeover.rollout.state import DONE
from changeover.units import format_duration
from changeover.watch.schedule import Schedule, WatchSettings
from changeover.watch.state import (
    ALERT,
    ESCALATED,
    KINDS,
    ROUND,
    STARTED,
    STOPPED,
    Alert,
    WatchState,
)

Check = Callable[[Sequence[str]], Sequence[StepOutcome]]  # stage ids → outcomes
Log = Callable[[str], None]


class Clock(Protocol):
    def now(self) -> datetime: ...

    def seconds_until(self, moment: datetime) -> float: ...


class Sender(Protocol):
    async def send(self, notification: Notification) -> list[Delivery]: ...


@dataclass
class WatchResult:
    rounds: list[dict[str, Any]] = field(default_factory=list)  # the rounds run this time
    alerts: list[str] = field(default_factory=list)
    escalations: list[dict[str, str]] = field(default_factory=list)
    finished: bool = False  # the schedule has no round left
    stopped: str | None = None  # why it stopped early (signal), if it did
    next_due: str | None = None

    @property
    def failed(self) -> bool:
        return any(not r["ok"] for r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "alerts": self.alerts,
            "escalations": self.escalations,
            "finished": self.finished,
            "stopped": self.stopped,
            "next_due": self.next_due,
        }


def cutover_anchor(runbook: Runbook) -> tuple[datetime, str]:
    """When the schedule starts: the journaled end of the rollout, else the plan's cutover_at."""
    done = runbook.journal.latest(DONE)
    if done is not None:
        return done.time, "rollout.done"
    return runbook.plan.cutover_at, "cutover_at"


class WatchDaemon:
    def __init__(
        self,
        runbook: Runbook,
        settings: WatchSettings,
        schedule: Schedule,
        clock: Clock,
        notifier: Sender,
        *,
        check: Check | None = None,
        log: Log | None = None,
        catch_up: bool = False,
    ) -> None:
        self.runbook = runbook
        self.journal = runbook.journal
        self.settings = settings
        self.schedule = schedule
        self.clock = clock
        self.notifier = notifier
        self._check = check or (lambda stages: runbook.check(stage_ids=stages))
        self._log = log or (lambda line: None)
        # In compressed time a slow round overruns the next one; running each in turn keeps a
        # demo's schedule whole. In real time only the newest round due is worth running.
        self.catch_up = catch_up
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self.state = WatchState.from_events(self.journal.events(kinds=KINDS))

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to end after the current round (a signal handler calls this)."""
        self._stop_reason = reason
        self._stop.set()

    async def run(self, *, once: bool = False) -> WatchResult:
        result = WatchResult()
        now = self.clock.now()
        self.journal.append(
            STARTED,
            {
                "anchor": _iso(self.schedule.anchor),
                "stages": list(self.settings.stages),
                "rules": [rule.describe() for rule in self.schedule.rules],
                "alert_roles": list(self.settings.alert_roles),
                "escalate_after": format_duration(self.settings.escalate_after),
                "rounds_done": len(self.state.done),
                "now": _iso(now),
            },
        )
        while True:
            self._refresh()
            await self._escalate_due(result)
            due = self._due_round()
            if due is not None:
                await self._round(due, result)
                if once:
                    break
                continue
            wake = self._next_wake()
            if once or wake is None or self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):  # woken by the clock, not by stop()
                await asyncio.wait_for(self._stop.wait(), self.clock.seconds_until(wake))
        next_due = self.schedule.next_due(self.clock.now())
        result.next_due = _iso(next_due) if next_due else None
        result.finished = next_due is None
        result.stopped = self._stop_reason
        if self._stop_reason:
            self.journal.append(STOPPED, {"reason": self._stop_reason, "next_due": result.next_due})
        return result

    # -- the loop's steps --

    def _refresh(self) -> None:
        """Read what other shells journaled since (acknowledgements)."""
        self.state.update(self.journal.events(since_seq=self.state.seq, kinds=KINDS))

    def _due_round(self) -> datetime | None:
        if self._stop.is_set():
            return None
        now, last = self.clock.now(), self.state.last_done
        if self.catch_up:
            following = next(self.schedule.times(after=last), None)
            return following if following is not None and following <= now else None
        latest = self.schedule.latest_due(now)
        if latest is None or (last is not None and latest <= last):
            return None
        return latest

    def _next_wake(self) -> datetime | None:
        """The next moment something is due: a round or an escalation."""
        moments = [self._escalation_at(a) for a in self._escalatable()]
        next_due = self.schedule.next_due(self.clock.now())
        if next_due is not None:
            moments.append(next_due)
        return min(moments) if moments else None

    def _escalatable(self) -> list[Alert]:
        roles = self.settings.alert_roles
        return [a for a in self.state.open_alerts() if len(a.roles) < len(roles)]

    def _escalation_at(self, alert: Alert) -> datetime:
        return alert.raised_at + self.settings.escalate_after * max(1, len(alert.roles))

    async def _round(self, due: datetime, result: WatchResult) -> None:
        missed = self.schedule.between(self.state.last_done, due)
        started = self.clock.now()
        rule = self.schedule.rule_for(due)
        self._log(f"round due {_iso(due)} ({rule.step_id if rule else 'watch'}): running checks")
        try:
            outcomes = await asyncio.to_thread(self._check, self.settings.stages)
            summary = summarise(outcomes)
        except ChangeoverError as exc:
            summary = {"steps": 0, "passed": 0, "warned": 0, "failed": [], "error": str(exc)}
        failed = [f["step"] for f in summary["failed"]]
        payload = {
            "due": _iso(due),
            "started": _iso(started),
            "step": rule.step_id if rule else None,
            "offset": format_duration(due - self.schedule.anchor),
            "missed": [_iso(m) for m in missed],
            **summary,
        }
        event = self.journal.append(ROUND, payload)
        self.state.update([event])
        result.rounds.append({**payload, "ok": not failed and not summary.get("error")})
        verdict = "FAILED " + ", ".join(failed) if failed else "all passed"
        if summary.get("error"):
            verdict = f"could not run: {summary['error']}"
        steps = summary["steps"]
        self._log(f"round due {_iso(due)}: {steps} step{'' if steps == 1 else 's'}, {verdict}")
        if failed or summary.get("error"):
            await self._raise_alert(due, summary, result)

    async def _raise_alert(
        self, due: datetime, summary: dict[str, Any], result: WatchResult
    ) -> None:
        alert_id = uuid.uuid4().hex[:8]
        role = self.settings.alert_roles[0] if self.settings.alert_roles else None
        failed = [f["step"] for f in summary["failed"]]
        payload = {
            "alert": alert_id,
            "due": _iso(due),
            "raised_at": _iso(self.clock.now()),
            "role": role,
            "failed": failed,
        }
        event = self.journal.append(ALERT, payload)
        self.state.update([event])
        result.alerts.append(alert_id)
        lines = [f"{f['step']}: {f['reason']}" for f in summary["failed"]]
        if summary.get("error"):
            lines.append(f"the checks could not run: {summary['error']}")
        title = f"Post-cutover watch: round {_iso(due)} failed ({len(lines)} problem(s))"
        self._log(f"alert {alert_id} raised for {role or 'the channels'}: {', '.join(failed)}")
        await self._notify(alert_id, role, title, lines, level=0)

    async def _escalate_due(self, result: WatchResult) -> None:
        now = self.clock.now()
        for alert in self._escalatable():
            if self._escalation_at(alert) > now:
                continue
            role = self.settings.alert_roles[len(alert.roles)]
            waited = format_duration(self._escalation_at(alert) - alert.raised_at)
            event = self.journal.append(
                ESCALATED,
                {"alert": alert.id, "role": role, "after": waited, "at": _iso(now)},
            )
            self.state.update([event])
            result.escalations.append({"alert": alert.id, "role": role})
            title = f"ESCALATED: watch alert {alert.id} not acknowledged after {waited}"
            lines = [f"round {alert.due} failed: {', '.join(alert.failed) or 'see the journal'}"]
            self._log(f"alert {alert.id}: no acknowledgement after {waited}, escalated to {role}")
            await self._notify(alert.id, role, title, lines, level=len(alert.roles) - 1)

    async def _notify(
        self, alert_id: str, role: str | None, title: str, lines: list[str], *, level: int
    ) -> None:
        contact = next((c for c in self.runbook.plan.contacts if c.role == role), None)
        whom = "everyone on the channel"
        if contact is not None:
            reach = ", ".join(x for x in (contact.phone, contact.slack, contact.email) if x)
            whom = f"{contact.title} ({contact.name}{', ' + reach if reach else ''})"
        body = "\n".join(
            [
                f"For: {whom}",
                *lines,
                f"Acknowledge: changeover watch ack {alert_id} --by YOUR-NAME",
            ]
        )
        # The notify kinds are the rollout's; an unacknowledged alert is a decision a person owes.
        notification = Notification(
            "decision_needed",
            title,
            body,
            evidence={"alert": alert_id, "role": role, "level": level},
            severity="failure",
        )
        try:
            await self.notifier.send(notification)
        except ChangeoverError as exc:  # the journal has the alert; the loop must go on
            self._log(f"could not send the notification for alert {alert_id}: {exc}")


def summarise(outcomes: Sequence[StepOutcome]) -> dict[str, Any]:
    """A round's results in a few numbers, with each failed required step and its reason."""
    failed = [
        {"step": o.step.id, "stage": o.stage_id, "status": o.status.value, "reason": o.reason}
        for o in outcomes
        if o.required and not o.status.ok
    ]
    return {
        "steps": len(outcomes),
        "passed": sum(1 for o in outcomes if o.status.value == "pass"),
        "warned": sum(1 for o in outcomes if o.status.value == "warn"),
        "failed": failed,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()
