"""The sync, handoff, status and unsync commands end to end (real PostgreSQL, no proxy)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from changeover.cli import main

from .corpus import make_app_db


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_copy_sync_handoff_back_and_unsync_through_the_cli(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=30)
    monkeypatch.setenv("TARGET_URL", pg_url)
    where = ("--source", str(db), "--target", "${TARGET_URL}")
    assert run(capsys, "migrate", "copy", *where, "--capture")[0] == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'cli' WHERE id = 4")
    code, out, err = run(capsys, "migrate", "sync", *where, "--once", "--json")
    assert code == 0, err
    assert json.loads(out)["applied"] == 1 and json.loads(out)["lag"]["rows"] == 0
    code, out, err = run(capsys, "migrate", "verify", *where, "--changed", "--json")
    assert code == 0, err
    assert json.loads(out)["equal"] is True
    code, out, _ = run(capsys, "migrate", "verify", *where, "--changed")
    assert code == 0 and "no key changed since the last verify" in out
    code, out, err = run(capsys, "migrate", "status", *where, "--json")
    status = json.loads(out)
    assert status["write_owner"] == "legacy" and status["capture"]["sqlite_triggers"]
    assert status["copy"].startswith("finished")

    code, out, err = run(capsys, "migrate", "handoff", *where, "--no-proxy", "--json")
    assert code == 0, err
    assert json.loads(out)["owner"] == "new"
    with psycopg.connect(pg_url) as pg:
        pg.execute("UPDATE users SET name = 'from-new' WHERE id = 5")
    code, out, err = run(capsys, "migrate", "sync", *where, "--once", "--json")
    assert json.loads(out)["direction"] == "reverse"
    code, out, _ = run(capsys, "migrate", "status", *where)
    assert "write owner: new" in out and "reverse sync" in out

    code, out, err = run(capsys, "migrate", "handoff", *where, "--back", "--no-proxy")
    assert code == 0, err
    assert "writes now go to legacy" in out
    code, out, err = run(capsys, "migrate", "verify", *where)
    assert code == 0, out + err
    code, out, err = run(capsys, "migrate", "unsync", *where)
    assert code == 0, err
    assert "removed trigger" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 5").fetchone() == ("from-new",)
        assert not conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '\\_changeover%' ESCAPE '\\'"
        ).fetchall()


def test_unsync_refuses_while_changes_are_pending(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    monkeypatch.setenv("TARGET_URL", pg_url)
    where = ("--source", str(db), "--target", "${TARGET_URL}")
    assert run(capsys, "migrate", "copy", *where, "--capture")[0] == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'pending' WHERE id = 1")
    code, _, err = run(capsys, "migrate", "unsync", *where)
    assert code == 2
    assert "1 captured changes are not in PostgreSQL yet" in err
    assert run(capsys, "migrate", "unsync", *where, "--force")[0] == 0


def test_handoff_without_a_proxy_or_a_router_says_what_to_give(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=5)
    monkeypatch.setenv("TARGET_URL", pg_url)
    monkeypatch.chdir(tmp_path)
    where = ("--source", str(db), "--target", "${TARGET_URL}")
    assert run(capsys, "migrate", "copy", *where, "--capture")[0] == 0
    code, _, err = run(capsys, "migrate", "handoff", *where)
    assert code == 2
    assert "--proxy" in err and "--no-proxy" in err


def test_copy_dry_run_verifies_in_a_scratch_schema_and_leaves_nothing(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=50)
    before = db.read_bytes()
    monkeypatch.setenv("TARGET_URL", pg_url)
    where = ("--source", str(db), "--target", "${TARGET_URL}")
    code, out, err = run(capsys, "migrate", "copy", *where, "--dry-run", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and result["copied"] == 350 and result["verify"]["equal"]
    with psycopg.connect(pg_url) as pg:
        assert pg.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '\\_changeover%'"
        ).fetchone() == (0,)
        assert pg.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)
    assert db.read_bytes() == before  # no capture, no WAL switch: the file is untouched
    code, _, err = run(capsys, "migrate", "copy", *where, "--dry-run", "--capture")
    assert code == 2 and "cannot install --capture" in err
