"""The cleanup and advise steps as the controller runs them (``rollout.actions.run``): the
archive of a live SQLite journal verifies, the SQLite backup restores, the revoke hook runs as an
argv list, the calendar is written, advice is journaled — and each failure is a plain reason."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from changeover.cleanup.archive import verify_archive
from changeover.cleanup.sqlite import verify_sqlite_backup
from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.journal import NOTE
from changeover.journal.sqlite import SqliteJournal
from changeover.rollout import actions
from changeover.traffic.builtin import BuiltinRouter

PLAN = """
version: 1
name: cleanup test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Deployment Lead}]
systems:
  legacy: {kind: app, url: "http://127.0.0.1:1"}
  postgres: {kind: postgres, url: "${PG_URL:-postgresql://u@127.0.0.1:1/x}"}
  cache: {kind: redis, url: "${REDIS_URL:-redis://127.0.0.1:1/0}"}
migrate: {source: app.db, target: postgres}
stages:
  - id: post
    title: Post
    window: {opens: 0h, due: 72h}
    sections:
      - title: Cleanup
        steps:
          - {id: a, title: Archive, action: {archive.logs: {}}}
"""


@pytest.fixture
def runbook(tmp_path: Path) -> Iterator[Runbook]:
    (tmp_path / "changeover.yaml").write_text(PLAN, encoding="utf-8")
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO users (name) VALUES (?)", [(f"u{n}",) for n in range(40)])
    conn.commit()
    conn.close()
    with Runbook.open(tmp_path / "changeover.yaml") as opened:
        yield opened


def act(runbook: Runbook, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        router = BuiltinRouter("http://127.0.0.1:9", None)  # never called by these actions
        try:
            return await asyncio.wait_for(actions.run(name, params or {}, runbook, router), 60)
        finally:
            await router.close()

    return asyncio.run(go())


def test_cleanup_and_advise_are_run_by_the_controller() -> None:
    wanted = {"advise", "archive.logs", "archive.sqlite", "revoke-write", "decommission"}
    assert wanted <= actions.AUTOMATED


@pytest.mark.timeout(60)
def test_archive_logs_holds_the_live_journal_and_the_given_paths(
    runbook: Runbook, tmp_path: Path
) -> None:
    (tmp_path / "REPORT.md").write_text("# report\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("ERROR x\n")
    runbook.note("before the archive", by="tester")

    detail = act(runbook, "archive.logs", {"paths": ["REPORT.md", "logs"]})

    archive = Path(detail["archive"])
    assert archive.parent == tmp_path / ".changeover" / "archive"
    assert detail["members"] == ["files/REPORT.md", "files/logs/app.log", "journal/journal.db"]
    assert verify_archive(archive).ok
    with tarfile.open(archive, "r:gz") as tar:
        copy = tmp_path / "journal-copy.db"
        copy.write_bytes(tar.extractfile("journal/journal.db").read())  # type: ignore[union-attr]
    with SqliteJournal(copy) as archived:  # the archived journal's hash chain still verifies
        check = archived.verify()
        kinds = [event.kind for event in archived.events()]
    assert check.ok and check.count == len(kinds)
    assert NOTE in kinds


@pytest.mark.timeout(60)
def test_archive_logs_names_a_missing_path(runbook: Runbook) -> None:
    with pytest.raises(UsageError, match=r"REPORT\.md does not exist"):
        act(runbook, "archive.logs", {"paths": ["REPORT.md"]})
    with pytest.raises(actions.ActionFailed, match="paths must be a list"):
        act(runbook, "archive.logs", {"paths": "REPORT.md"})


@pytest.mark.timeout(60)
def test_archive_sqlite_backs_up_the_plans_source_and_restores_it(
    runbook: Runbook, tmp_path: Path
) -> None:
    detail = act(runbook, "archive.sqlite", {"compression": "xz", "output": "backups"})

    path = Path(detail["path"])
    assert path.parent == tmp_path / "backups" and path.name.startswith("app-")
    assert detail["tables"] == {"users": 40}
    assert verify_sqlite_backup(path, {"users": 40}) == {"users": 40}


@pytest.mark.timeout(60)
def test_revoke_write_runs_the_hook_as_argv(runbook: Runbook, tmp_path: Path) -> None:
    marker = tmp_path / "revoked; rm -rf nothing"  # a shell would split this name
    hook = [sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).touch()"]

    detail = act(runbook, "revoke-write", {"system": "legacy", "command": [*hook, str(marker)]})

    assert marker.exists() and detail == {"hook": sys.executable, "exit": 0, "system": "legacy"}


@pytest.mark.timeout(60)
def test_revoke_write_failures_are_plain(runbook: Runbook) -> None:
    with pytest.raises(actions.ActionFailed, match="give the command"):
        act(runbook, "revoke-write", {"system": "legacy"})
    with pytest.raises(actions.ActionFailed, match="must be an argv list"):
        act(runbook, "revoke-write", {"command": "app-ctl revoke"})
    failing = [sys.executable, "-c", "import sys; sys.exit('no grant to revoke')"]
    with pytest.raises(actions.ActionFailed, match="exited 1: no grant to revoke"):
        act(runbook, "revoke-write", {"command": failing})


@pytest.mark.timeout(60)
def test_decommission_writes_the_calendar_from_the_plans_cutover(
    runbook: Runbook, tmp_path: Path
) -> None:
    detail = act(runbook, "decommission", {"system": "legacy"})

    path = Path(detail["calendar"])
    assert path == tmp_path / ".changeover" / "archive" / "decommission-legacy.ics"
    text = path.read_bytes().decode("utf-8")
    assert text.count("BEGIN:VEVENT") == 4 and "DTSTART:20261208T020000Z" in text
    assert detail["events"][0]["date"] == "2026-12-08"


@pytest.mark.timeout(60)
def test_advise_indexes_is_journaled_detail(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_URL", pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE INDEX t_v_idx ON t (v)")
    (tmp_path / "changeover.yaml").write_text(PLAN, encoding="utf-8")
    with Runbook.open(tmp_path / "changeover.yaml") as opened:
        detail = act(opened, "advise", {"topic": "indexes"})
        pool = act(opened, "advise", {"topic": "pool-size", "instances": 2})
        with pytest.raises(actions.ActionFailed, match="topic must be one of"):
            act(opened, "advise", {"topic": "everything"})

    assert detail["topic"] == "indexes"
    assert [i["index"] for i in detail["unused_indexes"]] == ["public.t_v_idx"]
    assert pool["pool"]["instances"] == 2 and pool["pool"]["per_instance"] >= 2


@pytest.mark.timeout(60)
def test_advise_on_an_unreachable_cache_is_a_plain_error(runbook: Runbook) -> None:
    from changeover.probes.base import Unreachable

    with pytest.raises(Unreachable, match=r"cannot connect to Redis at 127\.0\.0\.1:1"):
        act(runbook, "advise", {"topic": "cache-ttl"})
