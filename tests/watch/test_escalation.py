"""The daemon tick by tick: an injected clock that jumps to each wake-up, an injected suite and a
recording sender — escalation through several roles, across a restart, and failures that must
not stop the loop. The real journal underneath; no sleeps, no servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from changeover.engine.check import ProbeOutcome, StepOutcome
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError, JournalError
from changeover.notify.message import Notification
from changeover.notify.notifier import Delivery
from changeover.probes.base import CheckResult
from changeover.watch.daemon import WatchDaemon, WatchResult
from changeover.watch.schedule import Schedule, watch_settings
from changeover.watch.state import ack

ANCHOR = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class JumpingClock:
    """Plan time that jumps straight to whatever the daemon waits for."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def seconds_until(self, moment: datetime) -> float:
        self.current = max(self.current, moment)
        return 0.0


class Sender:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Notification] = []
        self.fail = fail

    async def send(self, notification: Notification) -> list[Delivery]:
        self.sent.append(notification)
        if self.fail:
            raise JournalError("the journal is full")
        return []


def write_plan(tmp_path: Path, watch: str) -> Path:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        f"""\
version: 1
name: t
cutover_at: {ANCHOR.isoformat()}
contacts:
  - {{role: on-call, title: On-Call, name: Olga}}
  - {{role: backend-lead, title: Backend Lead, name: Bo}}
  - {{role: escalation, title: Escalation, name: Manager}}
systems:
  new: {{kind: app, url: "http://127.0.0.1:9"}}
stages:
  - id: post
    title: Post
    sections:
      - title: S
        steps:
          - {{id: w, title: W, action: {{watch: {watch}}}}}
          - {{id: feature, title: F, check: {{http: {{system: new, path: /f}}}}}}
""",
        encoding="utf-8",
    )
    return plan


def failing_suite(runbook: Runbook) -> object:
    step = runbook.plan.step("feature")

    def check(stages: Sequence[str]) -> list[StepOutcome]:
        outcome = ProbeOutcome("http", True, CheckResult.fail("answered 500, expected 200"))
        return [StepOutcome("post", step, (outcome,))]

    return check


def daemon(runbook: Runbook, clock: JumpingClock, sender: Sender, check: object) -> WatchDaemon:
    settings = watch_settings(runbook.plan)
    schedule = Schedule(settings.rules, ANCHOR)
    return WatchDaemon(runbook, settings, schedule, clock, sender, check=check)  # type: ignore[arg-type]


def kinds(runbook: Runbook, kind: str) -> list[dict[str, object]]:
    return [e.payload for e in runbook.journal.events(kinds=[kind])]


def test_an_unacknowledged_alert_climbs_every_role_one_delay_apart(tmp_path: Path) -> None:
    watch = (
        "{every: 1h, until: 1h, escalate_after: 20m, alert: [on-call, backend-lead, escalation]}"
    )
    with Runbook.open(write_plan(tmp_path, watch)) as runbook:
        sender = Sender()
        result = asyncio.run(
            daemon(runbook, JumpingClock(ANCHOR), sender, failing_suite(runbook)).run()
        )
        assert isinstance(result, WatchResult) and result.finished and result.failed
        escalated = kinds(runbook, "watch.escalated")
        assert [(e["role"], e["after"]) for e in escalated] == [
            ("backend-lead", "20m"),
            ("escalation", "40m"),
        ]
        assert [e["at"] for e in escalated] == [
            (ANCHOR + timedelta(minutes=20)).isoformat(),
            (ANCHOR + timedelta(minutes=40)).isoformat(),
        ]
    assert [n.evidence["role"] for n in sender.sent] == ["on-call", "backend-lead", "escalation"]
    assert "For: Backend Lead (Bo)" in sender.sent[1].body
    assert all(n.level == "failure" for n in sender.sent)


def test_a_restarted_daemon_escalates_an_alert_raised_before_it_once(tmp_path: Path) -> None:
    watch = "{every: 1h, until: 1h, escalate_after: 30m}"
    with Runbook.open(write_plan(tmp_path, watch)) as runbook:
        first = daemon(runbook, JumpingClock(ANCHOR), Sender(), failing_suite(runbook))
        asyncio.run(first.run(once=True))  # the round fails; the alert is open
        assert len(kinds(runbook, "watch.alert")) == 1
        assert kinds(runbook, "watch.escalated") == []

        sender = Sender()
        later = JumpingClock(ANCHOR + timedelta(minutes=10))
        result = asyncio.run(daemon(runbook, later, sender, failing_suite(runbook)).run())
        assert result.rounds == []  # the round was done: not run again
        assert [e["role"] for e in kinds(runbook, "watch.escalated")] == ["escalation"]
        assert later.now() == ANCHOR + timedelta(minutes=30)
        again = asyncio.run(daemon(runbook, later, sender, failing_suite(runbook)).run())
        assert again.escalations == [] and len(kinds(runbook, "watch.escalated")) == 1


def test_an_acknowledged_alert_is_not_escalated(tmp_path: Path) -> None:
    watch = "{every: 1h, until: 1h, escalate_after: 30m}"
    with Runbook.open(write_plan(tmp_path, watch)) as runbook:
        asyncio.run(
            daemon(runbook, JumpingClock(ANCHOR), Sender(), failing_suite(runbook)).run(once=True)
        )
        alert = kinds(runbook, "watch.alert")[0]["alert"]
        ack(runbook.journal, str(alert), by="olga")
        result = asyncio.run(
            daemon(runbook, JumpingClock(ANCHOR), Sender(), failing_suite(runbook)).run()
        )
        assert result.escalations == [] and kinds(runbook, "watch.escalated") == []


def test_a_suite_that_cannot_run_is_a_failed_round_and_an_alert(tmp_path: Path) -> None:
    def broken(stages: Sequence[str]) -> list[StepOutcome]:
        raise ChangeoverError("the plan's stage post has no checks left")

    with Runbook.open(write_plan(tmp_path, "{every: 1h, until: 2h}")) as runbook:
        sender = Sender(fail=True)  # and the notification fails too: the loop goes on
        result = asyncio.run(daemon(runbook, JumpingClock(ANCHOR), sender, broken).run())
        rounds = kinds(runbook, "watch.round")
        assert [r["error"] for r in rounds] == ["the plan's stage post has no checks left"] * 2
        assert len(kinds(runbook, "watch.alert")) == 2
        assert result.finished and len(result.rounds) == 2 and result.failed
    assert len(sender.sent) >= 2


def test_stop_ends_the_loop_before_the_next_round(tmp_path: Path) -> None:
    with Runbook.open(write_plan(tmp_path, "{every: 1h}")) as runbook:  # endless
        calls: list[int] = []

        def suite(stages: Sequence[str]) -> list[StepOutcome]:
            calls.append(1)
            if len(calls) == 3:
                watcher.stop("SIGTERM")
            return []

        watcher = daemon(runbook, JumpingClock(ANCHOR), Sender(), suite)
        result = asyncio.run(watcher.run())
        assert len(calls) == 3 and result.stopped == "SIGTERM" and not result.finished
        assert result.next_due == (ANCHOR + 3 * HOUR).isoformat()
        assert kinds(runbook, "watch.stopped") == [
            {"reason": "SIGTERM", "next_due": (ANCHOR + 3 * HOUR).isoformat()}
        ]


def test_real_time_runs_the_newest_round_due_and_compressed_time_catches_up_each(
    tmp_path: Path,
) -> None:
    def healthy(stages: Sequence[str]) -> list[StepOutcome]:
        return []

    with Runbook.open(write_plan(tmp_path, "{every: 1h, until: 4h}")) as runbook:
        settings = watch_settings(runbook.plan)
        schedule = Schedule(settings.rules, ANCHOR)
        late = JumpingClock(ANCHOR + 2 * HOUR + timedelta(minutes=5))
        real = WatchDaemon(runbook, settings, schedule, late, Sender(), check=healthy)
        asyncio.run(real.run(once=True))
        rounds = kinds(runbook, "watch.round")
        assert [(r["due"], r["missed"]) for r in rounds] == [
            ((ANCHOR + 2 * HOUR).isoformat(), [ANCHOR.isoformat(), (ANCHOR + HOUR).isoformat()])
        ]
    (tmp_path / "c").mkdir()
    with Runbook.open(write_plan(tmp_path / "c", "{every: 1h, until: 4h}")) as runbook:
        late = JumpingClock(ANCHOR + 2 * HOUR + timedelta(minutes=5))
        compressed = WatchDaemon(
            runbook, settings, schedule, late, Sender(), check=healthy, catch_up=True
        )
        asyncio.run(compressed.run())
        rounds = kinds(runbook, "watch.round")
        assert [r["due"] for r in rounds] == [(ANCHOR + h * HOUR).isoformat() for h in range(4)]
        assert all(r["missed"] == [] for r in rounds)
