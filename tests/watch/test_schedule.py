"""The watch schedule from the plan's watch steps, with an injected clock (no servers or sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from changeover.errors import UsageError
from changeover.plan.default import default_plan
from changeover.plan.load import parse_plan_text
from changeover.plan.model import Plan
from changeover.watch.schedule import CompressedClock, Schedule, watch_settings

ANCHOR = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def hours(*values: float) -> list[datetime]:
    return [ANCHOR + timedelta(hours=h) for h in values]


def default_schedule() -> Schedule:
    return Schedule(watch_settings(default_plan()).rules, ANCHOR)


def test_default_plan_follows_the_seed_30m_for_2h_hourly_to_8h_4_hourly_to_24h_then_daily() -> None:
    times = _first(default_schedule(), 18)
    assert times == hours(
        0, 0.5, 1, 1.5,  # every 30 minutes for 2 hours: 4 rounds
        2, 3, 4, 5, 6, 7,  # hourly for the next 6 hours
        8, 12, 16, 20,  # every 4 hours for the next 16 hours
        24, 48, 72, 96,  # then daily
    )  # fmt: skip


def _first(schedule: Schedule, count: int) -> list[datetime]:
    found = []
    for due in schedule.times():
        found.append(due)
        if len(found) == count:
            break
    return found


def test_default_suite_is_the_post_cutover_stage_escalating_from_on_call_to_manager() -> None:
    settings = watch_settings(default_plan())
    assert settings.stages == ("post-cutover-24h",)
    assert settings.alert_roles == ("on-call", "escalation")
    assert settings.escalate_after == timedelta(minutes=15)
    assert [r.step_id for r in settings.rules] == [
        "watch-every-30m",
        "watch-every-1h",
        "watch-every-4h",
        "daily-review",
    ]


def test_next_and_latest_due_around_rule_boundaries() -> None:
    schedule = default_schedule()
    assert schedule.latest_due(ANCHOR - timedelta(seconds=1)) is None
    assert schedule.next_due(ANCHOR - timedelta(seconds=1)) == ANCHOR
    assert schedule.latest_due(ANCHOR) == ANCHOR
    assert schedule.next_due(ANCHOR) == hours(0.5)[0]
    at = ANCHOR + timedelta(hours=1, minutes=59)
    assert schedule.latest_due(at) == hours(1.5)[0]
    assert schedule.next_due(at) == hours(2)[0]
    at = ANCHOR + timedelta(hours=23)
    assert schedule.latest_due(at) == hours(20)[0]
    assert schedule.next_due(at) == hours(24)[0]
    assert schedule.next_due(ANCHOR + timedelta(days=10, hours=1)) == hours(11 * 24)[0]


def test_missed_rounds_are_those_strictly_between_the_last_done_and_the_one_due() -> None:
    schedule = default_schedule()
    assert schedule.between(hours(1)[0], hours(5)[0]) == hours(1.5, 2, 3, 4)
    assert schedule.between(None, hours(1)[0]) == hours(0, 0.5)
    assert schedule.rule_for(hours(3)[0]).step_id == "watch-every-1h"  # type: ignore[union-attr]
    assert schedule.rule_for(hours(2.5)[0]) is None


def test_a_bounded_schedule_ends() -> None:
    plan = _plan(
        "{id: w1, title: W, action: {watch: {every: 10m, from: 0h, until: 30m}}}",
        "{id: w2, title: W, action: {watch: {every: 1h, from: 30m, until: 2h}}}",
    )
    schedule = Schedule(watch_settings(plan).rules, ANCHOR)
    assert list(schedule.times()) == [ANCHOR + timedelta(minutes=m) for m in (0, 10, 20, 30, 90)]
    assert schedule.next_due(ANCHOR + timedelta(minutes=90)) is None


def test_overlapping_rules_give_each_due_time_once() -> None:
    plan = _plan(
        "{id: w1, title: W, action: {watch: {every: 1h, until: 3h}}}",
        "{id: w2, title: W, action: {watch: {every: 30m, until: 2h}}}",
    )
    schedule = Schedule(watch_settings(plan).rules, ANCHOR)
    assert list(schedule.times()) == hours(0, 0.5, 1, 1.5, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{from: 0h}", "watch needs 'every'"),
        ("{every: soon}", "watch every: expected a duration"),
        ("{every: 0s}", "longer than zero"),
        ("{every: 1h, from: 2h, until: 1h}", "until must come after from"),
        ("{every: 1h, often: yes}", "watch does not know often"),
        ("{every: 1h, alert: [nobody]}", "no contact has the role 'nobody'"),
        ("{every: 1h, stages: [nowhere]}", "no stage 'nowhere'"),
        ("{every: 1h, escalate_after: -5m}", "escalate_after must be longer than zero"),
    ],
)
def test_a_bad_watch_step_is_a_plain_usage_error(params: str, message: str) -> None:
    plan = _plan(f"{{id: w1, title: W, action: {{watch: {params}}}}}")
    with pytest.raises(UsageError, match=message):
        watch_settings(plan)


def test_settings_come_from_any_watch_step_but_must_not_conflict() -> None:
    plan = _plan(
        "{id: w1, title: W, action: {watch: {every: 1h, escalate_after: 2h, alert: lead}}}",
        "{id: w2, title: W, action: {watch: {every: 1d, from: 1d}}}",
    )
    settings = watch_settings(plan)
    assert settings.escalate_after == timedelta(hours=2)
    assert settings.alert_roles == ("lead",)
    plan = _plan(
        "{id: w1, title: W, action: {watch: {every: 1h, escalate_after: 2h}}}",
        "{id: w2, title: W, action: {watch: {every: 1d, escalate_after: 1h}}}",
    )
    with pytest.raises(UsageError, match="different watch escalate_after"):
        watch_settings(plan)


def test_a_plan_without_watch_steps_says_how_to_add_one() -> None:
    plan = _plan("{id: c1, title: C, manual: {role: lead}}")
    with pytest.raises(UsageError, match="no watch steps"):
        watch_settings(plan)


def test_compressed_clock_runs_factor_times_faster_from_its_start() -> None:
    ticks = [100.0]
    clock = CompressedClock(ANCHOR, 3600, monotonic=lambda: ticks[0])
    assert clock.now() == ANCHOR
    ticks[0] = 102.5
    assert clock.now() == ANCHOR + timedelta(hours=2.5)
    assert clock.seconds_until(ANCHOR + timedelta(hours=3.5)) == pytest.approx(1.0)
    assert clock.seconds_until(ANCHOR) == 0.0
    with pytest.raises(UsageError, match="--compress must be positive"):
        CompressedClock(ANCHOR, 0)


def _plan(*steps: str) -> Plan:
    text = (
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}, {role: on-call, title: On-Call}]\n"
        "stages:\n  - id: post\n    title: Post\n    sections:\n      - title: S\n        steps:\n"
        + "".join(f"          - {step}\n" for step in steps)
    )
    return parse_plan_text(text, "t.yaml")
