"""The journal projection: step states, sign-offs, and due/overdue against stage windows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from changeover.engine.state import State, Timing, project
from changeover.plan.model import Plan
from changeover.probes.base import REGISTRY, CheckResult, Probe, ProbeContext, ProbeParams

CUTOVER = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def always_pass_probe() -> Iterator[None]:
    """``engine-test.pass``, registered only while this module runs: the registry stays clean."""

    class AlwaysPass(Probe[ProbeParams, None]):
        """Passes; a stand-in so these tests need no server."""

        name = "engine-test.pass"
        summary = "always passes"
        Params = ProbeParams

        async def gather(self, params: ProbeParams, ctx: ProbeContext) -> None:
            return None

        def interpret(self, params: ProbeParams, raw: None) -> CheckResult:
            return CheckResult.passed("ok")

    yield
    REGISTRY.pop(AlwaysPass.name, None)


@dataclass
class Event:
    seq: int
    kind: str
    payload: dict[str, Any]
    ts: str = "2026-11-28T00:00:00+00:00"
    actor: str = "tester"
    extra: dict[str, Any] = field(default_factory=dict)


def _plan() -> Plan:
    return Plan.model_validate(
        {
            "name": "t",
            "cutover_at": CUTOVER.isoformat(),
            "contacts": [{"role": "lead", "title": "Lead"}],
            "stages": [
                {
                    "id": "early",
                    "title": "Early",
                    "window": {"opens": "-72h", "due": "-24h"},
                    "sections": [
                        {
                            "title": "S",
                            "steps": [
                                {"id": "probe-a", "title": "A", "check": {"engine-test.pass": {}}},
                                {"id": "sign-b", "title": "B", "manual": {"role": "lead"}},
                                {"id": "act-c", "title": "C", "action": {"deploy": {}}},
                            ],
                        }
                    ],
                },
                {
                    "id": "canary",
                    "title": "Canary",
                    "phase": {"weight": 10},
                    "sections": [
                        {
                            "title": "Monitoring",
                            "steps": [
                                {
                                    "id": "err",
                                    "title": "Error rate < 1%",
                                    "gate": {"metric": "error_rate", "below": "1%"},
                                }
                            ],
                        }
                    ],
                },
            ],
        }
    )


def test_nothing_journaled_means_pending_and_later() -> None:
    state = project(_plan(), [], CUTOVER - timedelta(hours=80))
    assert state.by_id("probe-a").state == State.PENDING
    assert state.by_id("sign-b").state == State.PENDING
    assert state.by_id("act-c").state == State.LATER
    assert state.by_id("err").state == State.LATER
    assert state.by_id("probe-a").timing == Timing.UPCOMING
    assert state.by_id("err").timing == Timing.UNSCHEDULED


def test_open_window_makes_unfinished_items_due_and_late_ones_overdue() -> None:
    due = project(_plan(), [], CUTOVER - timedelta(hours=48))
    assert due.by_id("probe-a").timing == Timing.DUE
    assert due.summary()["due"] == 3
    late = project(_plan(), [], CUTOVER - timedelta(hours=12))
    assert late.by_id("sign-b").timing == Timing.OVERDUE
    assert late.summary()["overdue"] == 3


def test_latest_check_result_wins() -> None:
    events = [
        Event(1, "check.result", {"step": "probe-a", "status": "fail", "reason": "x"}),
        Event(2, "check.result", {"step": "probe-a", "status": "pass", "reason": "ok"}),
    ]
    state = project(_plan(), events, CUTOVER - timedelta(hours=12))
    item = state.by_id("probe-a")
    assert item.state == State.DONE
    assert item.timing == Timing.COMPLETE
    assert item.last_result is not None and item.last_result["reason"] == "ok"
    failing = project(_plan(), list(reversed(events)), CUTOVER - timedelta(hours=12))
    assert failing.by_id("probe-a").state == State.FAILED


def test_signoff_completes_a_manual_step_and_records_who() -> None:
    events = [Event(1, "signoff", {"step": "sign-b", "by": "Ana", "note": "bridge open"})]
    item = project(_plan(), events, CUTOVER).by_id("sign-b")
    assert item.state == State.DONE
    assert [(s.by, s.note) for s in item.signoffs] == [("Ana", "bridge open")]


def test_notes_are_collected_and_other_events_ignored() -> None:
    events = [Event(1, "note", {"text": "DNS TTL lowered"}), Event(2, "plan.loaded", {})]
    state = project(_plan(), events, CUTOVER)
    assert state.notes[0]["text"] == "DNS TTL lowered"
    assert state.events == 2


def test_stage_summaries_and_next_opening() -> None:
    before = project(_plan(), [], CUTOVER - timedelta(hours=80))
    rows = {r["stage"]: r for r in before.stage_summaries()}
    assert rows["early"]["window"] == "upcoming"
    assert rows["canary"]["window"] == "unscheduled"
    assert rows["early"]["total"] == 3 and rows["early"]["later"] == 1
    upcoming = before.next_opening()
    assert upcoming is not None and upcoming[0].id == "early"
    assert upcoming[1] == CUTOVER - timedelta(hours=72)

    late = project(_plan(), [], CUTOVER - timedelta(hours=1))
    rows = {r["stage"]: r for r in late.stage_summaries()}
    assert rows["early"]["window"] == "closed"
    assert rows["early"]["overdue"] == 3
    assert late.next_opening() is None
