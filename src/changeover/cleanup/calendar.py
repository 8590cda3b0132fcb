"""The legacy system's decommission schedule as an iCalendar file (RFC 5545) any calendar imports.

One VEVENT per step, dated relative to the cutover. UIDs derive from the plan, the system and
the step title, so importing a regenerated file updates the events instead of doubling them.
Text values are escaped (backslash, semicolon, comma, newline) and content lines folded at 75
octets without splitting a UTF-8 character; lines end in CRLF.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from changeover.errors import UsageError
from changeover.units import parse_duration

LINE_OCTETS = 75
PRODID = "-//changeover//decommission schedule//EN"
EVENT_LENGTH = timedelta(hours=1)


@dataclass(frozen=True)
class DecommissionStep:
    title: str
    after: timedelta  # after the cutover
    description: str = ""


def default_steps(system: str) -> list[DecommissionStep]:
    return [
        DecommissionStep(
            f"{system}: confirm it takes no traffic and no writes",
            timedelta(days=7),
            "Router weights at 0, its logs quiet, its write access revoked.",
        ),
        DecommissionStep(
            f"{system}: stop the application",
            timedelta(days=14),
            "Stop the service and keep the machines for a quick restart.",
        ),
        DecommissionStep(
            f"{system}: archive its SQLite backups and remove the live database",
            timedelta(days=30),
            "Keep the archived backups (checksums verified); remove the live files.",
        ),
        DecommissionStep(
            f"{system}: decommission its servers",
            timedelta(days=90),
            "Release the machines, DNS names, credentials and monitoring.",
        ),
    ]


def parse_steps(value: Any, system: str) -> list[DecommissionStep]:
    """The plan's ``steps`` (``[{title, after: 14d, description}]``), or the default four."""
    if value is None:
        return default_steps(system)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise UsageError("decommission: steps must be a list of {title, after, description}")
    steps = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, Mapping) or not item.get("title") or "after" not in item:
            raise UsageError(
                f"decommission: step {index} needs a title and an after (e.g. after: 14d)"
            )
        try:
            after = parse_duration(item["after"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"decommission: step {index}: after: {exc}") from exc
        steps.append(DecommissionStep(str(item["title"]), after, str(item.get("description", ""))))
    return steps


def escape_text(value: str) -> str:
    """RFC 5545 TEXT: backslash, semicolon and comma escaped, newlines as ``\\n``."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def fold(line: str) -> str:
    """One content line folded into pieces of at most 75 octets (continuations start with a
    space, which counts), never inside a UTF-8 character; CRLF after each piece."""
    pieces: list[str] = []
    current, size, limit = "", 0, LINE_OCTETS
    for char in line:
        octets = len(char.encode("utf-8"))
        if size + octets > limit:
            pieces.append(current)
            current, size, limit = "", 0, LINE_OCTETS - 1
        current += char
        size += octets
    pieces.append(current)
    return "\r\n ".join(pieces) + "\r\n"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def render_ics(
    steps: Sequence[DecommissionStep],
    *,
    cutover: datetime,
    now: datetime,
    uid_seed: str,
) -> str:
    """The calendar text (CRLF line endings) with one one-hour VEVENT per step."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
    ]
    for step in steps:
        start = cutover + step.after
        uid = hashlib.sha256(f"{uid_seed}\0{step.title}".encode()).hexdigest()[:32]
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid}@changeover",
            f"DTSTAMP:{_utc(now)}",
            f"DTSTART:{_utc(start)}",
            f"DTEND:{_utc(start + EVENT_LENGTH)}",
            f"SUMMARY:{escape_text(step.title)}",
        ]
        if step.description:
            lines.append(f"DESCRIPTION:{escape_text(step.description)}")
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "".join(fold(line) for line in lines)


def parse_cutover(value: Any, now: datetime) -> datetime:
    """``cutover`` from the plan (ISO date or date-time; naive means UTC), default ``now``."""
    if value is None:
        return now
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise UsageError(
                f"decommission: cutover must be an ISO date or time, e.g. 2026-12-01T02:00Z, "
                f"not {value!r}"
            ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
