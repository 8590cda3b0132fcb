"""The default plan: the seed checklist as a complete changeover plan, as ``init`` writes it.

The plan ships as ``default_plan.yaml`` in this package (comments and all, so the file a user
edits explains itself). ``coverage_table`` counts how each step is done — probe, action, gate or
manual — per stage, for ``status``/``report`` and for the coverage test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from changeover.errors import UsageError
from changeover.plan.model import Plan, Step

DEFAULT_PLAN_RESOURCE = "default_plan.yaml"
PLAN_FILENAME = "changeover.yaml"

#: Steps of the default plan that are not items of the seed checklist, and why they are there.
EXTRA_STEPS: dict[str, str] = {
    "migrate-copy": (
        "the seed never says when the data is copied; the forward capture behind 'Database "
        "replicated and healthy' continues from this bulk copy"
    ),
    "migrate-handoff": (
        "the seed routes 100% to Go and makes Python read-only; moving the write owner between "
        "the two without losing a write is its own step"
    ),
}


def default_plan_text() -> str:
    """The packaged default plan, exactly as ``changeover init`` writes it."""
    resource = resources.files("changeover.plan").joinpath(DEFAULT_PLAN_RESOURCE)
    return resource.read_text(encoding="utf-8")


def default_plan() -> Plan:
    """The packaged default plan, validated (problems would name default_plan.yaml:line:col)."""
    from changeover.plan.load import parse_plan_text

    return parse_plan_text(default_plan_text(), DEFAULT_PLAN_RESOURCE)


def write_default_plan(directory: Path, *, force: bool = False) -> Path:
    """Write ``changeover.yaml`` into ``directory`` (created if missing) and return its path.

    An existing file is kept unless ``force``: a plan holds a team's edits and sign-off ids, and
    overwriting it by accident would lose them.
    """
    directory = Path(directory)
    target = directory / PLAN_FILENAME
    text = default_plan_text()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create directory {directory}: {exc.strerror or exc}") from exc
    if target.is_dir():
        raise UsageError(f"{target} is a directory; remove it or choose another directory")
    if not force:
        try:
            # "x" refuses an existing file atomically, even one created a moment ago.
            with target.open("x", encoding="utf-8") as fp:
                fp.write(text)
        except FileExistsError:
            raise UsageError(
                f"{target} already exists; keep it, or overwrite it with --force"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return target
    _replace(target, text)
    return target


def _replace(target: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a plan behind."""
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(text)
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc


# --- automation coverage ---------------------------------------------------------------------

KINDS = ("probe", "action", "gate", "manual")


@dataclass(frozen=True)
class CoverageRow:
    """How the steps of one stage (or the rollback triggers, or the success criteria) are done."""

    group: str
    probe: int = 0
    action: int = 0
    gate: int = 0
    manual: int = 0

    @property
    def total(self) -> int:
        return self.probe + self.action + self.gate + self.manual

    @property
    def automated(self) -> int:
        """Steps changeover does or checks itself: everything but manual sign-offs."""
        return self.total - self.manual

    def to_json(self) -> dict[str, str | int]:
        return {
            "group": self.group,
            "probe": self.probe,
            "action": self.action,
            "gate": self.gate,
            "manual": self.manual,
            "total": self.total,
        }


TOTAL = "total"


def coverage_table(plan: Plan) -> list[CoverageRow]:
    """One row per stage, then ``rollback`` and ``success-criteria``, then the ``total`` row."""
    rows = [_count(stage.id, stage.steps()) for stage in plan.stages]
    rollback = [*plan.rollback.immediate, *plan.rollback.graceful]
    if rollback:
        rows.append(_count("rollback", rollback))
    if plan.success_criteria:
        rows.append(_count("success-criteria", plan.success_criteria))
    rows.append(CoverageRow(TOTAL, *(sum(getattr(row, kind) for row in rows) for kind in KINDS)))
    return rows


def format_coverage_table(rows: Iterable[CoverageRow]) -> str:
    """The table as aligned plain text (the CLI renders the same rows with rich)."""
    header = ("", *KINDS, TOTAL)
    lines = [header] + [
        (row.group, *(str(getattr(row, k)) for k in KINDS), str(row.total)) for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def _count(group: str, steps: Iterable[Step]) -> CoverageRow:
    counts = dict.fromkeys(KINDS, 0)
    for step in steps:
        counts["probe" if step.kind == "check" else step.kind] += 1
    return CoverageRow(group, **counts)
