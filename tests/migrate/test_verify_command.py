"""`changeover migrate verify` end to end against a real PostgreSQL: exit codes, JSON, text diff."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from changeover.cli import main
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect

from .corpus import make_app_db


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_exits_0_when_equal_and_1_with_a_readable_diff(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=30)
    copy_database(db, pg_url, plan_schema(introspect(db)), jobs=1)
    monkeypatch.setenv("PG_URL", pg_url)
    args = ("migrate", "verify", "--source", f"sqlite:///{db}", "--target", "${PG_URL}")
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["equal"] is True and data["mode"] == "full"
    assert {t["table"] for t in data["tables"]} >= {"users", "orders", "order_items"}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'Mallory' WHERE id = 4")
        conn.execute("DELETE FROM order_items WHERE order_id = 2 AND line_no = 1")
    code, out, _ = _run(capsys, *args, "--json")
    assert code == 1
    data = json.loads(out)
    users = next(t for t in data["tables"] if t["table"] == "users")
    assert users["diffs"] == [
        {
            "kind": "different",
            "key": {"id": 4},
            "columns": [{"column": "name", "source": "User 3", "target": "Mallory"}],
        }
    ]
    code, out, err = _run(capsys, *args)
    assert code == 1
    assert "users: DIFFERENT" in out
    assert "name: SQLite 'User 3' | PostgreSQL 'Mallory'" in out
    assert 'missing in PostgreSQL: {"order_id": 2, "line_no": 1}' in out
    assert "verify (full): NOT equal" in out
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in out + err


def test_verify_sample_and_table_options(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=30)
    copy_database(db, pg_url, plan_schema(introspect(db)), jobs=1)
    monkeypatch.setenv("PG_URL", pg_url)
    code, out, err = _run(
        capsys,
        "migrate",
        "verify",
        "--source",
        str(db),
        "--target",
        "${PG_URL}",
        "--sample",
        "5",
        "--table",
        "users",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["mode"] == "sample"
    assert [(t["table"], t["source_rows"]) for t in data["tables"]] == [("users", 5)]


def test_verify_before_copy_is_a_plain_error(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=3)
    monkeypatch.setenv("PG_URL", pg_url)
    code, _, err = _run(capsys, "migrate", "verify", "--source", str(db), "--target", "${PG_URL}")
    assert code == 3
    assert "run 'changeover migrate copy' first" in err
    assert "Traceback" not in err
