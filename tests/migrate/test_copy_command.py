"""`changeover migrate copy` end to end into a real PostgreSQL: counts reconcile, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from changeover.cli import main

from .corpus import make_app_db, make_weird_db


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_copy_of_the_app_corpus_reconciles_and_never_shows_the_password(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    make_app_db(db, rows=100)
    monkeypatch.setenv("TARGET_URL", pg_url)
    code, out, err = _run(
        capsys, "migrate", "copy", "--source", str(db), "--target", "${TARGET_URL}", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["rejected"] == 0
    with psycopg.connect(pg_url) as conn:
        for table in data["tables"]:
            (count,) = conn.execute(f'SELECT count(*) FROM "{table["table"]}"').fetchone()  # type: ignore[misc]
            assert count == table["copied"] == table["source_rows"]
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in out + err


def test_copy_of_the_weird_corpus_quarantines_and_exits_1(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "weird.db"
    make_weird_db(db)
    monkeypatch.setenv("TARGET_URL", pg_url)
    code, out, _ = _run(
        capsys,
        "migrate",
        "copy",
        "--source",
        str(db),
        "--target",
        "${TARGET_URL}",
        "--on-error",
        "quarantine",
        "--jobs",
        "1",
        "--json",
    )
    assert code == 1
    data = json.loads(out)
    assert data["rejected"] > 0
    for table in data["tables"]:
        assert table["source_rows"] == table["copied"] + table["rejected"]


def test_a_literal_password_on_the_command_line_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    make_app_db(db, rows=5)
    target = "postgresql://app:hunter2-literal@127.0.0.1:1/app"
    code, _, err = _run(capsys, "migrate", "copy", "--source", str(db), "--target", target)
    assert code == 2
    assert "literal password" in err and "hunter2-literal" not in err
