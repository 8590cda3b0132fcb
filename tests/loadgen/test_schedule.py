"""The schedule's arithmetic: due times, how many are due, shares that interleave exactly."""

from __future__ import annotations

import pytest

from changeover.errors import UsageError
from changeover.loadgen.schedule import Schedule, default_processes, split


def test_request_i_is_due_at_i_over_rate() -> None:
    share = Schedule(500, 2).share(0, 1)
    assert share.size == 1000
    assert share.due(0) == 0.0
    assert share.due(1) == pytest.approx(0.002)
    assert share.due(999) == pytest.approx(1.998)


def test_due_by_counts_requests_whose_time_has_come_including_exactly_now() -> None:
    share = Schedule(1000, 1).share(0, 1)
    assert share.due_by(-0.5) == 0
    assert share.due_by(0.0) == 1
    assert share.due_by(0.0009) == 1
    assert share.due_by(0.001) == 2
    assert share.due_by(0.5) == 501
    assert share.due_by(10) == 1000  # never more than the schedule holds


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shares_partition_the_schedule_and_keep_every_due_time(count: int) -> None:
    schedule = Schedule(997, 1.3)
    seen = []
    for index in range(count):
        share = schedule.share(index, count)
        for j in range(share.size):
            number = share.global_index(j)
            assert share.due(j) == pytest.approx(number / schedule.rate)
            seen.append(number)
    assert sorted(seen) == list(range(schedule.total))


@pytest.mark.parametrize("elapsed", [0.0, 0.0031, 0.25, 0.9999, 1.0, 5.0])
def test_shares_due_by_add_up_to_the_whole_schedule(elapsed: float) -> None:
    schedule = Schedule(1000, 1)
    whole = schedule.share(0, 1).due_by(elapsed)
    assert sum(schedule.share(k, 3).due_by(elapsed) for k in range(3)) == whole


def test_a_share_beyond_the_schedule_is_empty() -> None:
    schedule = Schedule(1, 1)  # one request
    assert schedule.share(1, 2).size == 0
    assert schedule.share(1, 2).due_by(5) == 0


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (-5, 1), (100, 0), (1, 0.5)])
def test_impossible_schedules_are_usage_errors(rate: float, duration: float) -> None:
    with pytest.raises(UsageError):
        Schedule(rate, duration)


def test_one_process_below_three_thousand_per_second_else_the_cores() -> None:
    assert default_processes(500, 8) == 1
    assert default_processes(2999, 8) == 1
    assert default_processes(5000, 8) == 8
    assert default_processes(5000, 0) == 1


def test_split_spreads_connections_evenly() -> None:
    assert split(256, 2) == [128, 128]
    assert split(5, 3) == [2, 2, 1]
    assert sum(split(7, 4)) == 7
