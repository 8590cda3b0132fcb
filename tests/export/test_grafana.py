"""``changeover export grafana-dashboard``: a valid dashboard JSON model with a panel per gate.

``check_dashboard`` encodes the parts of Grafana's classic dashboard schema this export uses
(grafana/grafana docs/sources/developers/kinds/core/dashboard/schema-reference.md): GridPos
(``h`` > 0, 0 < ``w`` ≤ 24, 0 ≤ ``x`` < 24, ``y`` ≥ 0), RowPanel's required fields, a panel's
non-empty ``type``, FieldConfigSource's ``defaults`` and ``overrides``, ThresholdsConfig
(``absolute``/``percentage``, steps sorted with the first at -Infinity = null), a uid of 8–40
characters; plus what makes a dashboard usable: unique ids, no overlapping panels, every query
non-empty and PromQL that promtool parses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from changeover.plan.default import default_plan
from changeover.plan.load import load_plan

from .conftest import Run, promtool_run

UID = re.compile(r"^[A-Za-z0-9_-]{8,40}$")


def export(run: Run, plan: Path, out: Path, *extra: str) -> dict[str, Any]:
    ran = run("export", "grafana-dashboard", "--plan", str(plan), "-o", str(out), *extra)
    assert ran.code == 0, ran.err
    dashboard: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return dashboard


def check_dashboard(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int) and 0 < dashboard["schemaVersion"] < 65536
    assert UID.match(dashboard["uid"]) and dashboard["title"]
    assert set(dashboard["time"]) == {"from", "to"}
    for note in dashboard["annotations"]["list"]:
        assert {"datasource", "enable", "iconColor", "name"} <= set(note)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "hwxy"), pos
        assert pos["h"] > 0 and 0 < pos["w"] <= 24 and 0 <= pos["x"] < 24 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, pos
        covered = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not covered & cells, f"panel {panel['id']} overlaps another"
        cells |= covered
        assert isinstance(panel["type"], str) and panel["type"]
        if panel["type"] == "row":
            assert isinstance(panel["collapsed"], bool) and panel["panels"] == []
        elif panel["type"] == "text":
            assert panel["options"]["content"]
        else:
            check_timeseries(panel)


def check_timeseries(panel: dict[str, Any]) -> None:
    targets = panel["targets"]
    refs = [t["refId"] for t in targets]
    assert targets and len(refs) == len(set(refs))
    for target in targets:
        assert target["expr"].strip(), panel["title"]
        assert target["datasource"]["uid"] == "${datasource}"
    config = panel["fieldConfig"]
    assert set(config) >= {"defaults", "overrides"} and isinstance(config["overrides"], list)
    thresholds = config["defaults"]["thresholds"]
    assert thresholds["mode"] in ("absolute", "percentage")
    steps = thresholds["steps"]
    assert steps[0]["value"] is None and all(isinstance(s["color"], str) for s in steps)
    values = [s["value"] for s in steps[1:]]
    assert all(isinstance(v, int | float) for v in values) and values == sorted(values)


def panel_for(dashboard: dict[str, Any], step_id: str) -> dict[str, Any]:
    (panel,) = [p for p in dashboard["panels"] if p["title"].endswith(f"({step_id})")]
    return panel


def test_the_default_plan_s_dashboard_is_a_valid_model_with_a_panel_for_every_gate(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    dashboard = export(run, default_plan_file, tmp_path / "dashboard.json")
    check_dashboard(dashboard)
    titles = [panel["title"] for panel in dashboard["panels"]]
    for step in default_plan().all_steps():
        for gate in step.gates:
            shown = f"({step.id})" + (f" — {gate.metric}" if len(step.gates) > 1 else "")
            assert any(title.endswith(shown) for title in titles), shown


def test_the_demo_plan_s_dashboard_is_valid_for_either_series(
    run: Run, demo_plan_file: Path, tmp_path: Path
) -> None:
    for series in ("app", "proxy"):
        dashboard = export(run, demo_plan_file, tmp_path / f"{series}.json", "--series", series)
        check_dashboard(dashboard)
        gates = sum(len(step.gates) for step in load_plan(demo_plan_file).plan.all_steps())
        gate_panels = [p for p in dashboard["panels"] if re.search(r"\([a-z0-9-]+\)", p["title"])]
        assert len(gate_panels) == gates


def test_a_row_per_phase_then_rollback_triggers_then_a_row_per_backend(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    dashboard = export(run, default_plan_file, tmp_path / "dashboard.json")
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[0].startswith("Cutover Phase 1: Canary")
    assert rows.index("Rollback triggers") < rows.index("Backend: legacy")
    assert rows[-2:] == ["Backend: legacy", "Backend: new"]
    backend = dashboard["panels"][-3:]  # the last row: new
    assert [p["title"] for p in backend] == [
        "Requests/s — new",
        "Error rate — new",
        "Latency p50 / p95 / p99 — new",
    ]
    assert [t["legendFormat"] for t in backend[2]["targets"]] == ["p50", "p95", "p99"]
    assert 'job="new"' in backend[0]["targets"][0]["expr"]


def test_gate_panels_draw_the_gate_s_threshold(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    dashboard = export(run, default_plan_file, tmp_path / "dashboard.json")
    error_rate = panel_for(dashboard, "rollback-error-rate")["fieldConfig"]["defaults"]
    assert error_rate["unit"] == "percentunit"
    assert error_rate["thresholds"]["steps"] == [
        {"color": "green", "value": None},
        {"color": "red", "value": 0.05},
    ]
    assert error_rate["custom"]["thresholdsStyle"]["mode"] == "line"
    latency = panel_for(dashboard, "success-latency-p95")["fieldConfig"]["defaults"]
    assert latency["unit"] == "s" and latency["thresholds"]["steps"][1]["value"] == 0.1
    # a relative gate: the canary's p95 and the level the baseline allows, as two series
    relative = panel_for(dashboard, "canary-latency")
    assert [t["refId"] for t in relative["targets"]] == ["A", "B"]
    assert 'job="legacy"' in relative["targets"][1]["expr"]


def test_a_gate_prometheus_cannot_see_gets_a_text_panel_saying_why(
    run: Run, default_plan_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dashboard.json"
    ran = run("export", "grafana-dashboard", "--plan", str(default_plan_file), "-o", str(out))
    assert "not exported: rollback-security-breach " in ran.err
    panel = panel_for(json.loads(out.read_text(encoding="utf-8")), "rollback-security-breach")
    assert panel["type"] == "text" and "changeover signal" in panel["options"]["content"]


@pytest.mark.parametrize("series", ["app", "proxy"])
def test_every_panel_query_is_promql_promtool_parses(
    run: Run, default_plan_file: Path, tmp_path: Path, promtool: str, series: str
) -> None:
    dashboard = export(run, default_plan_file, tmp_path / "d.json", "--series", series)
    records = [
        {"record": f"changeover:panel_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(records) > 20
    rules = tmp_path / "panels.yml"
    with rules.open("w") as fp:
        YAML().dump({"groups": [{"name": "panels", "rules": records}]}, fp)
    checked = promtool_run(promtool, "check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_stdout_is_the_dashboard_json_without_output(run: Run, default_plan_file: Path) -> None:
    ran = run("export", "grafana-dashboard", "--plan", str(default_plan_file))
    assert ran.code == 0
    assert json.loads(ran.out)["title"].startswith("API cutover")
