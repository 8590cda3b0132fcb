"""A ``Report``: everything the renderers print, made from a plan and its journal's events.

``build_report`` is pure (events in, report out); ``make_report`` reads a runbook's journal,
verifies its hash chain and builds; ``read_archive`` reads a ``changeover journal export`` file
instead, so a report can be made again from the archived logs after the servers are gone. A
missing or empty journal is a plain error, never an empty report that looks like a result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changeover.engine.state import RunbookState, project
from changeover.errors import JournalError, UsageError
from changeover.journal import PLAN_LOADED, Event, read_export
from changeover.journal.chain import Head, StoredRow, VerifyResult, canonical_json, verify_chain
from changeover.plan.model import Plan
from changeover.report.criteria import Criterion, Status, evaluate
from changeover.report.series import Chart, charts
from changeover.report.timeline import Timeline, fold

if TYPE_CHECKING:
    from changeover.engine.runbook import Runbook

#: Checklist steps about the report's own afterlife: "Archive cutover logs", "Document any
#: issues found", "Update runbooks with lessons learned" (the default plan's ids).
HOUSEKEEPING = ("archive-cutover-logs", "document-issues", "update-runbooks")


@dataclass(frozen=True)
class JournalInfo:
    location: str
    events: int
    head_hash: str
    ok: bool
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "events": self.events,
            "head_hash": self.head_hash,
            "chain_ok": self.ok,
            "problem": self.problem,
        }


@dataclass
class Report:
    plan: Plan
    made_at: datetime
    journal: JournalInfo
    state: RunbookState
    timeline: Timeline
    criteria: list[Criterion]
    charts: list[Chart]

    @property
    def outcome(self) -> str:
        return self.timeline.outcome

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.criteria if c.status is s) for s in Status}

    def housekeeping(self) -> list[dict[str, Any]]:
        found = []
        for step_id in HOUSEKEEPING:
            try:
                state = self.state.by_id(step_id)
            except KeyError:
                continue
            found.append({"id": step_id, "title": state.step.title, "state": state.state.value})
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.name,
            "cutover_at": self.plan.cutover_at.isoformat(),
            "made_at": self.made_at.isoformat(timespec="seconds"),
            "outcome": self.outcome,
            "journal": self.journal.to_json(),
            "criteria_summary": self.counts(),
            "criteria": [c.to_json() for c in self.criteria],
            "timeline": self.timeline.to_json(),
            "charts": [c.to_json() for c in self.charts],
            "housekeeping": self.housekeeping(),
            "notes": self.state.notes,
            "runbook": self.state.to_json(),
        }


def build_report(
    plan: Plan, events: Iterable[Event], *, journal: JournalInfo, now: datetime | None = None
) -> Report:
    events = list(events)
    made_at = now or datetime.now(UTC)
    state = project(plan, events, made_at)
    timeline = fold(events)
    return Report(
        plan=plan,
        made_at=made_at,
        journal=journal,
        state=state,
        timeline=timeline,
        criteria=evaluate(plan, state, timeline),
        charts=charts(timeline),
    )


def make_report(runbook: Runbook, *, now: datetime | None = None) -> Report:
    """The report of a runbook's journal, its chain verified (a broken chain is reported)."""
    verified = runbook.journal.verify()
    events = list(runbook.journal.events())
    _refuse_empty(events, runbook.journal.location)
    info = _info(runbook.journal.location, verified)
    return build_report(runbook.plan, events, journal=info, now=now)


def read_archive(path: Path) -> tuple[list[Event], JournalInfo]:
    """The events of a ``changeover journal export`` file, with its chain verified."""
    try:
        with path.open(encoding="utf-8") as fp:
            events = list(read_export(fp))
    except FileNotFoundError as exc:
        raise UsageError(
            f"no journal export at {path}: make one with 'changeover journal export -o {path}'"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"cannot read the journal export {path}: {exc}") from exc
    _refuse_empty(events, str(path))
    rows = [
        StoredRow(e.seq, e.ts, e.kind, e.actor, canonical_json(e.payload), e.prev_hash, e.hash)
        for e in events
    ]
    # An export has no head record: its last event stands in for it, so a cut-off tail is not
    # detected here — the head hash printed in the report is what to compare with the original.
    head = Head(events[-1].seq, events[-1].hash)
    return events, _info(str(path), verify_chain(rows, head))


def load_report(plan: Path, *, journal: Path | None = None, now: datetime | None = None) -> Report:
    """The report of a plan's journal — or of ``journal``, an export of it — for the CLI."""
    from changeover.engine.runbook import Runbook
    from changeover.plan.load import load_plan
    from changeover.plan.secretref import resolve_ref

    loaded = load_plan(plan)
    if journal is not None:
        events, info = read_archive(journal)
        return build_report(loaded.plan, events, journal=info, now=now)
    spec = None
    if loaded.plan.journal is not None:
        spec = resolve_ref(loaded.plan.journal, base=loaded.base_dir, what="journal")
    missing = missing_journal(loaded.base_dir, spec)
    if missing is not None:
        raise UsageError(
            f"no journal at {missing}: nothing was checked, signed off or run with {plan} yet — "
            "run 'changeover check' or 'changeover run' first, point --plan at the plan the "
            "cutover used, or --journal at an export of its journal"
        )
    with Runbook.open(plan) as runbook:
        return make_report(runbook, now=now)


def missing_journal(base: Path, journal_spec: str | None) -> Path | None:
    """The SQLite file a plan's journal would be, when it does not exist yet (None otherwise).

    Checked before the runbook is opened: opening creates an empty journal, and a report of
    an empty journal would look like a night where nothing happened.
    """
    if journal_spec is None or not journal_spec.strip():
        path = base / ".changeover" / "journal.db"
    elif journal_spec.strip().startswith("sqlite:"):
        rest = journal_spec.strip().removeprefix("sqlite:").removeprefix("//")
        path = Path(rest).expanduser() if rest else base / ".changeover" / "journal.db"
        path = path if path.is_absolute() else base / path
    else:
        return None  # a PostgreSQL journal: opened, then refused if empty
    return None if path.exists() else path


def _refuse_empty(events: list[Event], where: str) -> None:
    if all(e.kind == PLAN_LOADED for e in events):
        raise UsageError(
            f"the journal at {where} has nothing to report: no check, sign-off, action or "
            "rollout event yet (run 'changeover check' or 'changeover run' first)"
        )


def _info(location: str, verified: VerifyResult) -> JournalInfo:
    return JournalInfo(location, verified.count, verified.head_hash, verified.ok, verified.problem)
