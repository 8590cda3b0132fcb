"""``changeover notify test``: one line per channel, delivered or failed with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changeover.cli import main
from support.process import free_port

from .conftest import Receiver


def write_plan(tmp_path: Path, notify: str) -> Path:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}]\n"
        f"notify: {notify}\n"
        "stages:\n  - {id: pre, title: Pre, sections: [{title: S, steps: "
        "[{id: a, title: A, manual: {role: lead}}]}]}\n",
        encoding="utf-8",
    )
    return plan


def test_notify_test_reports_each_channel_and_exits_1_when_one_fails(
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOOK_URL", receiver.url())
    refused = f"json://127.0.0.1:{free_port()}/down"
    plan = write_plan(tmp_path, f"['${{HOOK_URL}}', '{refused}']")
    code = main(["notify", "test", "--plan", str(plan), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["ok"] for r in results] == [True, False]
    assert results[0]["channel"] == "${HOOK_URL}"
    assert results[1]["attempt"] == 2  # one quick retry, then given up
    assert receiver.requests[0][1]["title"] == "t: notification test"


def test_notify_test_without_channels_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["notify", "test", "--plan", str(write_plan(tmp_path, "[]"))])
    assert code == 2
    assert "no notification channels" in capsys.readouterr().err
