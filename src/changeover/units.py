"""Units people write in plans: durations (``30m``, ``-24h``) and ratios (``80%``).

Each is a pydantic type whose JSON Schema accepts the written form, so editors do not flag it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*([+-])?\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"72h"``, ``"-24h"``, ``"30m"``, ``"1.5s"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            sign = -1 if match.group(1) == "-" else 1
            return timedelta(seconds=sign * float(match.group(2)) * _UNIT_SECONDS[match.group(3)])
    raise ValueError(f"expected a duration like '30m', '2h', '-24h' or '500ms', got {value!r}")


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{sign}{int(seconds // size)}{unit}"
    return f"{sign}{seconds * 1000:g}ms"


def parse_ratio(value: Any) -> float:
    """``"80%"`` → 0.8; a bare number is taken as a fraction (0.8)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                return float(text[:-1]) / 100
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"expected a ratio like '80%' or 0.8, got {value!r}")


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*[+-]?\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$"},
                {"type": "number"},
            ],
            "description": "a duration: 500ms, 30s, 15m, 2h, -24h, 3d, 1w (or seconds)",
        }
    ),
]

Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%?\s*$"},
            ],
            "description": "a ratio: 80% or 0.8",
        }
    ),
]
