"""The CLI: every command documented, help with an example, exit codes, --json, no tracebacks."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import click
import pytest

from changeover.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
        else:
            found.append((name, command))
    return found


def test_every_command_has_help_with_an_example() -> None:
    for name, command in _commands():
        assert command.help, f"{name} has no help text"
        assert "Example: changeover " in command.help, f"{name} help has no example"


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, _ in _commands():
        assert f"changeover {name}" in readme, f"`changeover {name}` missing from README.md"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _minimal_plan(tmp_path: Path, steps: str) -> Path:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        "version: 1\n"
        "name: t\n"
        "cutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}]\n"
        "stages:\n"
        "  - id: pre\n"
        "    title: Pre\n"
        "    window: {opens: -72h, due: -24h}\n"
        "    sections:\n"
        "      - title: S\n"
        "        steps:\n" + steps,
        encoding="utf-8",
    )
    return plan


def test_invalid_plan_exits_2_with_file_line_col(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _minimal_plan(
        tmp_path, "          - {id: a, title: A, manual: {role: lead}, bogus: 1}\n"
    )
    code, _, err = _run(capsys, "validate", str(plan))
    assert code == 2
    assert re.search(r"changeover\.yaml:12:\d+: .*bogus.*unknown key", err), err
    assert "Traceback" not in err


def test_missing_plan_file_is_a_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "status", "--plan", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in err and "Traceback" not in err


def test_unknown_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "check", "--no-such-flag")
    assert code == 2
    assert "no-such-flag" in err


def test_check_exit_codes_follow_required_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A closed loopback port: the tcp probe fails (required) → exit 1; marked optional → exit 0.
    plan = _minimal_plan(
        tmp_path,
        "          - {id: fw, title: Firewall, check: {tcp: {open: ['127.0.0.1:1'], "
        "connect_timeout: 1s}}}\n",
    )
    code, out, _ = _run(capsys, "check", "--plan", str(plan), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["results"][0]["status"] == "fail"
    assert "127.0.0.1:1" in data["results"][0]["reason"]

    optional = _minimal_plan(
        tmp_path,
        "          - {id: fw, title: Firewall, required: false, check: {tcp: {open: "
        "['127.0.0.1:1'], connect_timeout: 1s}}}\n",
    )
    code, out, _ = _run(capsys, "check", "--plan", str(optional), "--json")
    assert code == 0
    assert json.loads(out)["results"][0]["status"] == "warn"


def test_unknown_stage_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _minimal_plan(tmp_path, "          - {id: a, title: A, manual: {role: lead}}\n")
    code, _, err = _run(capsys, "check", "--plan", str(plan), "--stage", "pree")
    assert code == 2
    assert "did you mean 'pre'" in err


def test_signoff_status_report_and_journal_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _minimal_plan(
        tmp_path, "          - {id: war-room, title: War room, manual: {role: lead}}\n"
    )
    code, out, _ = _run(
        capsys, "signoff", "war-room", "--by", "Ana", "--note", "open", "-p", str(plan)
    )
    assert code == 0 and "war-room" in out

    code, out, _ = _run(capsys, "status", "-p", str(plan), "--json")
    assert code == 0
    status = json.loads(out)
    assert status["steps"][0]["state"] == "done"
    assert status["steps"][0]["signoffs"][0]["by"] == "Ana"

    code, out, _ = _run(capsys, "report", "-p", str(plan), "--format", "md")
    assert code == 0 and "signed off by Ana" in out

    code, out, _ = _run(capsys, "journal", "verify", "-p", str(plan), "--json")
    assert code == 0 and json.loads(out)["ok"] is True

    export = tmp_path / "j.jsonl"
    code, _, _ = _run(capsys, "journal", "export", "-p", str(plan), "-o", str(export))
    kinds = [json.loads(line)["kind"] for line in export.read_text().splitlines()]
    assert kinds == ["plan.loaded", "signoff"]


def test_journal_verify_exits_4_after_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _minimal_plan(
        tmp_path, "          - {id: war-room, title: War room, manual: {role: lead}}\n"
    )
    for who in ("Ana", "Bo", "Cy"):
        assert _run(capsys, "signoff", "war-room", "--by", who, "-p", str(plan))[0] == 0
    db = tmp_path / ".changeover" / "journal.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "update changeover_events set payload = replace(payload, 'Bo', 'Eve') where seq = 3"
        )
    code, _, err = _run(capsys, "journal", "verify", "-p", str(plan))
    assert code == 4
    assert "event 3" in err


def test_init_writes_a_plan_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = _run(capsys, "init", str(tmp_path))
    assert code == 0
    code, out, err = _run(capsys, "validate", str(tmp_path / "changeover.yaml"), "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] >= 174 + 13
    # init refuses to overwrite the operator's edited plan
    code, _, err = _run(capsys, "init", str(tmp_path))
    assert code == 2 and "exists" in err


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "schema")
    assert code == 0
    assert "postgres.connect" in out
    json.loads(out)


_GOOD_STEP = "          - {id: a, title: A, manual: {role: lead}}\n"
PLAN_MISTAKES = {
    "yaml syntax": "          - {id: a, title: A, manual: {role: lead}\n",
    "unknown key": "          - {id: a, title: A, manual: {role: lead}, tittle: x}\n",
    "missing title": "          - {id: a, manual: {role: lead}}\n",
    "two kinds": "          - {id: a, title: A, manual: {role: lead}, action: {deploy: {}}}\n",
    "unknown probe": "          - {id: a, title: A, check: {postgress.connect: {system: pg}}}\n",
    "bad parameter": "          - {id: a, title: A, check: {tcp: {open: 5432}}}\n",
    "unknown system": "          - {id: a, title: A, check: {postgres.connect: {system: pgx}}}\n",
    "unknown role": "          - {id: a, title: A, manual: {role: dba}}\n",
    "duplicate id": _GOOD_STEP + _GOOD_STEP,
    "bad id": "          - {id: A B, title: A, manual: {role: lead}}\n",
    "bad duration": "          - {id: a, title: A, gate: {metric: error_rate, below: 1%, "
    "sustained: 2 minutes}}\n",
    "gate without condition": "          - {id: a, title: A, gate: {metric: error_rate}}\n",
    "unknown action": "          - {id: a, title: A, action: {deploi: {}}}\n",
}


@pytest.mark.parametrize("mistake", sorted(PLAN_MISTAKES))
def test_each_kind_of_plan_mistake_exits_2_with_file_line_col(
    mistake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _minimal_plan(tmp_path, PLAN_MISTAKES[mistake])
    code, _, err = _run(capsys, "validate", str(plan))
    assert code == 2, err
    assert re.search(r"changeover\.yaml:\d+:\d+: ", err), err
    assert "Traceback" not in err


def test_every_probe_is_listed_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "probes", "--json")
    assert code == 0
    names = [p["name"] for p in json.loads(out)]
    assert len(names) >= 28
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in readme, f"probe {name} missing from the README's probe table"
    code, out, _ = _run(capsys, "probes", "postgres.replication")
    assert code == 0 and "max_lag" in out and "100ms" in out
    code, _, err = _run(capsys, "probes", "postgress.connect")
    assert code == 2 and "did you mean 'postgres.connect'" in err


def test_notes_are_journaled_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _minimal_plan(tmp_path, _GOOD_STEP)
    assert _run(capsys, "note", "DNS TTL lowered to 60s", "--by", "Ana", "-p", str(plan))[0] == 0
    code, out, _ = _run(capsys, "report", "-p", str(plan))
    assert code == 0 and "Ana: DNS TTL lowered to 60s" in out


def test_plan_can_keep_its_journal_in_postgresql(
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("JOURNAL_URL", pg_url)
    plan = _minimal_plan(tmp_path, _GOOD_STEP)
    text = plan.read_text().replace("name: t\n", 'name: t\njournal: "${JOURNAL_URL}"\n')
    plan.write_text(text)
    assert _run(capsys, "signoff", "a", "--by", "Ana", "-p", str(plan))[0] == 0
    code, out, _ = _run(capsys, "journal", "verify", "-p", str(plan), "--json")
    assert code == 0 and json.loads(out)["count"] == 2
    assert not (tmp_path / ".changeover").exists(), "nothing was written next to the plan"
    code, out, err = _run(capsys, "status", "-p", str(plan), "--json")
    assert json.loads(out)["steps"][0]["signoffs"][0]["by"] == "Ana"
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in out + err
