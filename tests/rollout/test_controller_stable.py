""" "Latency stable" through the real controller: the p95 of each look's requests, trended."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from changeover.engine.runbook import Runbook
from changeover.rollout.controller import Controller
from changeover.rollout.state import VERDICT
from rollout.test_controller import load, reader, rig

PLAN = """
version: 1
name: latency stable
cutover_at: 2026-12-01T02:00:00Z
systems:
  legacy: {kind: app, url: "http://127.0.0.1:1"}
  new: {kind: app, url: "http://127.0.0.1:2"}
stages:
  - id: staged
    title: Phase 50%
    phase:
      weight: 50
      bake: {min: 4s, max: 30s}
      decision: {title: go on, mode: auto}
    sections:
      - title: Monitoring
        steps:
          - id: staged-latency-stable
            title: Latency stable
            gate: {metric: latency_stable, of: new}
"""


def test_steady_latency_passes_the_stable_gate_with_each_looks_p95_as_evidence(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(PLAN, encoding="utf-8")

    async def scenario() -> Any:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            try:
                with Runbook.open(plan) as runbook:
                    controller = Controller(runbook, r.router, reader(r.source), interval=0.25)
                    return await asyncio.wait_for(controller.run(), 40)
            finally:
                stop.set()
                await traffic

    result = asyncio.run(scenario())
    assert result.outcome == "completed", result
    with Runbook.open(plan) as runbook:
        verdict = runbook.journal.latest(VERDICT)
    assert verdict is not None
    shown = verdict.payload["verdict"]
    assert shown["gate"] == "staged-latency-stable" and shown["outcome"] == "pass", shown
    assert "p95 of each look" in shown["reason"] and shown["samples"] >= 10
