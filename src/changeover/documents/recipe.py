"""What the runbook says about one probe, action or gate: what runs it, and how to do it by hand.

A ``Recipe`` is plain data: ``automated`` is one Markdown line (the exact probe, action or
condition in words), ``commands`` are shell lines to type (``#`` lines say what to expect), and
``notes`` are prose for what cannot be typed. ``changeover.documents.runbook`` lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from changeover.units import format_duration


@dataclass(frozen=True)
class Recipe:
    automated: str
    commands: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def shown(value: Any) -> str:
    """A parameter value as the plan would write it: ``30m``, ``a, b``, ``true``."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(shown(v) for v in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def code(text: str) -> str:
    """Inline Markdown code that survives backticks inside ``text``."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
