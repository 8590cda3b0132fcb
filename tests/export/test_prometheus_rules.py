"""``changeover export prometheus-rules``: files promtool accepts, alerts that mean the gates.

promtool's own rule unit tests (``promtool test rules``) feed synthetic series through the
exported expressions: each alert fires on the numbers that break its gate and stays quiet on
the numbers that do not. A real Prometheus loading the rules is in test_prometheus_load.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from changeover.export import prometheus_rules
from changeover.plan.default import default_plan

from .conftest import Run, promtool_run


def export(run: Run, plan: Path, out: Path, *extra: str) -> Any:
    ran = run("export", "prometheus-rules", "--plan", str(plan), "-o", str(out), *extra)
    assert ran.code == 0, ran.err
    return YAML(typ="safe").load(out.read_text(encoding="utf-8"))


def alerts(rules: Any) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules_of_the_default_plan(
    run: Run, default_plan_file: Path, tmp_path: Path, promtool: str
) -> None:
    out = tmp_path / "rules.yml"
    rules = export(run, default_plan_file, out)
    checked = promtool_run(promtool, "check", "rules", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts(rules))} rules found" in checked.stdout


@pytest.mark.parametrize("series", ["app", "proxy"])
def test_promtool_accepts_the_rules_of_the_demo_plan(
    run: Run, demo_plan_file: Path, tmp_path: Path, promtool: str, series: str
) -> None:
    out = tmp_path / "rules.yml"
    export(run, demo_plan_file, out, "--series", series, "--window", "10s")
    checked = promtool_run(promtool, "check", "rules", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_group_per_phase_and_one_for_the_rollback_triggers(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    rules = export(run, default_plan_file, tmp_path / "rules.yml")
    names = [group["name"] for group in rules["groups"]]
    assert names[:3] == ["changeover-canary", "changeover-staged", "changeover-full"]
    assert "changeover-rollback-triggers" in names and len(names) == len(set(names))


def test_a_trigger_s_sustained_time_is_its_for_and_its_labels_say_how_bad_it_is(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    by_name = alerts(export(run, default_plan_file, tmp_path / "rules.yml"))
    immediate = by_name["CutoverRollbackErrorRate"]
    assert immediate["for"] == "30s"
    assert immediate["labels"] == {
        "severity": "critical",
        "phase": "rollback",
        "step": "rollback-error-rate",
        "rollback": "immediate",
        "page": "true",
        "system": "new",
    }
    assert immediate["expr"].endswith("> 0.05")
    graceful = by_name["CutoverRollbackLatency"]
    assert graceful["for"] == "2m" and graceful["labels"]["severity"] == "warning"
    phase = by_name["CutoverCanaryErrorRate"]
    assert "for" not in phase  # a phase gate is broken at once; it must hold all along
    assert phase["labels"]["severity"] == "warning" and phase["labels"]["phase"] == "canary"


def test_annotations_carry_the_summary_threshold_and_the_exact_rollback_command(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    by_name = alerts(export(run, default_plan_file, tmp_path / "rules.yml"))
    notes = by_name["CutoverRollbackErrorRate"]["annotations"]
    assert notes["summary"].startswith("Error rate > 5% sustained — error_rate of new: {{ $value")
    assert notes["threshold"] == "above 5%, sustained 30s"
    assert notes["action"] == (
        "changeover rollback --immediate --reason 'CutoverRollbackErrorRate: Error rate > 5% "
        f'sustained\' --by "$USER" --plan {default_plan_file}'
    )
    graceful = by_name["CutoverRollbackLatency"]["annotations"]["action"]
    assert graceful.startswith("changeover rollback --graceful ")


def test_gates_without_promql_are_listed_on_stderr_and_in_the_leading_comment(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rules.yml"
    ran = run("export", "prometheus-rules", "--plan", str(default_plan_file), "-o", str(out))
    text = out.read_text(encoding="utf-8")
    comment = text.split("\ngroups:", 1)[0]
    for step, reason in [
        ("rollback-security-breach", "changeover signal"),
        ("rollback-major-features", "synthetic checks"),
        ("canary-cache-hit-rate", "redis system 'redis'"),
        ("rollback-data-loss", "from the migration"),
        ("success-zero-downtime", "no PromQL template for 'downtime'"),
    ]:
        line = next(line for line in ran.err.splitlines() if f"not exported: {step} " in line)
        assert reason in line
        assert f"#   {step} " in comment
    exported = len(alerts(YAML(typ="safe").load(text)))
    skipped = ran.err.count("not exported: ")
    assert exported + skipped == sum(len(s.gates) for s in default_plan().all_steps())
    assert f"wrote {out}: {exported} alerts" in ran.err


def test_stdout_is_the_rules_file_without_output(run: Run, default_plan_file: Path) -> None:
    ran = run("export", "prometheus-rules", "--plan", str(default_plan_file))
    assert ran.code == 0 and ran.out.startswith("# Prometheus alerting rules")
    assert "groups:" in ran.out and "not exported: " not in ran.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "soon"], "--window: expected a duration"),
        (["--window", "0s"], "--window must be positive"),
        (["--plan", "no-such-plan.yaml"], "does not exist"),
    ],
)
def test_bad_input_is_a_plain_error_and_exit_2(
    run: Run, default_plan_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    ran = run("export", "prometheus-rules", "--plan", str(default_plan_file), *args)
    assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err


def test_an_unwritable_output_is_a_plain_error(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "missing-dir" / "rules.yml"
    ran = run("export", "prometheus-rules", "--plan", str(default_plan_file), "-o", str(out))
    assert ran.code == 2 and f"cannot write {out}" in ran.err


def test_a_title_with_template_braces_stays_literal_text() -> None:
    plan = default_plan()
    step = plan.rollback.immediate[0]
    odd = step.model_copy(update={"title": "5xx {{ spike }}"})
    rollback = plan.rollback.model_copy(update={"immediate": [odd]})
    rules = prometheus_rules(plan.model_copy(update={"rollback": rollback}))
    rule = alerts({"groups": rules.groups})["CutoverRollbackErrorRate"]
    assert rule["annotations"]["summary"].startswith('5xx {{ "{{" }} spike }}')


# --- what the alerts mean: promtool's rule unit tests --------------------------------------


def unit_test(
    promtool: str, tmp_path: Path, rules: str, series: dict[str, str], expect: dict[str, Any]
) -> None:
    """Feed ``series`` (15 s apart) through ``rules`` and expect, at each eval time, exactly the
    given alerts firing with the given labels (``expect``: alert → {eval_time: [labels...]})."""
    # promtool compares annotations exactly; they are templated text, tested above
    data = YAML(typ="safe").load(rules)
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    yaml = YAML()
    with (tmp_path / "rules.yml").open("w") as fp:
        yaml.dump(data, fp)
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": firing} for firing in labels],
                    }
                    for alert, times in expect.items()
                    for at, labels in times.items()
                ],
            }
        ],
    }
    with (tmp_path / "tests.yml").open("w") as fp:
        yaml.dump(tests, fp)
    tested = promtool_run(promtool, "test", "rules", str(tmp_path / "tests.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def labels_of(rules: str, alert: str, **extra: str) -> dict[str, str]:
    data = YAML(typ="safe").load(rules)
    rule = next(r for g in data["groups"] for r in g["rules"] if r["alert"] == alert)
    return {"alertname": alert, **rule["labels"], **extra}


def requests(job: str, per_15s: int, errors: int) -> dict[str, str]:
    return {
        f'http_requests_total{{job="{job}",code="200"}}': f"0+{per_15s - errors}x60",
        f'http_requests_total{{job="{job}",code="500"}}': f"0+{errors}x60",
    }


def test_the_error_rate_trigger_fires_above_5_percent_after_30s_and_the_gate_above_1(
    promtool: str, tmp_path: Path
) -> None:
    rules = prometheus_rules(default_plan()).to_yaml()
    trigger, gate = "CutoverRollbackErrorRate", "CutoverCanaryErrorRate"
    unit_test(
        promtool,
        tmp_path,
        rules,
        {**requests("new", 1000, 100), **requests("legacy", 1000, 0)},  # new: 10 % errors
        {
            trigger: {"15s": [], "6m": [labels_of(rules, trigger)]},
            gate: {"6m": [labels_of(rules, gate)]},
        },
    )


def test_two_percent_errors_break_the_phase_gate_but_not_the_5_percent_trigger(
    promtool: str, tmp_path: Path
) -> None:
    rules = prometheus_rules(default_plan()).to_yaml()
    gate = "CutoverCanaryErrorRate"
    unit_test(
        promtool,
        tmp_path,
        rules,
        requests("new", 1000, 20),
        {"CutoverRollbackErrorRate": {"6m": []}, gate: {"6m": [labels_of(rules, gate)]}},
    )


def buckets(job: str, counts: dict[str, int]) -> dict[str, str]:
    """Cumulative ``le`` buckets growing by ``counts`` every 15 s."""
    return {
        f'http_request_duration_seconds_bucket{{job="{job}",le="{le}"}}': f"0+{n}x60"
        for le, n in counts.items()
    }


@pytest.mark.parametrize(
    ("new_buckets", "fires"),
    [
        # p95 ≈ 9.5 ms next to legacy's 4.75 ms: twice as slow, but within legacy + 5 ms slack
        ({"0.005": 50, "0.01": 100, "0.05": 100, "+Inf": 100}, False),
        # p95 ≈ 48 ms: beyond both 1.2 × legacy and legacy + 5 ms
        ({"0.005": 0, "0.01": 0, "0.05": 100, "+Inf": 100}, True),
    ],
)
def test_the_canary_latency_gate_allows_the_larger_of_ratio_and_slack(
    promtool: str, tmp_path: Path, new_buckets: dict[str, int], fires: bool
) -> None:
    rules = prometheus_rules(default_plan()).to_yaml()
    legacy = {"0.005": 100, "0.01": 100, "0.05": 100, "+Inf": 100}  # p95 = 4.75 ms
    alert = "CutoverCanaryLatency"
    unit_test(
        promtool,
        tmp_path,
        rules,
        {**buckets("new", new_buckets), **buckets("legacy", legacy)},
        {alert: {"6m": [labels_of(rules, alert)] if fires else []}},
    )


@pytest.mark.parametrize(("mb_per_15s", "fires"), [(0.25, True), (0.0, False)])
def test_a_memory_leak_fires_on_a_steady_rise_not_on_a_flat_line(
    promtool: str, tmp_path: Path, mb_per_15s: float, fires: bool
) -> None:
    rules = prometheus_rules(default_plan()).to_yaml()
    alert = "CutoverCanaryMemoryLeaks"  # 0.25 MB / 15 s = 60 MB/h, 30 MB in 30 min
    step = int(mb_per_15s * 1048576)
    unit_test(
        promtool,
        tmp_path,
        rules,
        {'process_resident_memory_bytes{job="new"}': f"200000000+{step}x200"},
        {alert: {"45m": [labels_of(rules, alert)] if fires else []}},
    )
