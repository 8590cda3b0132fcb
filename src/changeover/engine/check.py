"""Run the plan's checks: select steps, run their probes in parallel, journal every result.

A step with several probes passes when each of its required probes passes; its status is the
worst of them (error > fail > warn > pass). Results are journaled as ``check.result`` events
with their evidence, so ``status`` and ``report`` are projections of the journal. A gate step
outside a traffic phase is watched for a window and judged (``engine.gatecheck``), one result per
gate; other steps (manual, action, gates of phases) are not run here: ``status`` shows them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from changeover.engine.gatecheck import DEFAULT_WINDOW_S, Read, check_gate_step, checkable
from changeover.errors import UsageError
from changeover.journal import CHECK_RESULT, Journal
from changeover.metrics.checks import ChecksSource
from changeover.plan.load import LoadedPlan
from changeover.plan.model import ProbeCall, Stage, Step, suggest
from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe

if TYPE_CHECKING:
    from changeover.metrics.registry import Metrics

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
    """The checkable steps chosen for a run: probe steps and gate steps outside phases."""

    steps: list[tuple[Stage | None, Step]] = field(default_factory=list)


def select_steps(
    loaded: LoadedPlan,
    *,
    stage_ids: Iterable[str] = (),
    step_ids: Iterable[str] = (),
    now: datetime | None = None,
) -> Selection:
    """Steps of the given stages and/or ids (all when neither is given); unknown ids are errors.

    A gate step watches the running system after the flip: chosen by its id or stage, or —
    when neither is given — once its stage's window has opened (``now`` against cutover_at).
    """
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
        elif checkable(stage, step):
            assert stage is not None  # checkable gates belong to a stage
            named = bool(stage_ids or step_ids)
            if named or _window_open(loaded, stage, now or datetime.now(UTC)):
                selection.steps.append((stage, step))
    return selection


def _window_open(loaded: LoadedPlan, stage: Stage, now: datetime) -> bool:
    if stage.window is None:
        return True
    return now >= loaded.plan.cutover_at + stage.window.opens


Progress = Callable[[str, str, StepOutcome | None], None]  # (event, step_id, outcome)


async def run_checks(
    loaded: LoadedPlan,
    selection: Selection,
    journal: Journal | None,
    *,
    context: ProbeContext | None = None,
    concurrency: int = 16,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
    gate_window_s: float = DEFAULT_WINDOW_S,
) -> list[StepOutcome]:
    """Run every selected step's probes (bounded concurrency) and gates (each watched for
    ``gate_window_s``, the steps' windows side by side) and journal each step's outcome.

    ``metrics`` serves the gates; by default the plan's sources (``rollout.sources``).
    """
    ctx = context or ProbeContext(loaded.plan.systems, base_dir=loaded.base_dir)
    gate = asyncio.Semaphore(concurrency)
    gated = any(step.kind == "gate" for _, step in selection.steps)
    owned = None
    if gated and metrics is None:
        owned = metrics = _plan_metrics(loaded, journal)
    read: Read | None = metrics.read if metrics is not None else None
    checks = ChecksSource(ctx) if gated else None

    async def one_probe(call: ProbeCall) -> ProbeOutcome:
        async with gate:
            params = call.typed
            result = await run_probe(call.probe, params, ctx)
            return ProbeOutcome(call.probe, params.required, result)

    async def gate_probes(step: Step) -> list[ProbeOutcome]:
        if read is None:
            reason = "gate steps read metrics through the plan's journal; none is open"
            return [ProbeOutcome("gates", True, CheckResult(Status.ERROR, reason))]
        windows = [g.window.total_seconds() for g in step.gates if g.window is not None]
        window_s = max(windows) if windows else gate_window_s
        found = await check_gate_step(step, read, window_s=window_s, checks=checks)
        return [ProbeOutcome(name, step.required, result) for name, result in found]

    async def one_step(stage: Stage | None, step: Step) -> StepOutcome:
        if progress:
            progress("start", step.id, None)
        if step.kind == "gate":
            probes = await gate_probes(step)
        else:
            probes = await asyncio.gather(*(one_probe(call) for call in step.checks))
        outcome = StepOutcome(stage.id if stage else None, step, tuple(probes))
        if journal is not None:
            # A local append takes about a millisecond; doing it on the loop thread keeps the
            # journal's connection on one thread (sqlite3 connections are not shared).
            journal.append(CHECK_RESULT, outcome.to_json())
        if progress:
            progress("done", step.id, outcome)
        return outcome

    try:
        return list(
            await asyncio.gather(*(one_step(stage, step) for stage, step in selection.steps))
        )
    finally:
        if owned is not None:
            await owned.close()


def _plan_metrics(loaded: LoadedPlan, journal: Journal | None) -> Metrics | None:
    """The plan's metric sources, as the rollout controller reads them (signals need the
    journal, so without one there are none)."""
    if journal is None:
        return None
    # imported here: rollout.sources builds on engine.runbook, which builds on this module
    from changeover.engine.runbook import Runbook
    from changeover.rollout.sources import metrics_for

    return metrics_for(Runbook(loaded, journal))


def exit_code(outcomes: Sequence[StepOutcome]) -> int:
    """0 when every required step passed (or warned), 1 when a required step failed."""
    failed = [o for o in outcomes if o.required and not o.status.ok]
    return 1 if failed else 0
