"""Results: HDR histograms merged across processes, SLOs parsed and judged, late/missed fail."""

from __future__ import annotations

from collections import Counter

import pytest

from changeover.errors import UsageError
from changeover.loadgen.result import (
    LoadResult,
    Slo,
    Tally,
    judge,
    new_histogram,
    parse_slos,
    record_seconds,
)


def _tally(latencies_ms: list[float], **counts: int) -> Tally:
    tally = Tally(**counts)
    for ms in latencies_ms:
        record_seconds(tally.latency, ms / 1000)
    tally.answered = tally.answered or len(latencies_ms)
    tally.sent = tally.sent or tally.answered
    tally.scheduled = tally.scheduled or tally.sent
    tally.statuses = tally.statuses or Counter({200: tally.answered})
    return tally


def _result(tally: Tally, window: float = 1.0) -> LoadResult:
    return LoadResult("http://127.0.0.1/", 100, 1.0, window, 1, tally)


def test_merged_histograms_equal_one_histogram_of_all_values() -> None:
    first = [float(v) for v in range(1, 500)]
    second = [float(v) for v in range(400, 2000, 3)]
    parts = [Tally.from_wire(_tally(first).to_wire()), Tally.from_wire(_tally(second).to_wire())]
    merged = Tally.merge(parts)
    whole = new_histogram()
    for ms in first + second:
        record_seconds(whole, ms / 1000)
    assert merged.latency.get_total_count() == len(first) + len(second)
    for pct in (50, 90, 99, 99.9):
        assert merged.latency.get_value_at_percentile(pct) == whole.get_value_at_percentile(pct)
    assert merged.answered == len(first) + len(second)
    assert merged.statuses == Counter({200: len(first) + len(second)})


def test_merging_sums_every_counter_and_failure_reason() -> None:
    a = Tally(scheduled=10, sent=9, answered=8, late=1, missed=1, connections=2, cpu_wait=0.5)
    a.failures["connection reset by the server"] = 1
    b = Tally(scheduled=5, sent=5, answered=5, connections=1, statuses=Counter({503: 5}))
    merged = Tally.merge([a, b])
    assert (merged.scheduled, merged.sent, merged.answered) == (15, 14, 13)
    assert (merged.late, merged.missed, merged.connections) == (1, 1, 3)
    assert merged.cpu_wait == 0.5
    assert merged.errors == 6  # five 5xx answers and one request without an answer


def test_values_beyond_the_range_are_clamped_not_dropped() -> None:
    histogram = new_histogram()
    record_seconds(histogram, 3600)
    record_seconds(histogram, -1)
    assert histogram.get_total_count() == 2


def test_slos_parse_durations_percentages_and_rates() -> None:
    slos = parse_slos("p95<100ms, p99 <= 1.5s,max<2s,errors<1%,rate>4900,p50<0.5ms")
    assert [(s.metric, s.op, s.threshold) for s in slos[:5]] == [
        ("p95", "<", 100.0),
        ("p99", "<=", 1500.0),
        ("max", "<", 2000.0),
        ("errors", "<", 1.0),
        ("rate", ">", 4900.0),
    ]
    assert slos[5].threshold == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p95<abc", "expected a duration"),
        ("p97<100ms", "METRIC one of"),
        ("errors<lots", "percentage"),
        ("rate>fast", "requests/s"),
        ("p95=100ms", "expected METRIC<VALUE"),
        (" , ", "is empty"),
    ],
)
def test_bad_slos_are_usage_errors_with_a_plain_message(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_slos(text)


def test_judge_passes_and_fails_each_slo_with_its_actual_value() -> None:
    tally = _tally([1.0] * 98 + [300.0] * 2)
    tally.statuses = Counter({200: 99, 500: 1})
    verdict = judge(_result(tally), parse_slos("p95<10ms,p99<100ms,errors<0.5%,rate>=100"))
    assert [v.passed for v in verdict.slos] == [True, False, False, True]
    assert verdict.slos[1].actual == pytest.approx(300, rel=0.01)
    assert verdict.slos[2].actual == pytest.approx(1.0)
    assert not verdict.passed
    assert any("p99<100ms failed" in r for r in verdict.reasons)


def test_late_or_missed_sends_fail_a_run_even_without_slos() -> None:
    assert judge(_result(_tally([1.0] * 10)), []).passed
    late = judge(_result(_tally([1.0] * 10, late=3)), [])
    assert not late.passed and "3 requests were sent more than 10 ms after" in late.reasons[0]
    missed = judge(_result(_tally([1.0] * 10, missed=2, scheduled=12)), [])
    assert not missed.passed and "2 due requests were never sent" in missed.reasons[0]


def test_late_sends_say_whether_connections_or_the_cpu_were_missing() -> None:
    starved = _tally([1.0] * 10, late=5, late_at_cap=1)
    starved.cpu_wait = 0.4
    reason = judge(_result(starved), []).reasons[0]
    assert "1 of them while every allowed connection was busy" in reason
    assert "waited 0.4 s for a CPU during the run: the machine is overloaded" in reason
    assert "raise --connections" in reason
    busy = judge(_result(_tally([1.0] * 10, late=5)), []).reasons[0]
    assert "the generator itself was too busy" in busy and "--connections" not in busy


def test_a_latency_slo_with_nothing_measured_fails() -> None:
    verdict = judge(_result(Tally()), [Slo("p95", "<", 100.0, "p95<100ms")])
    assert not verdict.passed and verdict.slos[0].actual is None


def test_achieved_rate_is_answers_per_second_of_the_window() -> None:
    assert _result(_tally([1.0] * 1000), window=2.0).achieved_rate == 500.0
    summary = _result(_tally([1.0] * 1000), window=2.0).summary()
    assert summary["achieved_rate"] == 500.0 and summary["latency_ms"]["p50"] == 1.0
