"""Plan gates → PromQL conditions, read the way the controller reads each gate (pure)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from changeover.export.gates import (
    PlanGate,
    Skipped,
    Watch,
    plan_gates,
    threshold_wording,
    watch,
    watch_all,
)
from changeover.export.promql import NoPromQL, SeriesChoice
from changeover.plan.default import default_plan
from changeover.plan.model import Plan

WINDOW = timedelta(minutes=5)
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def plan_with(
    gates: list[dict[str, Any]] | None = None,
    *,
    immediate: list[dict[str, Any]] | None = None,
    graceful: list[dict[str, Any]] | None = None,
) -> Plan:
    """A plan whose canary phase has ``gates`` (one step each) and the given triggers."""

    def steps(prefix: str, items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [
            {"id": f"{prefix}-{i}", "title": f"{prefix} {i}", "gate": gate}
            for i, gate in enumerate(items or [])
        ]

    return Plan.model_validate(
        {
            "name": "t",
            "cutover_at": "2026-12-01T02:00:00Z",
            "systems": {
                "legacy": {"kind": "app", "url": "http://127.0.0.1:8000"},
                "new": {"kind": "app", "url": "http://127.0.0.1:8001"},
                "prometheus": {"url": "http://127.0.0.1:9090"},
                "redis": {"url": "redis://127.0.0.1:6379"},
                "postgres": {"url": "postgresql://127.0.0.1/app"},
                "router": {"kind": "router", "type": "builtin", "admin": "http://127.0.0.1:9901"},
            },
            "stages": [
                {
                    "id": "canary",
                    "title": "Canary",
                    "phase": {"weight": 10},
                    "sections": [{"title": "Gates", "steps": steps("gate", gates)}],
                }
            ],
            "rollback": {
                "immediate": steps("now", immediate),
                "graceful": steps("slow", graceful),
            },
        }
    )


def only(plan: Plan, series: SeriesChoice = "app") -> Watch:
    (at,) = plan_gates(plan)
    return watch(plan, at, series=series, window=WINDOW)


def skipped_reason(plan: Plan) -> str:
    (at,) = plan_gates(plan)
    with pytest.raises(NoPromQL) as caught:
        watch(plan, at, series="app", window=WINDOW)
    return caught.value.reason


def test_a_phase_gate_below_a_share_breaks_above_it() -> None:
    watched = only(plan_with([{"metric": "error_rate", "of": "new", "below": "1%"}]))
    assert watched.condition == f"{watched.value} > 0.01"
    assert (watched.threshold, watched.breaks_above, watched.kind) == (0.01, True, "ratio")


def test_a_trigger_above_a_share_fires_above_it() -> None:
    plan = plan_with(immediate=[{"metric": "error_rate", "of": "new", "above": "5%"}])
    watched = only(plan)
    assert watched.condition == f"{watched.value} > 0.05"
    assert watched.breaks_above and watched.threshold == 0.05


def test_a_phase_gate_above_a_share_is_judged_on_the_misses_and_shown_as_the_good_share() -> None:
    watched = only(plan_with([{"metric": "rate_limited", "of": "new", "above": "90%"}]))
    assert watched.value.startswith("1 - (")
    assert watched.condition == f"{watched.value} < 0.9"
    assert watched.breaks_above is False


def test_none_observed_fires_on_any_event() -> None:
    watched = only(plan_with([{"metric": "auth_failures", "of": "new"}]))
    assert watched.condition == f"{watched.value} > 0" and watched.threshold == 0.0
    assert "401|403" in watched.value


def test_latency_below_a_duration_compares_the_p95_in_seconds() -> None:
    watched = only(plan_with([{"metric": "latency_p95", "of": "new", "below": "100ms"}]))
    assert watched.value.startswith("histogram_quantile(0.95,")
    assert watched.condition.endswith(" > 0.1") and watched.threshold == 0.1


def test_a_latency_ratio_with_slack_allows_the_larger_of_ratio_and_baseline_plus_slack() -> None:
    plan = plan_with(
        [
            {
                "metric": "latency_p95",
                "of": "new",
                "max_ratio_to": "legacy",
                "ratio": 1.2,
                "slack": "5ms",
            }
        ]
    )
    watched = only(plan)
    assert watched.allowed is not None and watched.threshold is None
    legacy = 'http_request_duration_seconds_bucket{job="legacy"}'
    assert (
        watched.allowed.startswith("(1.2 * histogram_quantile(0.95,") and legacy in watched.allowed
    )
    assert watched.allowed.endswith("+ 0.005)")
    assert watched.condition == f"{watched.value} > ({watched.allowed})"


def test_an_error_ratio_to_the_baseline_multiplies_the_baseline_share() -> None:
    plan = plan_with(
        [{"metric": "auth_failures", "of": "new", "max_ratio_to": "legacy", "ratio": 1}]
    )
    watched = only(plan)
    assert watched.allowed is not None and watched.allowed.startswith("1 * (")
    assert 'job="legacy"' in watched.allowed and 'job="new"' in watched.value


@pytest.mark.parametrize(
    ("gate", "condition_end"),
    [
        ({"metric": "cpu", "of": "new", "below": "60%"}, ">= 60"),  # a % series: 60, not 0.6
        ({"metric": "memory", "of": "new", "below": "512MB"}, ">= 512"),
        ({"metric": "memory", "of": "new", "below": 512}, ">= 512"),
        ({"metric": "goroutines", "of": "new", "above": 10}, "<= 10"),
    ],
)
def test_gauge_thresholds_are_in_the_unit_of_the_series(
    gate: dict[str, Any], condition_end: str
) -> None:
    assert only(plan_with([gate])).condition.endswith(condition_end)


def test_a_memory_leak_is_a_slope_and_a_rise_over_a_trend_window() -> None:
    watched = only(plan_with([{"metric": "memory_leak", "of": "new"}]))
    assert "deriv((sum(process_resident_memory_bytes" in watched.condition
    assert "[30m:1m]) * 3600 > 10 and delta(" in watched.condition
    assert watched.condition.endswith("> 16") and watched.alert_value is not None


def test_latency_stable_is_a_rise_of_the_p95_against_its_median_level() -> None:
    watched = only(plan_with([{"metric": "latency_stable", "of": "new"}]))
    assert watched.condition.startswith("deriv((histogram_quantile(0.95,")
    assert "* 1800 > 0.2 * quantile_over_time(0.5, " in watched.condition


def test_the_proxy_series_are_read_when_chosen_or_when_the_gate_names_the_builtin_router() -> None:
    routed = plan_with([{"metric": "error_rate", "of": "new", "source": "router", "below": "1%"}])
    assert "changeover_proxy_requests_total" in only(routed).value
    chosen = plan_with([{"metric": "error_rate", "of": "new", "below": "1%"}])
    assert "changeover_proxy_requests_total" in only(chosen, series="proxy").value
    assert "changeover_proxy_requests_total" not in only(chosen, series="app").value


@pytest.mark.parametrize(
    ("gate", "reason"),
    [
        (
            {"metric": "features", "of": "new", "check": {"http": {"system": "new"}}},
            "synthetic checks",
        ),
        ({"metric": "security_breach", "of": "new"}, "changeover signal"),
        ({"metric": "data_loss", "of": "new"}, "from the migration"),
        ({"metric": "cache_hit_rate", "source": "redis", "above": "80%"}, "redis system 'redis'"),
        ({"metric": "database_errors", "of": "new"}, "reads it from PostgreSQL"),
        ({"metric": "downtime", "of": "new", "below": "1s"}, "no PromQL template"),
        ({"metric": "requests", "of": "new", "above": 1}, "a count of requests"),
        ({"metric": "error_rate", "below": "1%"}, "which system"),
        ({"metric": "error_rate", "of": "new", "below": "lots"}, "not a share"),
    ],
)
def test_a_gate_prometheus_cannot_see_says_why(gate: dict[str, Any], reason: str) -> None:
    assert reason in skipped_reason(plan_with([gate]))


def test_alert_names_are_unique_valid_metric_names_named_after_the_step() -> None:
    gates = plan_gates(default_plan())
    names = [g.name for g in gates]
    assert len(names) == len(set(names))
    assert all(METRIC_NAME.match(name) for name in names)
    by_step = {g.step.id: g.name for g in gates}
    assert by_step["rollback-error-rate"] == "CutoverRollbackErrorRate"
    # a step with two gates: one alert per gate, the metric in the name
    assert {g.name for g in gates if g.step.id == "full-staged-stable"} == {
        "CutoverFullStagedStableErrorRate",
        "CutoverFullStagedStableLatencyStable",
    }


def test_every_gate_of_the_default_plan_is_either_watched_or_skipped_with_a_reason() -> None:
    plan = default_plan()
    everything = watch_all(plan, series="app", window=WINDOW)
    assert len(everything) == sum(len(step.gates) for step in plan.all_steps())
    for at, watched in everything:
        assert isinstance(at, PlanGate)
        if isinstance(watched, Skipped):
            assert watched.reason and str(at) in str(watched)
        else:
            assert watched.condition and watched.value


def test_roles_follow_where_the_gate_sits_in_the_plan() -> None:
    roles = {g.step.id: (g.role, g.group) for g in plan_gates(default_plan())}
    assert roles["canary-error-rate"] == ("phase", "canary")
    assert roles["rollback-error-rate"] == ("immediate", "rollback")
    assert roles["rollback-latency"] == ("graceful", "rollback")
    assert roles["success-error-rate"] == ("success", "success-criteria")


def test_threshold_wording_is_the_plan_s_own() -> None:
    plan = plan_with(
        [{"metric": "latency_p95", "of": "new", "max_ratio_to": "legacy", "ratio": 1.5,
          "slack": "10ms", "sustained": "1m"}]
    )  # fmt: skip
    assert threshold_wording(plan_gates(plan)[0].gate) == (
        "at most 1.5 × legacy (or legacy + 10ms), sustained 1m"
    )
