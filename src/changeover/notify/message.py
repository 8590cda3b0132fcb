"""What a notification says: its kind, severity, title, text and evidence, rendered as plain text.

Pure code, no I/O. The evidence is a JSON-able dict; a verdict-shaped entry (``observed``,
``bound``, ``threshold``, ``samples``, as ``Verdict.to_json()`` gives it) is rendered as one
readable line, so a rollback message carries the numbers that caused it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Kind = Literal["phase_started", "phase_passed", "decision_needed", "rollback", "complete", "test"]
Severity = Literal["info", "success", "warning", "failure"]
KINDS: tuple[str, ...] = get_args(Kind)

# What each kind means for the reader when the sender does not say otherwise.
_DEFAULT_SEVERITY: dict[str, Severity] = {
    "phase_started": "info",
    "phase_passed": "success",
    "decision_needed": "warning",
    "rollback": "failure",
    "complete": "success",
    "test": "info",
}
_VERDICT_KEYS = frozenset({"observed", "threshold", "samples"})


@dataclass(frozen=True)
class Notification:
    """One message to every channel; ``id`` ties its delivery attempts together in the journal."""

    kind: Kind
    title: str
    body: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r} (one of {', '.join(KINDS)})")

    @property
    def level(self) -> Severity:
        return self.severity or _DEFAULT_SEVERITY[self.kind]

    def text(self) -> str:
        """The message body: the text, then the evidence, readable without any formatting."""
        parts = [self.body.strip()] if self.body.strip() else []
        if self.evidence:
            parts.append("Evidence:\n" + "\n".join(render_evidence(self.evidence)))
        return "\n\n".join(parts)


def render_evidence(evidence: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """Evidence as indented ``key: value`` lines; verdicts as one line with their numbers."""
    lines: list[str] = []
    for key, value in evidence.items():
        if _is_verdict(value):
            lines.append(f"{indent}{key}: {render_verdict(value)}")
        elif isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines += render_evidence(value, indent + "  ")
        elif isinstance(value, list | tuple) and any(
            _is_verdict(v) or isinstance(v, Mapping) for v in value
        ):
            lines.append(f"{indent}{key}:")
            for item in value:
                if _is_verdict(item):
                    lines.append(f"{indent}  - {render_verdict(item)}")
                elif isinstance(item, Mapping):
                    lines += render_evidence(item, indent + "    ")
                else:
                    lines.append(f"{indent}  - {_scalar(item)}")
        elif isinstance(value, list | tuple):
            lines.append(f"{indent}{key}: {', '.join(_scalar(v) for v in value)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return lines


def render_verdict(verdict: Mapping[str, Any]) -> str:
    """``error-rate fail_immediate: observed 0.1 (bound 0.09–0.11) vs threshold 0.01, 5000
    samples, after 1.2 s — reason``: the numbers an operator needs to trust a rollback."""
    unit = f" {verdict['unit']}" if verdict.get("unit") else ""
    head = " ".join(str(verdict[k]) for k in ("gate", "outcome") if verdict.get(k))
    text = f"{head}: " if head else ""
    text += f"observed {_scalar(verdict.get('observed'))}{unit}"
    bound = verdict.get("bound")
    if isinstance(bound, list | tuple) and len(bound) == 2:
        text += f" (bound {_scalar(bound[0])}–{_scalar(bound[1])})"
    text += f" vs threshold {_scalar(verdict.get('threshold'))}{unit}"
    text += f", {_scalar(verdict.get('samples'))} samples"
    if verdict.get("elapsed_s") is not None:
        text += f", after {_scalar(verdict['elapsed_s'])} s"
    if verdict.get("reason"):
        text += f" — {verdict['reason']}"
    return text


def _is_verdict(value: Any) -> bool:
    return isinstance(value, Mapping) and _VERDICT_KEYS.issubset(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)
