"""Triggers that are not traffic numbers: a gate's own synthetic checks and signals people raise
(``changeover signal``), each rolling back through the real controller, proxy and journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from changeover.cli import cli, main
from changeover.engine.runbook import Runbook
from changeover.metrics.registry import Metrics
from changeover.metrics.signals import SignalSource
from changeover.rollout.controller import Controller
from rollout.test_controller import Rig, load, rig
from support.standin import Faults, port_of, start_stand_in

PLAN = """
version: 1
name: synthetic triggers
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new: {{kind: app, url: "http://127.0.0.1:2"}}
  checkout: {{kind: http, url: "http://127.0.0.1:{feature_port}"}}
stages:
  - id: canary
    title: Phase 10%
    phase:
      weight: 10
      bake: {{min: 1s, max: 60s}}
      decision: {{title: go on, mode: manual}}
    sections:
      - title: Monitoring
        steps:
          - id: canary-errors
            title: Error rate < 3%
            gate: {{metric: error_rate, of: new, below: 3%}}
rollback:
  immediate:
    - id: rollback-major-features
      title: Major features non-functional
      gate:
        metric: features
        of: new
        check: {{http: {{system: checkout, path: /api/checkout, timeout: 1}}}}
    - id: rollback-security-breach
      title: Security breach detected
      gate: {{metric: security_breach, of: new}}
  graceful:
    - id: rollback-critical-bugs
      title: Unexpected bugs in critical features
      gate: {{metric: critical_features, of: new}}
"""


async def controlled_run(tmp_path: Path, r: Rig, plan: Path, act: Any) -> Any:
    """Run the controller under load until ``act`` (called once the canary is watching) has
    made it roll back."""
    stop = asyncio.Event()
    traffic = asyncio.create_task(load(r.url, stop))
    try:
        with Runbook.open(plan) as runbook:
            metrics = Metrics([r.source, SignalSource(runbook.journal)])
            controller = Controller(
                runbook, r.router, metrics.read, interval=0.2, graceful_step_s=0.2
            )
            run = asyncio.create_task(controller.run())
            while "canary" not in controller.state().window:
                assert not run.done(), run.result()
                await asyncio.sleep(0.05)
            await act()
            return await asyncio.wait_for(run, 30)
    finally:
        stop.set()
        await traffic


def write(tmp_path: Path, feature_port: int) -> Path:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(PLAN.format(feature_port=feature_port), encoding="utf-8")
    return plan


def test_a_failing_synthetic_feature_check_rolls_back_immediately(tmp_path: Path) -> None:
    async def scenario() -> None:
        feature_faults = Faults()
        feature = await start_stand_in("checkout", feature_faults)
        try:
            async with rig(tmp_path) as r:
                plan = write(tmp_path, port_of(feature))

                async def break_checkout() -> None:
                    await asyncio.sleep(0.5)  # a few healthy looks first
                    feature_faults.error_rate = 1.0

                result = await controlled_run(tmp_path, r, plan, break_checkout)
                assert result.outcome == "rolled_back", result
                assert result.rollback["mode"] == "immediate"
                assert "rollback-major-features" in result.rollback["reason"]
                assert (await r.router.weights())["new"] == 0
        finally:
            feature.close()
            await feature.wait_closed()

    asyncio.run(scenario())


def test_a_security_breach_signal_rolls_back_immediately_with_who_raised_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        feature = await start_stand_in("checkout", Faults())
        try:
            async with rig(tmp_path) as r:
                plan = write(tmp_path, port_of(feature))

                async def raise_breach() -> None:
                    args = [
                        "signal", "security_breach", "--reason", "WAF: credential stuffing",
                        "--by", "siem", "--plan", str(plan),
                    ]  # fmt: skip
                    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
                    assert result.exit_code == 0, result.output
                    assert "watched by rollback-security-breach" in result.output

                result = await controlled_run(tmp_path, r, plan, raise_breach)
                assert result.outcome == "rolled_back", result
                assert result.rollback["mode"] == "immediate"
                assert "rollback-security-breach" in result.rollback["reason"]
                assert "WAF: credential stuffing (by siem)" in result.rollback["reason"]
        finally:
            feature.close()
            await feature.wait_closed()

    asyncio.run(scenario())


def test_a_critical_bug_signal_rolls_back_gracefully(tmp_path: Path) -> None:
    async def scenario() -> None:
        feature = await start_stand_in("checkout", Faults())
        try:
            async with rig(tmp_path) as r:
                plan = write(tmp_path, port_of(feature))

                async def raise_bug() -> None:
                    with Runbook.open(plan) as runbook:
                        from changeover.metrics.signals import raise_signal

                        raise_signal(runbook.journal, "critical_features", "new", "refunds", "sam")

                result = await controlled_run(tmp_path, r, plan, raise_bug)
                assert result.outcome == "rolled_back", result
                assert result.rollback["mode"] == "graceful"
                assert "rollback-critical-bugs" in result.rollback["reason"]
        finally:
            feature.close()
            await feature.wait_closed()

    asyncio.run(scenario())


def test_signal_refuses_a_metric_nobody_raises_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = str(write(tmp_path, 1))
    assert main(["signal", "error_rate", "--reason", "x", "--by", "y", "--plan", plan]) == 2
    assert "no trigger is raised by hand for 'error_rate'" in capsys.readouterr().err
    assert main(["signal", "security_breach", "--reason", "x", "--by", "y", "--of", "nw",
                 "--plan", plan]) == 2  # fmt: skip
    assert "unknown system 'nw'" in capsys.readouterr().err
