"""The credential plan: every secret reference a plan makes, where it is used, never its value.

A reference is a ``${ENV}`` name (with or without a default) or a ``{file: path}``; the walk
covers the journal, systems, notification channels and every step's probe, action and gate
parameters. Nothing is resolved: the environment and the files are not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from changeover.documents.shellwords import PlanWords, Word
from changeover.plan.model import Plan
from changeover.plan.secretref import FileRef


@dataclass(frozen=True)
class Reference:
    kind: Literal["env", "file"]
    name: str  # the variable's name, or the file's absolute path
    has_default: bool  # ${NAME:-default}: the plan works without it
    used_at: tuple[str, ...]


def secret_references(plan: Plan, base: Path | None = None) -> list[Reference]:
    """Every reference of the plan, grouped by variable or file, in order of first use."""
    found: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    for where, kind, name, has_default in _walk_plan(plan, base):
        default, places = found.setdefault((kind, name), (has_default, []))
        found[(kind, name)] = (default and has_default, places)
        if where not in places:
            places.append(where)
    return [
        Reference(kind, name, default, tuple(places))  # type: ignore[arg-type]
        for (kind, name), (default, places) in found.items()
    ]


Found = tuple[str, str, str, bool]  # where, kind, name, has_default


def _walk_plan(plan: Plan, base: Path | None) -> Iterator[Found]:
    words = PlanWords(plan, base)
    if plan.journal is not None:
        yield from _walk(plan.journal, "journal", words)
    for name, system in plan.systems.items():
        yield from _walk(system, f"systems.{name}", words)
    for index, channel in enumerate(plan.notify):
        yield from _walk(channel, f"notify[{index}]", words)
    for _, _, step in plan.located_steps():
        for call in step.checks:
            yield from _walk(call.params, f"step {step.id}: {call.probe}", words)
        if step.action is not None:
            yield from _walk(step.action.params, f"step {step.id}: {step.action.action}", words)
        for gate in step.gates:
            for call in gate.checks:
                yield from _walk(call.params, f"step {step.id}: {call.probe}", words)


def _walk(value: Any, where: str, words: PlanWords) -> Iterator[Found]:
    if isinstance(value, FileRef) or (
        isinstance(value, dict) and set(value) == {"file"} and isinstance(value["file"], str)
    ):
        file = value.file if isinstance(value, FileRef) else value["file"]
        yield where, "file", words.path(file), False
    elif isinstance(value, str):
        for kind, part in Word.of(value).parts:
            if kind == "ref":
                name, default_given, _ = part[2:-1].partition(":-")
                yield where, "env", name, bool(default_given)
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            yield from _walk(getattr(value, field), f"{where}.{field}", words)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{where}.{key}", words)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            named = getattr(item, "name", None)
            yield from _walk(item, f"{where}.{named or index}", words)
