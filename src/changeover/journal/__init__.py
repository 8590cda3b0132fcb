"""The journal: changeover's append-only, hash-chained event log and single source of truth.

Status, dashboard and reports are projections of it. ``open_journal`` picks the store (SQLite
next to the plan by default, or PostgreSQL); every store implements the ``Journal`` protocol.
"""

from changeover.journal.chain import GENESIS_HASH, Head, VerifyResult
from changeover.journal.events import (
    ACTION_INTENT,
    ACTION_OUTCOME,
    CHECK_RESULT,
    NOTE,
    PLAN_LOADED,
    SIGNOFF,
    Event,
    read_export,
)
from changeover.journal.store import Journal, open_journal

__all__ = [
    "ACTION_INTENT",
    "ACTION_OUTCOME",
    "CHECK_RESULT",
    "GENESIS_HASH",
    "NOTE",
    "PLAN_LOADED",
    "SIGNOFF",
    "Event",
    "Head",
    "Journal",
    "VerifyResult",
    "open_journal",
    "read_export",
]
