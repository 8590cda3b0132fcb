"""The runbook-only report (``changeover.engine.report``) still renders for its callers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from changeover.engine.report import report_json, report_markdown
from changeover.engine.state import project
from changeover.journal.events import Event
from changeover.plan.load import load_plan

PLAN = """
version: 1
name: runbook only
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Lead, name: Ana}]
stages:
  - id: pre
    title: Pre
    window: {opens: -72h, due: -24h}
    sections:
      - title: Documentation
        steps:
          - {id: runbook-reviewed, title: Runbook documented and reviewed, manual: {role: lead}}
          - {id: rollback-documented, title: Rollback procedures documented, manual: {role: lead}}
"""


def test_report_markdown_and_json_render_every_item_with_its_sign_off(tmp_path: Path) -> None:
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN, encoding="utf-8")
    plan = load_plan(path).plan
    signoff = Event(
        1,
        "2026-11-28T10:00:00.000000Z",
        "signoff",
        "Ana",
        {"step": "runbook-reviewed", "by": "Ana", "note": "read with the team"},
        "0" * 64,
        "1" * 64,
    )
    state = project(plan, [signoff], datetime(2026, 11, 28, 12, tzinfo=UTC))
    text = report_markdown(state, journal_head="abc")
    assert text.startswith("# runbook only")
    assert "head `abc`" in text and "### Documentation" in text
    assert "- ✅ Runbook documented and reviewed (`runbook-reviewed`, manual)\n" in text
    assert "signed off by Ana at 2026-11-28T10:00:00.000000Z — read with the team" in text
    assert "⬜ Rollback procedures documented (`rollback-documented`, manual) — due now" in text
    data = json.loads(report_json(state, journal_head="abc"))
    assert data["journal_head"] == "abc" and data["summary"]["done"] == 1
