"""Statements per HTTP request between two readings (pure): deltas, resets, the worst named."""

from __future__ import annotations

from changeover.metrics.statements import PerRequest, StatementCounts, per_request


def counts(requests: int, **calls: int) -> StatementCounts:
    return StatementCounts(
        {hash(text): (n, text.replace("_", " ")) for text, n in calls.items()}, requests
    )


def test_statements_per_request_over_the_window_name_the_worst_first() -> None:
    before = counts(100, SELECT_item=1_000, SELECT_user=100)
    after = counts(110, SELECT_item=1_500, SELECT_user=110, INSERT_log=10)
    found = per_request(before, after)
    assert isinstance(found, PerRequest)
    assert (found.value, found.requests, found.statements) == (52.0, 10, 520)
    assert [text for _, text in found.worst] == ["SELECT item", "SELECT user", "INSERT log"]
    assert found.worst[0][0] == 50.0
    assert found.describe().startswith("520 statements for 10 requests; worst: 50/request: SELECT")


def test_a_statement_counted_from_zero_again_counts_its_new_calls_only() -> None:
    # pg_stat_statements_reset() or an evicted statement: its counter starts over
    found = per_request(counts(0, SELECT_item=900), counts(10, SELECT_item=30))
    assert isinstance(found, PerRequest) and found.value == 3.0


def test_no_requests_or_a_restarted_request_counter_cannot_be_told() -> None:
    assert "no HTTP requests" in str(per_request(counts(5), counts(5, SELECT_x=9)))
    assert "restarted" in str(per_request(counts(50), counts(3)))


def test_long_statements_are_shortened_and_flattened() -> None:
    text = "SELECT\n  a,\n  b " + "x" * 400
    found = per_request(StatementCounts({1: (0, text)}, 0), StatementCounts({1: (4, text)}, 2))
    assert isinstance(found, PerRequest)
    ((rate, shown),) = found.worst
    assert rate == 2.0 and shown.startswith("SELECT a, b x") and len(shown) == 160
