"""Run every journal test against both stores, and reach under them with plain SQL to tamper.

``store`` is parametrized: ``sqlite`` (a file in tmp_path) and ``postgres`` (a fresh database
from the suite's ``pg_url`` fixture, on a real server the tests start). ``Store.sql`` talks to
the tables directly with the sqlite3 module or psycopg, bypassing changeover, as an intruder
with a SQL shell would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from changeover.journal import Journal, open_journal
from changeover.journal.postgres import PostgresJournal
from changeover.journal.sqlite import SqliteJournal


@dataclass
class Store:
    """One journal location plus raw SQL access to its tables."""

    name: str
    spec: str  # what a plan's `journal:` would say
    plan_dir: Path
    opened: list[Journal] = field(default_factory=list)

    def open(self, **options: Any) -> Journal:
        """``open_journal`` as the CLI would; with ``options``, the store class directly."""
        if not options:
            journal = open_journal(self.spec, self.plan_dir)
        elif self.name == "sqlite":
            journal = SqliteJournal(Path(self.spec.removeprefix("sqlite://")), **options)
        else:
            journal = PostgresJournal(self.spec, **options)
        self.opened.append(journal)
        return journal

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside changeover (``?`` placeholders) and commit it."""
        if self.name == "sqlite":
            path = self.spec.removeprefix("sqlite://")
            with sqlite3.connect(path) as conn:
                rows = conn.execute(statement, params).fetchall()
            conn.close()
            return rows
        with psycopg.connect(self.spec, autocommit=True) as pg:
            cursor = pg.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def close_all(self) -> None:
        for journal in self.opened:
            journal.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    if request.param == "sqlite":
        spec = f"sqlite://{plan_dir / '.changeover' / 'journal.db'}"
    else:
        spec = request.getfixturevalue("pg_url")
    found = Store(request.param, spec, plan_dir)
    yield found
    found.close_all()
