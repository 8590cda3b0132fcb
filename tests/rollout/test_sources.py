"""The metric sources a plan gives the controller: app instances on this machine are read for
memory and CPU by listening port; apps elsewhere are left to Prometheus."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from changeover.engine.runbook import Runbook
from changeover.metrics.base import Observation
from changeover.metrics.registry import Metrics
from changeover.rollout.sources import metrics_for
from changeover.traffic.builtin import BuiltinRouter
from metrics.test_process import http_server
from support.process import free_port

PLAN = """
version: 1
name: sources test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  legacy: {{kind: app, url: "{legacy}"}}
  new:
    kind: app
    instances:
{instances}
{extra}
stages:
  - id: canary
    title: Phase 10%
    phase:
      weight: 10
      bake: {{min: 1s, max: 20s}}
      decision: {{title: go on, mode: auto}}
    sections:
      - title: Monitoring
        steps:
          - id: canary-memory
            title: No memory leak
            gate: {{metric: memory_leak, of: new, below: 5%}}
"""


def write_plan(
    tmp_path: Path, instances: list[str], legacy: str = "http://10.0.0.1:8000", extra: str = ""
) -> Path:
    listed = "".join(f'      - {{name: go-{i}, url: "{url}"}}\n' for i, url in enumerate(instances))
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN.format(legacy=legacy, instances=listed, extra=extra), encoding="utf-8")
    return path


def read(
    plan: Path, metric: str, of: str, source: str | None = None
) -> tuple[Metrics, Observation]:
    async def once() -> tuple[Metrics, Observation]:
        router = BuiltinRouter("http://127.0.0.1:1", None)  # never called: metrics_for reads it
        with Runbook.open(plan) as runbook:
            metrics = metrics_for(runbook, router)
        try:
            return metrics, await metrics.read(metric, of, source)
        finally:
            await metrics.close()
            await router.close()

    return asyncio.run(once())


def names(metrics: Metrics) -> list[str]:
    return [source.name for source in metrics.sources]


def test_local_app_instances_give_a_process_source_serving_memory_leak(tmp_path: Path) -> None:
    with http_server() as (_, port):
        plan = write_plan(tmp_path, [f"http://127.0.0.1:{port}", f"http://localhost:{free_port()}"])
        metrics, obs = read(plan, "memory_leak", "new")
    assert names(metrics)[:2] == ["proxy", "process"]
    assert obs.unavailable is None and obs.unit == "MB"
    assert obs.value is not None and obs.value > 1


def test_an_app_with_no_instance_here_says_where_to_read_it(tmp_path: Path) -> None:
    with http_server() as (_, port):
        plan = write_plan(tmp_path, [f"http://127.0.0.1:{port}"])
        _, obs = read(plan, "memory_leak", "legacy")
    assert obs.unavailable == (
        "legacy has no instance on this machine; read memory from Prometheus "
        "(add a prometheus system to the plan)"
    )


def test_prometheus_still_serves_a_gate_that_names_it(tmp_path: Path) -> None:
    extra = '  metrics: {kind: prometheus, url: "http://127.0.0.1:1"}'
    plan = write_plan(tmp_path, [f"http://[::1]:{free_port()}"], extra=extra)
    metrics, obs = read(plan, "memory_leak", "legacy", source="metrics")
    assert names(metrics) == ["proxy", "process", "metrics", "signals"]
    # Read from Prometheus (here nothing listens at its address), not from this machine
    assert obs.unavailable is not None and "127.0.0.1:1" in obs.unavailable
    assert "no instance on this machine" not in obs.unavailable


def test_no_process_source_when_no_app_runs_here_and_prometheus_can_serve(
    tmp_path: Path,
) -> None:
    extra = '  metrics: {kind: prometheus, url: "http://127.0.0.1:1"}'
    plan = write_plan(tmp_path, ["http://10.0.0.2:8101", "http://app.example:8102"], extra=extra)
    metrics, _ = read(plan, "memory_leak", "new")
    assert "process" not in names(metrics)


def test_an_unresolvable_instance_url_leaves_the_app_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHANGEOVER_TEST_GO_URL", raising=False)
    plan = write_plan(tmp_path, ["${CHANGEOVER_TEST_GO_URL}"], legacy="http://127.0.0.1:8000")
    with caplog.at_level(logging.WARNING, logger="changeover.rollout.sources"):
        _, obs = read(plan, "memory", "new")
    assert "memory and cpu of systems.new are not available" in caplog.text
    assert obs.unavailable == "no process target for 'new' (targets: legacy)"


def test_instances_elsewhere_are_named_when_only_some_run_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = write_plan(tmp_path, [f"http://127.0.0.1:{free_port()}", "https://10.0.0.3"])
    with caplog.at_level(logging.WARNING, logger="changeover.rollout.sources"):
        metrics, _ = read(plan, "memory", "new")
    assert "process" in names(metrics)
    assert "systems.new from this machine leave out instance go-1 (not on loopback)" in caplog.text
