"""The library entry point: a loaded plan plus its journal, and the things one does with them.

``Runbook.open(path)`` loads and validates the plan and opens its journal; ``check``,
``signoff``, ``note``, ``state`` and ``verify`` are what the CLI commands call. Everything an
operator does is journaled with who did it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from changeover.engine.check import Progress, StepOutcome, run_checks, select_steps
from changeover.engine.state import RunbookState, project
from changeover.errors import UsageError
from changeover.journal import NOTE, PLAN_LOADED, SIGNOFF, Journal, open_journal
from changeover.plan.load import LoadedPlan, load_plan
from changeover.plan.model import suggest
from changeover.plan.secretref import resolve_ref
from changeover.probes.base import ProbeContext


class Runbook:
    def __init__(self, loaded: LoadedPlan, journal: Journal) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.journal = journal

    @classmethod
    def open(cls, path: Path | str) -> Runbook:
        loaded = load_plan(path)
        spec = None
        if loaded.plan.journal is not None:
            spec = resolve_ref(loaded.plan.journal, base=loaded.base_dir, what="journal")
        journal = open_journal(spec, loaded.base_dir)
        runbook = cls(loaded, journal)
        runbook._record_plan_version()
        return runbook

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> Runbook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _record_plan_version(self) -> None:
        """Journal the plan's hash whenever it changed, so results can be tied to a plan text."""
        last = self.journal.latest(PLAN_LOADED)
        digest = self.loaded.text_sha256
        if last is None or last.payload.get("sha256") != digest:
            self.journal.append(
                PLAN_LOADED,
                {"sha256": digest, "path": str(self.loaded.path), "name": self.plan.name},
            )

    def check(
        self,
        *,
        stage_ids: Iterable[str] = (),
        step_ids: Iterable[str] = (),
        concurrency: int = 16,
        progress: Progress | None = None,
        context: ProbeContext | None = None,
    ) -> list[StepOutcome]:
        selection = select_steps(self.loaded, stage_ids=stage_ids, step_ids=step_ids)
        return asyncio.run(
            run_checks(
                self.loaded,
                selection,
                self.journal,
                context=context,
                concurrency=concurrency,
                progress=progress,
            )
        )

    def signoff(self, step_id: str, *, by: str, note: str | None = None) -> Any:
        known = [s.id for s in self.plan.all_steps()]
        if step_id not in known:
            raise UsageError(f"unknown step {step_id!r}{suggest(step_id, known)}")
        if not by.strip():
            raise UsageError("--by needs the name of the person signing off")
        payload: dict[str, Any] = {"step": step_id, "by": by}
        if note:
            payload["note"] = note
        return self.journal.append(SIGNOFF, payload, actor=by)

    def note(self, text: str, *, by: str | None = None) -> Any:
        return self.journal.append(NOTE, {"text": text}, actor=by)

    def state(self, now: datetime | None = None) -> RunbookState:
        return project(self.plan, self.journal.events(), now or datetime.now(UTC))
