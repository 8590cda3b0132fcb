"""Durations and ratios as people write them in plans."""

from __future__ import annotations

from datetime import timedelta

import pytest

from changeover.units import format_duration, parse_duration, parse_ratio


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72h", timedelta(hours=72)),
        ("-24h", timedelta(hours=-24)),
        ("30m", timedelta(minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        ("2d", timedelta(days=2)),
        (90, timedelta(seconds=90)),
    ],
)
def test_parses_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["30 minutes", "h", "", "1y", True, None])
def test_rejects_unclear_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


def test_formats_in_the_largest_whole_unit_and_round_trips() -> None:
    assert format_duration(parse_duration("72h")) == "3d"
    assert format_duration(parse_duration("90m")) == "90m"
    for text in ("-24h", "30m", "500ms", "1w", "1.5s"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_ratios() -> None:
    assert parse_ratio("80%") == pytest.approx(0.8)
    assert parse_ratio(0.25) == 0.25
    with pytest.raises(ValueError, match="expected a ratio"):
        parse_ratio("eighty")
