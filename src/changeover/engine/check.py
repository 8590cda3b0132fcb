"""Run the plan's checks: select steps, run their probes in parallel, journal every result.

A step with several probes passes when each of its required probes passes; its status is the
worst of them (error > fail > warn > pass). Results are journaled as ``check.result`` events
with their evidence, so ``status`` and ``report`` are projections of the journal. Steps of other
kinds (manual, action, gate) are not run here: ``status`` shows them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from changeover.errors import UsageError
from changeover.journal import CHECK_RESULT, Journal
from changeover.plan.load import LoadedPlan
from changeover.plan.model import ProbeCall, Stage, Step, suggest
from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe

_SEVERITY = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3}


@dataclass(frozen=True)
class ProbeOutcome:
    probe: str
    required: bool
    result: CheckResult

    def to_json(self) -> dict[str, Any]:
        return {"probe": self.probe, "required": self.required, **self.result.to_json()}


@dataclass(frozen=True)
class StepOutcome:
    """The verdict on one step after running its probes."""

    stage_id: str | None
    step: Step
    probes: tuple[ProbeOutcome, ...]

    @property
    def status(self) -> Status:
        """The step's verdict; an optional step's failure is reported as a warning."""
        status = step_status(self.probes)
        if not self.step.required and not status.ok:
            return Status.WARN
        return status

    @property
    def reason(self) -> str:
        if all(p.result.status == Status.PASS for p in self.probes):
            return "; ".join(p.result.reason for p in self.probes)
        worst = max(_SEVERITY[p.result.status] for p in self.probes)
        shown = [p for p in self.probes if _SEVERITY[p.result.status] == worst]
        return "; ".join(f"{p.probe}: {p.result.reason}" for p in shown)

    @property
    def required(self) -> bool:
        return self.step.required

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step.id,
            "stage": self.stage_id,
            "title": self.step.title,
            "status": self.status.value,
            "required": self.required,
            "reason": self.reason,
            "probes": [p.to_json() for p in self.probes],
        }


def step_status(probes: Sequence[ProbeOutcome]) -> Status:
    """Worst status of the required probes; an optional probe's failure only warns."""
    worst = Status.PASS
    for outcome in probes:
        status = outcome.result.status
        if not outcome.required and status in (Status.FAIL, Status.ERROR):
            status = Status.WARN
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


@dataclass
class Selection:
    """The checkable steps chosen for a run (manual, action and gate steps are not run here)."""

    steps: list[tuple[Stage | None, Step]] = field(default_factory=list)


def select_steps(
    loaded: LoadedPlan,
    *,
    stage_ids: Iterable[str] = (),
    step_ids: Iterable[str] = (),
) -> Selection:
    """Steps of the given stages and/or ids (all when neither is given); unknown ids are errors."""
    plan = loaded.plan
    stage_ids, step_ids = list(stage_ids), list(step_ids)
    known_stages = [s.id for s in plan.stages]
    for stage_id in stage_ids:
        if stage_id not in known_stages:
            raise UsageError(
                f"unknown stage {stage_id!r}{suggest(stage_id, known_stages)}; "
                f"stages: {', '.join(known_stages)}"
            )
    known_steps = [s.id for s in plan.all_steps()]
    for step_id in step_ids:
        if step_id not in known_steps:
            raise UsageError(f"unknown step {step_id!r}{suggest(step_id, known_steps)}")

    selection = Selection()
    for _, stage, step in plan.located_steps():
        chosen = (not stage_ids and not step_ids) or step.id in step_ids
        if stage is not None and stage.id in stage_ids:
            chosen = True
        if not chosen:
            continue
        if step.kind == "check":
            selection.steps.append((stage, step))
    return selection


Progress = Callable[[str, str, StepOutcome | None], None]  # (event, step_id, outcome)


async def run_checks(
    loaded: LoadedPlan,
    selection: Selection,
    journal: Journal | None,
    *,
    context: ProbeContext | None = None,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> list[StepOutcome]:
    """Run every selected step's probes (bounded concurrency) and journal each step's outcome."""
    ctx = context or ProbeContext(loaded.plan.systems, base_dir=loaded.base_dir)
    gate = asyncio.Semaphore(concurrency)

    async def one_probe(call: ProbeCall) -> ProbeOutcome:
        async with gate:
            params = call.typed
            result = await run_probe(call.probe, params, ctx)
            return ProbeOutcome(call.probe, params.required, result)

    async def one_step(stage: Stage | None, step: Step) -> StepOutcome:
        if progress:
            progress("start", step.id, None)
        probes = await asyncio.gather(*(one_probe(call) for call in step.checks))
        outcome = StepOutcome(stage.id if stage else None, step, tuple(probes))
        if journal is not None:
            # A local append takes about a millisecond; doing it on the loop thread keeps the
            # journal's connection on one thread (sqlite3 connections are not shared).
            journal.append(CHECK_RESULT, outcome.to_json())
        if progress:
            progress("done", step.id, outcome)
        return outcome

    return list(await asyncio.gather(*(one_step(stage, step) for stage, step in selection.steps)))


def exit_code(outcomes: Sequence[StepOutcome]) -> int:
    """0 when every required step passed (or warned), 1 when a required step failed."""
    failed = [o for o in outcomes if o.required and not o.status.ok]
    return 1 if failed else 0
