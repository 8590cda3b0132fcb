"""The decommission calendar: parsed back by a small RFC 5545 reader, every line within 75
octets and CRLF-terminated, text escaped, UIDs stable across regenerations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from changeover.cleanup.calendar import (
    DecommissionStep,
    default_steps,
    escape_text,
    fold,
    parse_cutover,
    parse_steps,
    render_ics,
)
from changeover.errors import UsageError

CUTOVER = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def unescape(value: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars)
            out.append("\n" if nxt in "nN" else nxt)
        else:
            out.append(char)
    return "".join(out)


def parse_ics(text: str) -> list[dict[str, str]]:
    """VEVENTs as {property: value}: lines unfolded, TEXT unescaped; asserts the basics."""
    assert text.endswith("\r\n")
    raw = text.encode("utf-8").split(b"\r\n")[:-1]
    for line in raw:
        assert len(line) <= 75, line
        assert b"\n" not in line and b"\r" not in line
    lines: list[str] = []
    for line in (r.decode("utf-8") for r in raw):  # every piece is valid UTF-8 on its own
        if line.startswith((" ", "\t")):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    assert "VERSION:2.0" in lines and any(line.startswith("PRODID:") for line in lines)
    events: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in lines:
        name, _, value = line.partition(":")
        if line == "BEGIN:VEVENT":
            current = {}
        elif line == "END:VEVENT":
            assert current is not None
            events.append(current)
            current = None
        elif current is not None:
            current[name.split(";")[0]] = unescape(value)
    return events


def test_default_steps_parse_back_with_dates_relative_to_the_cutover() -> None:
    text = render_ics(default_steps("legacy"), cutover=CUTOVER, now=NOW, uid_seed="plan")
    events = parse_ics(text)

    assert [e["DTSTART"] for e in events] == [
        "20261208T020000Z",
        "20261215T020000Z",
        "20261231T020000Z",
        "20270301T020000Z",
    ]
    for event in events:
        for required in ("UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY"):
            assert event[required]
        assert event["DTSTAMP"] == "20261127T040000Z"
        assert event["UID"].endswith("@changeover")
    assert len({e["UID"] for e in events}) == 4
    assert events[1]["SUMMARY"] == "legacy: stop the application"


def test_special_characters_and_long_text_survive_escaping_and_folding() -> None:
    description = "Stop it; then, carefully:\nback\\slash — " + "é" * 120
    step = DecommissionStep("legacy, app; final", timedelta(days=3), description)
    events = parse_ics(render_ics([step], cutover=CUTOVER, now=NOW, uid_seed="p"))

    assert events[0]["SUMMARY"] == "legacy, app; final"
    assert events[0]["DESCRIPTION"] == description


def test_uids_are_stable_when_regenerated_and_differ_between_plans() -> None:
    first = parse_ics(render_ics(default_steps("legacy"), cutover=CUTOVER, now=NOW, uid_seed="a"))
    later = parse_ics(
        render_ics(
            default_steps("legacy"),
            cutover=CUTOVER + timedelta(days=2),
            now=NOW + timedelta(hours=5),
            uid_seed="a",
        )
    )
    other = parse_ics(render_ics(default_steps("legacy"), cutover=CUTOVER, now=NOW, uid_seed="b"))
    assert [e["UID"] for e in first] == [e["UID"] for e in later]
    assert not {e["UID"] for e in first} & {e["UID"] for e in other}


def test_escape_and_fold_rules() -> None:
    assert escape_text("a\\b;c,d\ne") == "a\\\\b\\;c\\,d\\ne"
    folded = fold("X" * 200)
    pieces = folded.split("\r\n")[:-1]
    assert [len(p) for p in pieces] == [75, 75, 52] and pieces[1].startswith(" ")
    assert fold("short") == "short\r\n"


def test_plan_steps_and_cutover_are_validated() -> None:
    steps = parse_steps([{"title": "Stop", "after": "14d"}], "legacy")
    assert steps == [DecommissionStep("Stop", timedelta(days=14))]
    with pytest.raises(UsageError, match="step 1 needs a title and an after"):
        parse_steps([{"title": "Stop"}], "legacy")
    with pytest.raises(UsageError, match="steps must be a list"):
        parse_steps("stop it", "legacy")
    assert parse_cutover("2026-12-01T02:00:00Z", NOW) == CUTOVER
    assert parse_cutover("2026-12-01", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_cutover(None, NOW) == NOW
    with pytest.raises(UsageError, match="cutover must be an ISO date"):
        parse_cutover("next tuesday", NOW)
