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
