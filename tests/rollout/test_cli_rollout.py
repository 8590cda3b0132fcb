"""`changeover approve` and `changeover rollback` journal what the running controller acts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.cli import main
from changeover.engine.runbook import Runbook
from changeover.rollout.state import APPROVED, ROLLBACK_REQUESTED
from rollout.test_controller import write_plan


def test_approve_journals_who_approved_and_refuses_an_unknown_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = str(write_plan(tmp_path))
    assert main(["approve", "canary", "--by", "alice", "--plan", plan]) == 0
    assert main(["approve", "canry", "--by", "alice", "--plan", plan]) == 2
    assert "did you mean 'canary'" in capsys.readouterr().err
    with Runbook.open(plan) as runbook:
        event = runbook.journal.latest(APPROVED)
        assert event is not None and event.actor == "alice"
        assert event.payload == {"phase": "canary"}


def test_rollback_journals_the_request_with_mode_reason_and_who(tmp_path: Path) -> None:
    plan = str(write_plan(tmp_path))
    assert (
        main(["rollback", "--graceful", "--reason", "p95 creeping", "--by", "bob", "--plan", plan])
        == 0
    )
    with Runbook.open(plan) as runbook:
        event = runbook.journal.latest(ROLLBACK_REQUESTED)
        assert event is not None and event.actor == "bob"
        assert event.payload == {"mode": "graceful", "reason": "p95 creeping"}


def test_do_runs_a_post_cutover_action_once_journaled_and_refuses_phase_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    plan = str(tmp_path / "changeover.yaml")
    capsys.readouterr()
    assert main(["do", "schedule-decommission", "--by", "alice", "--plan", plan]) == 0
    assert "schedule-decommission: decommission done" in capsys.readouterr().out
    assert list((tmp_path / ".changeover").rglob("decommission-legacy.ics"))
    with Runbook.open(plan) as runbook:
        outcome = runbook.journal.latest("action.outcome", step="schedule-decommission")
        assert outcome is not None and outcome.actor == "alice" and outcome.payload["ok"]
    # done is done: not repeated without --again
    assert main(["do", "schedule-decommission", "--by", "alice", "--plan", plan]) == 2
    assert "already succeeded" in capsys.readouterr().err
    assert main(["do", "schedule-decommission", "--by", "bob", "--again", "--plan", plan]) == 0
    # a traffic phase's action belongs to 'changeover run'; a check step has no action
    assert main(["do", "full-legacy-readonly", "--by", "alice", "--plan", plan]) == 2
    assert "changeover run" in capsys.readouterr().err
    assert main(["do", "canary-systems-operational", "--by", "alice", "--plan", plan]) == 2
    assert "has no action" in capsys.readouterr().err
    assert main(["do", "schedule-decomission", "--by", "alice", "--plan", plan]) == 2
    assert "did you mean 'schedule-decommission'" in capsys.readouterr().err
