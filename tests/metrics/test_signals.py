"""SignalSource: signals journaled by ``changeover signal`` become events of their metric."""

from __future__ import annotations

import asyncio
from pathlib import Path

from changeover.journal.sqlite import SqliteJournal
from changeover.metrics.signals import SignalSource, raise_signal


def test_signals_count_per_metric_and_system_with_the_latest_reason(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")

    async def scenario() -> None:
        source = SignalSource(journal)
        quiet = await source.read("security_breach", "new")
        assert (quiet.events, quiet.total, quiet.unavailable) == (0, 0, None)
        raise_signal(journal, "security_breach", None, "WAF: credential stuffing", by="siem")
        raise_signal(journal, "critical_features", "new", "checkout broken", by="support")
        journal.append("note", {"text": "unrelated"}, actor="alice")
        breach = await source.read("security_breach", "new")
        assert (breach.events, breach.total) == (1, 1)  # no system named: counts for every one
        assert breach.unit is not None and "credential stuffing (by siem)" in breach.unit
        bugs_new = await source.read("critical_features", "new")
        bugs_legacy = await source.read("critical_features", "legacy")
        assert (bugs_new.events, bugs_legacy.events) == (1, 0)
        raise_signal(journal, "security_breach", "new", "again", by="siem")
        assert (await source.read("security_breach", "new")).events == 2
        other = await source.read("error_rate", "new")
        assert other.unavailable is not None

    try:
        asyncio.run(scenario())
    finally:
        journal.close()
