"""PromQL per metric and system: the controller's templates as rates, the proxy's series (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from changeover.export.promql import (
    NoPromQL,
    app_series,
    group,
    per_second,
    proxy_series,
    value,
)
from changeover.metrics.prometheus import DEFAULT_QUERIES
from changeover.metrics.proxy import SERVED as PROXY_METRICS

FIVE_MINUTES = timedelta(minutes=5)


@pytest.mark.parametrize("metric", sorted(DEFAULT_QUERIES))
def test_every_prometheus_template_of_the_controller_becomes_a_windowed_expression(
    metric: str,
) -> None:
    series = app_series(metric, "new")
    expr = value(series, FIVE_MINUTES)
    assert 'job="new"' in expr and "{of}" not in expr
    if series.kind in ("counter", "ratio", "histogram"):
        assert "[5m]" in expr and "rate(" in expr


def test_error_rate_is_the_rate_of_5xx_out_of_the_rate_of_all_requests() -> None:
    expr = value(app_series("error_rate", "new"), FIVE_MINUTES)
    assert expr == (
        '(sum(rate(http_requests_total{job="new",code=~"5.."}[5m])) or vector(0))'
        ' / sum(rate(http_requests_total{job="new"}[5m]))'
    )


def test_latency_is_the_95th_percentile_of_the_bucket_rates() -> None:
    expr = value(app_series("latency_p95", "legacy"), timedelta(seconds=30))
    assert expr == (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{job="legacy"}[30s])))'
    )


def test_a_gauge_template_is_used_as_it_is() -> None:
    series = app_series("memory_leak", "new")
    assert series.kind == "gauge" and series.unit == "MB"
    assert value(series, FIVE_MINUTES) == 'sum(process_resident_memory_bytes{job="new"}) / 1048576'


def test_proxy_error_rate_counts_unanswered_attempts_as_errors_and_as_attempts() -> None:
    expr = value(proxy_series("error_rate", "new"), timedelta(minutes=1))
    bad, total = expr.split(" / ")
    assert 'code_class="5xx"' in bad and "changeover_proxy_unanswered_total" in bad
    assert "code_class" not in total and "changeover_proxy_unanswered_total" in total
    # an absent unanswered counter must not turn a whole ratio into "no value"
    assert total.count("or vector(0)") == 1


@pytest.mark.parametrize("metric", sorted(PROXY_METRICS))
def test_every_metric_the_proxy_serves_reads_the_proxy_series(metric: str) -> None:
    expr = value(proxy_series(metric, "legacy"), FIVE_MINUTES)
    assert "changeover_proxy_" in expr and 'backend="legacy"' in expr


def test_proxy_series_fall_back_to_the_apps_series_for_what_the_proxy_does_not_serve() -> None:
    assert proxy_series("cpu", "new") == app_series("cpu", "new")


def test_a_metric_without_template_or_system_is_no_promql_with_a_reason() -> None:
    with pytest.raises(NoPromQL, match="no PromQL template for 'downtime'"):
        app_series("downtime", "new")
    with pytest.raises(NoPromQL, match=r"which system \(of: \.\.\.\)"):
        app_series("error_rate", None)


def test_a_sum_of_rates_falls_back_to_zero_only_where_asked() -> None:
    assert per_second(("a", "b"), FIVE_MINUTES, absent_is_zero=False) == (
        "sum(rate(a[5m])) + (sum(rate(b[5m])) or vector(0))"
    )
    assert per_second(("a",), FIVE_MINUTES, absent_is_zero=True) == (
        "(sum(rate(a[5m])) or vector(0))"
    )


def test_a_window_below_a_millisecond_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1ms"):
        value(app_series("requests", "new"), timedelta(microseconds=10))


@pytest.mark.parametrize(
    ("expr", "grouped"),
    [
        ("sum(x)", "sum(x)"),
        ("(a or vector(0))", "(a or vector(0))"),
        ("(a) + (b)", "((a) + (b))"),
        ("1 - (x)", "(1 - (x))"),
        ("sum by (le) (x)", "(sum by (le) (x))"),
        ('sum(x{code=~"(4|5).."})', 'sum(x{code=~"(4|5).."})'),
        ('sum(x{code=~")"}) + y', '(sum(x{code=~")"}) + y)'),
    ],
)
def test_group_adds_parentheses_only_around_more_than_one_term(expr: str, grouped: str) -> None:
    assert group(expr) == grouped
