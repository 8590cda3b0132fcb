"""The dashboard's poller: a journal it cannot read, a page that falls behind, and the live
sync lag read from a real SQLite changelog and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from changeover.dashboard import feed as feed_module
from changeover.dashboard.board import Board
from changeover.dashboard.feed import Feed, live_lag
from changeover.engine.runbook import Runbook
from changeover.journal.sqlite import SqliteJournal
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.plan.load import load_plan
from dashboard.conftest import write_plan
from migrate.corpus import make_app_db

MIGRATING = """
version: 1
name: dashboard lag
cutover_at: 2026-12-01T02:00:00Z
systems:
  postgres: {kind: postgres, url: "${PG_URL}"}
migrate: {source: app.db, target: postgres}
stages: []
"""


def test_a_journal_that_cannot_be_read_is_shown_on_the_page_and_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.db")
        journal.append("note", {"text": "first"})
        feed = Feed(journal, Board(load_plan(write_plan(tmp_path)).plan))
        assert (await feed.poll()).sections["health"]["journal_error"] is None
        journal.close()
        broken = await feed.poll()
        assert "cannot read the journal" in broken.sections["health"]["journal_error"]
        assert "already closed" in broken.sections["health"]["journal_error"]
        assert feed.board.seq == 1  # what was read stays on the page

    asyncio.run(scenario())


def test_a_page_that_falls_behind_is_dropped_and_told_to_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "QUEUE", 2)

    async def scenario() -> None:
        journal = SqliteJournal(tmp_path / "journal.db")
        feed = Feed(journal, Board(load_plan(write_plan(tmp_path)).plan))
        slow, snapshot = await feed.subscribe()
        assert snapshot.full and feed.subscribers == 1
        for number in range(3):
            journal.append("note", {"text": f"note {number}"})
            await feed.poll()
        assert feed.subscribers == 0
        assert slow.get_nowait() is None  # the stream ends; the page's EventSource reconnects
        journal.close()

    asyncio.run(scenario())


def test_live_sync_lag_counts_the_changes_postgres_has_not_applied(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=20)
    copy_database(db, pg_url, plan_schema(introspect(db)), jobs=1, capture=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE users SET name = 'changed' WHERE id = 1")
    conn.close()
    (tmp_path / "changeover.yaml").write_text(MIGRATING, encoding="utf-8")
    monkeypatch.setenv("PG_URL", pg_url)
    with Runbook.open(tmp_path / "changeover.yaml") as runbook:
        read = live_lag(runbook)
        assert read is not None
        lag = asyncio.run(read())
    assert "error" not in lag, lag
    assert lag["rows"] >= 1 and lag["head"] >= 1 and "at" in lag


def test_live_sync_lag_says_why_it_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "changeover.yaml").write_text(MIGRATING, encoding="utf-8")
    monkeypatch.delenv("PG_URL", raising=False)
    with Runbook.open(tmp_path / "changeover.yaml") as runbook:
        read = live_lag(runbook)
        assert read is not None
        unset = asyncio.run(read())
        assert "PG_URL is not set" in unset["error"]
        monkeypatch.setenv("PG_URL", "postgresql://u@127.0.0.1:1/db")
        missing = asyncio.run(read())
        assert "app.db" in missing["error"] and "does not exist" in missing["error"]
    (tmp_path / "plain").mkdir()
    with Runbook.open(write_plan(tmp_path / "plain")) as runbook:
        assert live_lag(runbook) is None  # no migrate: section, no lag to read
