"""``changeover report``: formats, files, exit codes, and plain errors for a missing journal, an
empty one, a missing export and a tampered chain — never a traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from changeover.cli import main
from reports.conftest import Night, Scribe, numbers


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def written(scribe: Scribe) -> Scribe:
    scribe.phase("staged", 50)
    scribe.sample("staged", (50.0, 50.0), numbers(1000), numbers(1000))
    scribe.add("signoff", actor="Ana", step="runbook-reviewed", by="Ana", note="walked through")
    scribe.close()  # the CLI opens the journal itself
    return scribe


def test_writes_html_to_a_file_and_says_how_the_criteria_stand(
    written: Scribe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    code, out, err = _run(capsys, "report", "-p", str(written.plan), "-o", str(target))
    assert code == 0, err
    assert f"wrote {target}: in progress; criteria 3 pass, 1 fail, 9 unknown" in out
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.count('class="criterion"') == 13


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (["--format", "json"], "{"),
        (["--format", "md"], "# Cutover report"),
        ([], "# Cutover report"),  # md stays the default on stdout
        (["-f", "html"], "<!doctype html>"),
    ],
)
def test_prints_each_format_on_stdout(
    written: Scribe, capsys: pytest.CaptureFixture[str], args: list[str], starts: str
) -> None:
    code, out, err = _run(capsys, "report", "-p", str(written.plan), *args)
    assert code == 0, err
    assert out.startswith(starts)
    if starts == "{":
        assert len(json.loads(out)["criteria"]) == 13


def test_the_format_follows_the_output_suffix_unless_given(
    written: Scribe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_json = tmp_path / "r.json"
    assert _run(capsys, "report", "-p", str(written.plan), "-o", str(as_json))[0] == 0
    assert json.loads(as_json.read_text())["plan"] == "small night"
    forced = tmp_path / "r.json.md"
    assert _run(capsys, "report", "-p", str(written.plan), "-f", "md", "-o", str(forced))[0] == 0
    assert forced.read_text().startswith("# Cutover report")


def test_a_missing_journal_is_a_plain_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}]\nstages: []\n",
        encoding="utf-8",
    )
    code, out, err = _run(capsys, "report", "-p", str(plan), "-o", str(tmp_path / "r.html"))
    assert code == 2 and out == ""
    assert f"no journal at {tmp_path / '.changeover' / 'journal.db'}" in err
    assert "changeover run" in err and "Traceback" not in err
    assert not (tmp_path / ".changeover").exists() and not (tmp_path / "r.html").exists()


def test_a_journal_with_nothing_but_the_plan_is_refused(
    scribe: Scribe, capsys: pytest.CaptureFixture[str]
) -> None:
    scribe.add("plan.loaded", name="small night")
    scribe.close()
    code, _, err = _run(capsys, "report", "-p", str(scribe.plan))
    assert code == 2 and "has nothing to report" in err


def test_reports_from_a_journal_export_and_refuses_a_missing_one(
    written: Scribe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "journal.jsonl"
    assert _run(capsys, "journal", "export", "-p", str(written.plan), "-o", str(export))[0] == 0
    code, out, err = _run(
        capsys, "report", "-p", str(written.plan), "--journal", str(export), "-f", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["journal"]["location"] == str(export) and data["journal"]["chain_ok"] is True
    assert data["timeline"]["phases"][0]["phase"] == "staged"

    code, _, err = _run(capsys, "report", "-p", str(written.plan), "--journal", "nope.jsonl")
    assert code == 2 and "no journal export at nope.jsonl" in err


def test_a_tampered_journal_still_gets_its_report_marked_and_exits_4(
    night: Night, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "night"
    shutil.copytree(night.workdir, copy)
    with sqlite3.connect(copy / ".changeover" / "journal.db") as conn:
        conn.execute(
            "UPDATE changeover_events SET payload = replace(payload, 'Ana', 'Bob') "
            "WHERE kind = 'signoff'"
        )
    target = tmp_path / "report.md"
    code, _, err = _run(capsys, "report", "-p", str(copy / "changeover.yaml"), "-o", str(target))
    assert code == 4 and "journal TAMPERED: event" in err
    assert "HASH CHAIN BROKEN" in target.read_text(encoding="utf-8")


def test_an_unwritable_output_is_a_plain_error(
    written: Scribe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "report.html"
    code, _, err = _run(capsys, "report", "-p", str(written.plan), "-o", str(target))
    assert code == 2 and "cannot write the report to" in err and "Traceback" not in err
