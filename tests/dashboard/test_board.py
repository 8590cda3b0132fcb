"""The dashboard's projection of the journal (pure): sections, small updates, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from changeover.dashboard.board import Board, condition, describe, rollout_status
from changeover.journal.events import Event
from changeover.plan.load import load_plan
from changeover.plan.model import Gate
from changeover.rollout.state import RolloutState
from dashboard.conftest import write_plan

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # pre-deployment window: opens -72h, due -24h


class Events:
    """Journal events with consecutive seqs, as the journal would hand them out."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, payload: dict[str, Any], actor: str = "changeover run") -> Event:
        self.seq += 1
        return Event(
            self.seq, f"2026-12-01T02:00:{self.seq:02d}.000000Z", kind, actor, payload, "", ""
        )


@pytest.fixture
def board(tmp_path: Any) -> Board:
    return Board(load_plan(write_plan(tmp_path)).plan)


def _sample(phase: str, rps: float, observed: float | None) -> dict[str, Any]:
    return {
        "phase": phase,
        "observed_s": 3.0,
        "weights": {"legacy": 90.0, "new": 10.0},
        "backends": {"legacy": {"rps": rps * 9}, "new": {"rps": rps, "error_rate": 0.0}},
        "gates": [
            {
                "gate": "canary-errors",
                "outcome": "continue",
                "observed": observed,
                "bound": [0.0, 0.08],
                "threshold": 0.03,
                "unit": "",
                "samples": 40,
            }
        ],
    }


def test_a_watched_phase_shows_weights_gate_values_and_chart_points(board: Board) -> None:
    event = Events()
    board.fold(
        [
            event("rollout.phase-started", {"phase": "canary", "weight": 10.0}),
            event(
                "action.outcome",
                {
                    "step": "canary:weight",
                    "action": "route",
                    "weight": 10.0,
                    "ok": True,
                    "observed": {"legacy": 90.0, "new": 10.0},
                },
            ),
            event("rollout.bake", {"phase": "canary", "observed_s": 2.0}),
            event("rollout.sample", _sample("canary", 40.0, 0.01)),
        ]
    )
    sections = board.sections(NOW)
    rollout = sections["rollout"]
    assert rollout["status"] == "watching" and rollout["phase"] == "canary"
    assert rollout["weights"]["percent"] == {"legacy": 90.0, "new": 10.0}
    assert rollout["observed_s"] == 2.0 and rollout["bake"] == {"min_s": 1.0, "max_s": 20.0}
    phase_gate, trigger = sections["gates"]
    assert phase_gate["gate"] == "canary-errors" and phase_gate["role"] == "phase gate"
    assert phase_gate["observed"] == 0.01 and phase_gate["bound"] == [0.0, 0.08]
    assert phase_gate["percent"] and phase_gate["condition"] == "error_rate of new < 3%"
    assert trigger["gate"] == "rollback-error-rate" and trigger["outcome"] is None
    assert trigger["role"] == "rollback: immediate"
    snapshot = board.snapshot(NOW)
    assert [p["backends"]["new"]["rps"] for p in snapshot.samples] == [40.0]
    assert [m["label"] for m in snapshot.marks] == ["canary (10.0%)"]
    # The heartbeat and the sample are charted or shown elsewhere, not in the tail.
    assert [line["kind"] for line in snapshot.tail] == ["rollout.phase-started", "action.outcome"]


def test_the_newer_of_sample_and_verdict_gives_the_numbers_the_verdict_the_reason(
    board: Board,
) -> None:
    event = Events()
    verdict = {
        "gate": "canary-errors", "outcome": "pass", "observed": 0.002, "bound": [0, 0.02],
        "threshold": 0.03, "samples": 900, "elapsed_s": 4.0, "reason": "well below", "unit": "",
    }  # fmt: skip
    board.fold(
        [
            event("rollout.phase-started", {"phase": "canary", "weight": 10.0}),
            event("rollout.sample", _sample("canary", 40.0, 0.01)),
            event("rollout.verdict", {"phase": "canary", "verdict": verdict}),
        ]
    )
    gate = board.sections(NOW)["gates"][0]
    assert (
        gate["outcome"] == "pass" and gate["observed"] == 0.002 and gate["reason"] == "well below"
    )
    board.fold([event("rollout.sample", _sample("canary", 41.0, 0.004))])
    gate = board.sections(NOW)["gates"][0]
    assert gate["observed"] == 0.004 and gate["reason"] == "well below"


def test_an_update_carries_only_what_changed(board: Board) -> None:
    event = Events()
    board.fold([event("rollout.phase-started", {"phase": "canary", "weight": 10.0})])
    first = board.update(NOW)
    assert "contacts" in first.sections and len(first.tail) == 1 and len(first.marks) == 1
    assert board.update(NOW).empty  # nothing new, nothing sent
    board.fold([event("rollout.sample", _sample("canary", 40.0, 0.01))])
    second = board.update(NOW)
    assert set(second.sections) == {"rollout", "gates"}  # weights and gate numbers
    assert len(second.samples) == 1 and second.tail == [] and second.seq == 2
    board.fold([event("signoff", {"step": "war-room", "by": "ana"}, actor="ana")])
    third = board.update(NOW)
    assert "checklist" in third.sections and "timeline" in third.sections
    (row,) = [s for s in third.sections["checklist"] if s["id"] == "war-room"]
    assert row["state"] == "done" and row["signoffs"][0]["by"] == "ana" and row["role"] == "lead"


def test_an_event_of_another_shape_is_named_and_the_rest_still_shown(board: Board) -> None:
    event = Events()
    board.fold(
        [
            event("rollout.approved", {"who": "written by another tool"}),
            event("rollout.phase-started", {"phase": "canary", "weight": 10.0}),
        ]
    )
    sections = board.sections(NOW)
    (why,) = sections["health"]["unreadable"]
    assert why.startswith("event 1 (rollout.approved) cannot be shown")
    assert sections["rollout"]["phase"] == "canary" and board.seq == 2


def test_an_event_folded_twice_counts_once(board: Board) -> None:
    event = Events()
    sample = event("rollout.sample", _sample("canary", 40.0, 0.01))
    board.fold([sample])
    board.fold([sample])
    assert len(board.snapshot(NOW).samples) == 1


def test_the_decision_log_keeps_the_evidence_and_who(board: Board) -> None:
    event = Events()
    evidence = {"verdicts": [{"gate": "canary-errors", "outcome": "pass", "observed": 0.0,
                              "bound": [0, 0.01], "threshold": 0.03, "reason": "clean",
                              "samples": 10}]}  # fmt: skip
    board.fold(
        [
            event("rollout.phase-started", {"phase": "canary", "weight": 10.0}),
            event("rollout.decision-needed", {"phase": "canary", "evidence": evidence}),
        ]
    )
    sections = board.sections(NOW)
    assert sections["rollout"]["status"] == "awaiting-approval"
    assert sections["rollout"]["awaiting_approval"] == ["canary"]
    assert sections["rollout"]["phases"][0]["state"] == "awaiting-approval"
    board.fold([event("rollout.approved", {"phase": "canary"}, actor="alice")])
    decisions = board.sections(NOW)["decisions"]
    assert decisions[1]["evidence"][0]["reason"] == "clean"
    assert decisions[2]["actor"] == "alice" and decisions[2]["text"] == "phase canary approved"
    assert board.sections(NOW)["rollout"]["approved"] == {"canary": "alice"}


def test_a_rollback_is_marked_and_named(board: Board) -> None:
    event = Events()
    board.fold(
        [
            event("rollout.phase-started", {"phase": "canary", "weight": 10.0}),
            event("rollback.requested", {"mode": "immediate", "reason": "pager"}, actor="bob"),
        ]
    )
    assert board.sections(NOW)["rollout"]["status"] == "rollback-requested"
    board.fold(
        [
            event("rollback.started", {"mode": "immediate", "reason": "pager", "evidence": {}}),
            event("rollback.done", {"mode": "immediate", "seconds": 0.1, "writes": "legacy"}),
        ]
    )
    sections = board.sections(NOW)
    assert sections["rollout"]["status"] == "rolled-back"
    assert sections["rollout"]["rolled_back"]["reason"] == "pager"
    assert [m["kind"] for m in board.snapshot(NOW).marks] == ["phase", "rollback", "rollback"]


def test_the_timeline_places_stages_against_now(board: Board) -> None:
    pre = board.sections(NOW)["timeline"]["stages"][0]
    assert pre["stage"] == "pre" and pre["window"] == "closed" and pre["overdue"] == 1
    assert pre["phase"] is None
    early = board.sections(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))["timeline"]["stages"][0]
    assert early["window"] == "open" and early["overdue"] == 0


def test_sync_lag_from_the_sync_step_and_the_plan_contacts(board: Board) -> None:
    event = Events()
    lag = {"position": 9, "head": 12, "rows": 3, "seconds": 0.25}
    board.fold(
        [
            event(
                "action.outcome",
                {"step": "sync", "action": "migrate.sync", "ok": True, "detail": {"lag": lag}},
            )
        ]
    )
    sections = board.sections(NOW)
    assert sections["sync"]["journal"]["rows"] == 3 and sections["sync"]["live"] is None
    assert sections["contacts"][0]["name"] == "Ana"
    assert sections["war_room"]["slack_channel"] == "#cutover"


def test_status_words() -> None:
    assert rollout_status(RolloutState()) == "not-started"
    assert rollout_status(RolloutState(passed=["canary"])) == "between-phases"
    assert rollout_status(RolloutState(done=True)) == "complete"
    assert rollout_status(RolloutState(phase="canary", rollback_in_progress={})) == "rolling-back"


def test_conditions_and_descriptions_read_plainly() -> None:
    gate = Gate(metric="latency_p95", of="new", max_ratio_to="legacy", ratio=1.2, sustained="2m")
    assert condition(gate) == "latency_p95 of new ≤ 1.2× legacy (sustained 2m)"
    assert condition(Gate(metric="security_breach")) == "security_breach: none observed"
    route = {"step": "canary:weight", "action": "route", "weight": 10.0, "ok": True}
    assert describe("action.outcome", route) == "canary:weight: route 10% to new done"
    failed = {"step": "copy", "action": "migrate.copy", "ok": False, "error": "disk full"}
    assert describe("action.outcome", failed) == "copy: migrate.copy FAILED: disk full"
    assert describe("custom.thing", {"metric": "x"}) == "custom.thing x"
