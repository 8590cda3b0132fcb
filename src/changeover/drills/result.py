"""A drill's outcome and its record: steps journaled as they happen, one result at the end.

``DrillLog`` writes ``drill.step`` events (what was done, how long it took, what was seen) and
the final ``drill.result`` {drill, passed, numbers, reasons}; ``render`` prints the table an
operator reads. The verdicts themselves are pure functions in the drill modules.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from rich.table import Table

from changeover.errors import UsageError
from changeover.journal import Journal

M = TypeVar("M", bound=BaseModel)
DRILL_STEP = "drill.step"
DRILL_RESULT = "drill.result"


class DrillFailed(Exception):
    """A drill cannot go on (a step's precondition or action failed); ``str()`` says why."""


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DrillResult:
    drill: str  # failover | rollback
    passed: bool
    numbers: dict[str, Any]
    reasons: list[str]  # why it failed (empty when passed)
    notes: list[str] = field(default_factory=list)  # what the operator should know either way
    steps: list[Step] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "drill": self.drill,
            "passed": self.passed,
            "numbers": self.numbers,
            "reasons": self.reasons,
            "notes": self.notes,
            "steps": [
                {"step": s.name, "ok": s.ok, "seconds": round(s.seconds, 3), "detail": s.detail}
                for s in self.steps
            ],
        }


class DrillLog:
    """The steps of one drill, each journaled as it ends (an interrupted drill leaves a trail)."""

    def __init__(self, journal: Journal, drill: str, actor: str) -> None:
        self.journal = journal
        self.drill = drill
        self.actor = actor
        self.steps: list[Step] = []

    def step(self, name: str, started: float, detail: Mapping[str, Any], ok: bool = True) -> None:
        step = Step(name, ok, time.monotonic() - started, dict(detail))
        self.steps.append(step)
        payload = {"drill": self.drill, "step": name, "ok": ok, "seconds": round(step.seconds, 3)}
        self.journal.append(DRILL_STEP, {**payload, "detail": step.detail}, actor=self.actor)

    def finish(
        self, numbers: dict[str, Any], reasons: Sequence[str], notes: Sequence[str] = ()
    ) -> DrillResult:
        result = DrillResult(
            self.drill, not reasons, numbers, list(reasons), list(notes), list(self.steps)
        )
        payload = {k: v for k, v in result.to_json().items() if k != "steps"}
        self.journal.append(DRILL_RESULT, payload, actor=self.actor)
        return result


def parse_params(model: type[M], params: Mapping[str, Any], action: str) -> M:
    """The drill's parameters, validated; a mistake is one plain line naming the parameter."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "parameters"
        raise UsageError(f"{action}: {where}: {first['msg']}") from exc


def render(result: DrillResult) -> Table:
    """The drill as a table: each step, then each number, then the verdict and its reasons."""
    verdict = "PASSED" if result.passed else "FAILED"
    table = Table(title=f"drill {result.drill}: {verdict}", title_justify="left")
    table.add_column("step / number")
    table.add_column("ok")
    table.add_column("value")
    for step in result.steps:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in step.detail.items())
        table.add_row(step.name, "yes" if step.ok else "NO", f"{step.seconds:.2f}s  {shown}")
    table.add_section()
    for name, value in result.numbers.items():
        table.add_row(name, "", _short(value))
    table.add_section()
    for reason in result.reasons:
        table.add_row("FAILED", "NO", reason)
    for note in result.notes:
        table.add_row("note", "", note)
    return table


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
