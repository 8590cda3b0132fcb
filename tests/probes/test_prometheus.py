"""The prometheus.* probes against a real Prometheus scraping a real exporter, plus pure edges."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from changeover.plan.systems import PrometheusSystem
from changeover.probes.base import REGISTRY, CheckResult, ProbeContext, Status, run_probe
from changeover.probes.prometheus import (
    PrometheusQuery,
    PrometheusRules,
    PrometheusTargets,
    QueryParams,
    QueryRaw,
    Rule,
    RulesParams,
    TargetsParams,
)
from support.prometheus import PrometheusServer, free_port, run_prometheus, start_exporter


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with start_exporter() as exporter:
        jobs = {"demo": exporter.address, "broken": f"127.0.0.1:{free_port()}"}
        with run_prometheus(tmp_path_factory.mktemp("prometheus"), jobs) as server:
            # Targets report their lastError only once the scrape finished: wait for both.
            server.wait_for('demo_error_ratio{job="demo"}')
            yield server


def run(name: str, url: str, **params: Any) -> CheckResult:
    ctx = ProbeContext(systems={"prom": PrometheusSystem(url=url)})
    params_model: Any = REGISTRY[name].Params
    return asyncio.run(run_probe(name, params_model(system="prom", **params), ctx))


# ------------------------------------------------------------------ against the real server


def test_ready_passes_on_running_prometheus(prometheus: PrometheusServer) -> None:
    result = run("prometheus.ready", prometheus.url)
    assert result.status is Status.PASS, result.reason


def test_ready_fails_plainly_when_nothing_listens() -> None:
    result = run("prometheus.ready", "http://127.0.0.1:9")
    assert result.status is Status.FAIL
    assert result.reason == "cannot reach Prometheus at http://127.0.0.1:9: connection refused"


def test_query_below_threshold_passes(prometheus: PrometheusServer) -> None:
    result = run("prometheus.query", prometheus.url, query="demo_error_ratio", below=0.01)
    assert result.status is Status.PASS, result.reason
    assert 'demo_error_ratio{instance="' in result.reason
    assert result.evidence[0].value == 0.002
    assert result.evidence[0].expected == "< 0.01"


def test_query_above_threshold_fails_with_the_series(prometheus: PrometheusServer) -> None:
    result = run("prometheus.query", prometheus.url, query="demo_error_ratio", below=0.001)
    assert result.status is Status.FAIL
    assert "= 0.002 (expected < 0.001)" in result.reason
    assert result.details["series"][0]["labels"]["job"] == "demo"


def test_query_any_passes_when_one_series_satisfies(prometheus: PrometheusServer) -> None:
    # up is 1 for demo and 0 for broken: "all" fails, "any" passes.
    all_up = run("prometheus.query", prometheus.url, query="up", above=0.5)
    any_up = run("prometheus.query", prometheus.url, query="up", above=0.5, aggregate="any")
    assert all_up.status is Status.FAIL
    assert "1 of 2 series not > 0.5" in all_up.reason
    assert 'job="broken"' in all_up.reason
    assert any_up.status is Status.PASS, any_up.reason


def test_query_with_no_series_fails_unless_empty_is_pass(prometheus: PrometheusServer) -> None:
    failed = run("prometheus.query", prometheus.url, query="demo_no_such_metric", below=1)
    passed = run(
        "prometheus.query", prometheus.url, query="demo_no_such_metric", below=1, empty="pass"
    )
    assert failed.status is Status.FAIL
    assert "no series" in failed.reason
    assert passed.status is Status.PASS


def test_query_with_bad_promql_fails_with_the_parse_error(prometheus: PrometheusServer) -> None:
    result = run("prometheus.query", prometheus.url, query="sum(rate(demo_requests_total[", below=1)
    assert result.status is Status.FAIL
    assert result.reason.startswith("Prometheus query failed: bad_data: ")
    assert "parse error" in result.reason


def test_query_of_a_range_vector_is_a_plan_error(prometheus: PrometheusServer) -> None:
    result = run("prometheus.query", prometheus.url, query="demo_up[1m]", below=2)
    assert result.status is Status.ERROR
    assert "avg_over_time" in result.reason


def test_targets_of_a_scraped_job_pass(prometheus: PrometheusServer) -> None:
    result = run("prometheus.targets", prometheus.url, job="demo")
    assert result.status is Status.PASS, result.reason
    assert result.reason == "all 1 targets of job 'demo' are up"


def test_targets_of_a_dead_job_fail_with_its_last_error(prometheus: PrometheusServer) -> None:
    result = run("prometheus.targets", prometheus.url, job="broken")
    assert result.status is Status.FAIL
    assert "1 of 1 targets of job 'broken' down" in result.reason
    assert "connection refused" in result.reason
    assert "connection refused" in result.details["down"][0]["last_error"]


def test_targets_of_an_unknown_job_fail_listing_the_jobs(prometheus: PrometheusServer) -> None:
    result = run("prometheus.targets", prometheus.url, job="api")
    assert result.status is Status.FAIL
    assert result.reason == "no active targets for job 'api' (jobs: broken, demo)"


def test_rules_present_pass(prometheus: PrometheusServer) -> None:
    result = run(
        "prometheus.rules", prometheus.url, names=["HighErrorRate", "DemoDown"], min_rules=2
    )
    assert result.status is Status.PASS, result.reason


def test_rules_missing_name_fails_naming_it(prometheus: PrometheusServer) -> None:
    result = run("prometheus.rules", prometheus.url, names=["HighErrorRate", "LatencyHigh"])
    assert result.status is Status.FAIL
    assert result.reason == "alert rules not loaded: LatencyHigh"
    assert result.details["missing"] == ["LatencyHigh"]


def test_recording_rules_do_not_count_as_alert_rules(prometheus: PrometheusServer) -> None:
    result = run("prometheus.rules", prometheus.url, names=["demo:requests:rate1m"])
    assert result.status is Status.FAIL


def test_api_behind_a_non_prometheus_server_fails_plainly(prometheus: PrometheusServer) -> None:
    # The exporter is an HTTP server that is not Prometheus: 200 with text, not the envelope.
    demo = prometheus.jobs["demo"]
    result = run("prometheus.targets", f"http://{demo}", job="demo")
    assert result.status is Status.FAIL
    assert result.reason.startswith(f"Prometheus at http://{demo} answered the targets request")


# ------------------------------------------------------------------ pure interpretation


def interpret_query(raw: QueryRaw, **params: Any) -> CheckResult:
    return PrometheusQuery().interpret(QueryParams(system="p", query="m", **params), raw)


def vector(*values: str | float, **labels: str) -> QueryRaw:
    return QueryRaw(
        "vector",
        [
            {"metric": {"__name__": "m", "i": str(n), **labels}, "value": [1.0, str(v)]}
            for n, v in enumerate(values)
        ],
    )


def test_threshold_is_strict() -> None:
    assert interpret_query(vector(0.01), below=0.01).status is Status.FAIL
    assert interpret_query(vector(0.5), above=0.5).status is Status.FAIL


def test_band_needs_both_limits() -> None:
    assert interpret_query(vector(5), above=1, below=10).status is Status.PASS
    result = interpret_query(vector(11), above=1, below=10)
    assert result.status is Status.FAIL
    assert result.evidence[0].expected == "> 1 and < 10"


def test_band_with_crossed_limits_is_rejected() -> None:
    with pytest.raises(ValueError, match="'below' must be greater than 'above'"):
        QueryParams(system="p", query="m", below=1, above=2)


def test_query_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="give a threshold"):
        QueryParams(system="p", query="m")


def test_nan_never_satisfies_a_threshold() -> None:
    result = interpret_query(vector("NaN"), below=1)
    assert result.status is Status.FAIL
    assert result.evidence[0].value == "NaN"  # JSON has no NaN literal


def test_scalar_result_is_judged_like_one_series() -> None:
    result = interpret_query(QueryRaw("scalar", [1.0, "0.3"]), below=0.5)
    assert result.status is Status.PASS
    assert result.reason == "{} = 0.3 (expected < 0.5)"


def test_many_series_are_capped_with_breaching_ones_first() -> None:
    values = [0.1] * 30 + [5, 7]
    result = interpret_query(vector(*values), below=1)
    assert result.status is Status.FAIL
    assert result.reason.startswith('2 of 32 series not < 1: m{i="31"} = 7, m{i="30"} = 5')
    assert len(result.evidence) == 20
    assert [m.ok for m in result.evidence[:3]] == [False, False, True]
    assert result.details["series_not_shown"] == 12
    assert result.details["series_total"] == 32


def test_any_fails_naming_the_closest_series() -> None:
    result = interpret_query(vector(3, 2), below=1, aggregate="any")
    assert result.status is Status.FAIL
    assert result.reason == 'none of 2 series is < 1 (closest: m{i="1"} = 2)'


def test_targets_not_yet_scraped_are_not_up() -> None:
    raw = [{"labels": {"job": "api", "instance": "a:1"}, "health": "unknown", "lastError": ""}]
    result = PrometheusTargets().interpret(TargetsParams(system="p", job="api"), raw)
    assert result.status is Status.FAIL
    assert result.reason == "1 of 1 targets of job 'api' down: a:1: health unknown"


def test_targets_below_min_up_fail() -> None:
    raw = [{"labels": {"job": "api", "instance": "a:1"}, "health": "up"}]
    result = PrometheusTargets().interpret(TargetsParams(system="p", job="api", min_up=2), raw)
    assert result.status is Status.FAIL
    assert result.reason == "only 1 targets of job 'api' up (expected >= 2)"


def test_rule_that_fails_to_evaluate_fails_the_check() -> None:
    raw = [Rule("HighErrorRate", "g", "err", "inactive", "many-to-many matching not allowed")]
    result = PrometheusRules().interpret(RulesParams(system="p", names=["HighErrorRate"]), raw)
    assert result.status is Status.FAIL
    assert "HighErrorRate fails to evaluate: many-to-many" in result.reason


def test_rules_below_min_rules_fail() -> None:
    raw = [Rule("A", "g", "ok", "inactive", "")]
    result = PrometheusRules().interpret(RulesParams(system="p", min_rules=3), raw)
    assert result.status is Status.FAIL
    assert result.reason == "only 1 alerting rules loaded (expected >= 3)"


def test_rules_probe_needs_names_or_a_minimum() -> None:
    with pytest.raises(ValueError, match="min_rules"):
        RulesParams(system="p")
