"""The rollout controller end to end: the built-in proxy in this process, two stand-in apps with
a fault switch, bounded load on loopback, the proxy's own metrics, a real journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from changeover.engine.runbook import Runbook
from changeover.loadgen.client import send
from changeover.metrics.proxy import ProxySource
from changeover.proxy.app import ProxyServer
from changeover.rollout.controller import Controller, approve, request_rollback
from changeover.rollout.state import ROLLBACK_DONE, VERDICT
from changeover.traffic.builtin import BuiltinRouter
from rollout.conftest import Receiver
from support.standin import Faults, port_of, start_proxy, start_stand_in

PLAN = """
version: 1
name: controller test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
notify: [{notify}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new: {{kind: app, url: "http://127.0.0.1:2"}}
stages:
{stages}
rollback:
  immediate:
    - id: rollback-error-rate
      title: Error rate > 5% sustained
      gate: {{metric: error_rate, of: new, above: 5%, sustained: 1s}}
"""
STAGE = """
  - id: {id}
    title: Phase {weight}%
    phase:
      weight: {weight}
      bake: {{min: 1s, max: 20s}}
      decision: {{title: go on, mode: {mode}}}
    sections:
      - title: Monitoring
        steps:
          - id: {id}-errors
            title: Error rate < 3%
            gate: {{metric: error_rate, of: new, below: 3%}}
"""


def write_plan(
    tmp_path: Path, modes: tuple[str, str, str] = ("auto", "auto", "auto"), notify: str = ""
) -> Path:
    stages = "".join(
        STAGE.format(id=name, weight=weight, mode=mode)
        for (name, weight), mode in zip(
            (("canary", 10), ("staged", 50), ("full", 100)), modes, strict=True
        )
    )
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN.format(stages=stages, notify=notify), encoding="utf-8")
    return path


@dataclass
class Rig:
    proxy: ProxyServer
    router: BuiltinRouter
    source: ProxySource
    new_faults: Faults
    url: str


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    faults = Faults()
    legacy = await start_stand_in("legacy")
    new = await start_stand_in("new", faults)
    proxy, token = await start_proxy(tmp_path, port_of(legacy), port_of(new))
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    router = BuiltinRouter(admin, token)
    source = ProxySource(admin, token)
    try:
        yield Rig(proxy, router, source, faults, f"http://127.0.0.1:{proxy.port}")
    finally:
        await source.close()
        await router.close()
        await proxy.close(grace=0.5)
        for server in (legacy, new):
            server.close()
            await server.wait_closed()


async def load(url: str, stop: asyncio.Event, deadline_s: float = 60.0) -> None:
    """Bounded load on loopback: batches of requests until stopped or the deadline."""
    ends = time.monotonic() + deadline_s
    while not stop.is_set() and time.monotonic() < ends:
        await send(url, 400, concurrency=8)


def reader(source: ProxySource) -> Any:
    async def read(metric: str, of: str | None, _source: str | None) -> Any:
        return await source.read(metric, of)

    return read


async def run_controller(
    tmp_path: Path, rig_: Rig, plan: Path, notes: list[tuple[str, str, dict[str, Any]]], **kw: Any
) -> Any:
    with Runbook.open(plan) as runbook:
        controller = Controller(
            runbook,
            rig_.router,
            reader(rig_.source),
            notify=lambda kind, title, evidence: notes.append((kind, title, evidence)),
            interval=0.2,
            graceful_step_s=0.2,
            **kw,
        )
        return await controller.run()


def test_three_auto_phases_end_with_all_traffic_on_new(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            notes: list[tuple[str, str, dict[str, Any]]] = []
            try:
                result = await run_controller(
                    tmp_path, r, write_plan(tmp_path), notes, sample_s=0.5
                )
            finally:
                stop.set()
                await traffic
            assert result.outcome == "completed", result
            with Runbook.open(write_plan(tmp_path)) as runbook:
                samples = [e.payload for e in runbook.journal.events(kinds=["rollout.sample"])]
            assert {s["phase"] for s in samples} == {"canary", "staged", "full"}
            served = [s["backends"]["new"] for s in samples if s["backends"]["new"].get("rps")]
            assert served and all(b["rps"] > 0 and b["p95_ms"] is not None for b in served)
            assert samples[-1]["weights"] == {"legacy": 0.0, "new": 100.0}
            assert samples[-1]["gates"] and "outcome" in samples[-1]["gates"][0]
            assert result.phases_passed == ["canary", "staged", "full"]
            assert (await r.router.weights())["new"] == 100
            assert [k for k, _, _ in notes].count("phase_passed") == 3
            assert notes[-1][0] == "complete"

    asyncio.run(scenario())


def test_an_error_spike_in_phase_two_rolls_back_immediately_with_evidence(
    tmp_path: Path, receiver: Receiver
) -> None:
    """10% errors on the new app in phase 2: immediate rollback, 0% to new within a second of
    the verdict, and the notification with the evidence reaches a real local webhook."""
    from changeover.notify.notifier import notifier_for
    from changeover.rollout.controller import notify_through

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            plan = write_plan(tmp_path, notify=f'"{receiver.url()}"')

            async def inject() -> None:
                # once phase 2 has started, the new app fails 10% of requests
                while (await r.router.weights())["new"] < 50:
                    await asyncio.sleep(0.05)
                r.new_faults.error_rate = 0.10

            injector = asyncio.create_task(inject())
            try:
                with Runbook.open(plan) as runbook:
                    notifier = notifier_for(runbook.plan, runbook.journal, base_dir=tmp_path)
                    controller = Controller(
                        runbook,
                        r.router,
                        reader(r.source),
                        notify=notify_through(notifier),
                        interval=0.2,
                    )
                    result = await controller.run()
                    assert await notifier.drain(timeout=15)
            finally:
                stop.set()
                await traffic
                injector.cancel()
            assert result.outcome == "rolled_back", result
            assert result.phases_passed == ["canary"]
            assert result.rollback["mode"] == "immediate"
            assert result.rollback["seconds"] < 1.0  # 0% to new within a second of the verdict
            assert (await r.router.weights())["new"] == 0
            with Runbook.open(plan) as runbook:
                done = runbook.journal.latest(ROLLBACK_DONE)
                assert done is not None and done.payload["mode"] == "immediate"
                assert runbook.journal.latest(VERDICT) is not None

    asyncio.run(scenario())
    rollbacks = [body for _, body in receiver.requests if "ROLLBACK" in body.get("title", "")]
    assert rollbacks, receiver.requests
    message = rollbacks[0]["message"]
    assert "rollback-error-rate" in message and "observed" in message, message


def test_a_manual_decision_waits_for_approve(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            notes: list[tuple[str, str, dict[str, Any]]] = []
            plan = write_plan(tmp_path, ("manual", "auto", "auto"))
            run = asyncio.create_task(run_controller(tmp_path, r, plan, notes))
            try:
                for _ in range(200):
                    if any(k == "decision_needed" for k, _, _ in notes):
                        break
                    await asyncio.sleep(0.1)
                assert any(k == "decision_needed" for k, _, _ in notes), notes
                await asyncio.sleep(1.0)
                assert not run.done()  # still waiting: no approval yet
                assert (await r.router.weights())["new"] == 10
                with Runbook.open(plan) as runbook:
                    approve(runbook, "canary", by="alice")
                result = await asyncio.wait_for(run, 60)
            finally:
                stop.set()
                await traffic
            assert result.outcome == "completed"

    asyncio.run(scenario())


def test_rollback_from_another_shell_is_acted_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            notes: list[tuple[str, str, dict[str, Any]]] = []
            plan = write_plan(tmp_path, ("manual", "auto", "auto"))
            run = asyncio.create_task(run_controller(tmp_path, r, plan, notes))
            try:
                while (await r.router.weights())["new"] < 10:
                    await asyncio.sleep(0.05)
                with Runbook.open(plan) as runbook:
                    request_rollback(runbook, "immediate", "pager says so", by="bob")
                result = await asyncio.wait_for(run, 30)
            finally:
                stop.set()
                await traffic
            assert result.outcome == "rolled_back"
            assert result.rollback["reason"] == "pager says so"
            assert (await r.router.weights())["new"] == 0
            # a rolled-back run stays rolled back until a new attempt is asked for
            assert (await run_controller(tmp_path, r, plan, notes)).outcome == "rolled_back"
            with Runbook.open(plan) as runbook:
                stop = asyncio.Event()
                traffic = asyncio.create_task(load(r.url, stop))
                again = Controller(
                    runbook, r.router, reader(r.source), interval=0.2, graceful_step_s=0.2
                )
                attempt = asyncio.create_task(again.run(again=True))
                try:
                    while "canary" not in again.state().decision_asked:  # approvals start over
                        assert not attempt.done(), attempt.result()
                        await asyncio.sleep(0.1)
                    approve(runbook, "canary", by="alice")
                    second = await asyncio.wait_for(attempt, 90)
                finally:
                    stop.set()
                    await traffic
            assert second.outcome == "completed", second

    asyncio.run(scenario())


@pytest.mark.parametrize("kill_after", [0.5, 2.5])
def test_a_controller_stopped_mid_run_resumes_without_repeating_actions(
    tmp_path: Path, kill_after: float
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            notes: list[tuple[str, str, dict[str, Any]]] = []
            plan = write_plan(tmp_path)
            first = asyncio.create_task(run_controller(tmp_path, r, plan, notes))
            await asyncio.sleep(kill_after)
            first.cancel()  # like a kill: nothing after this point runs
            with contextlib.suppress(asyncio.CancelledError):
                await first
            try:
                result = await run_controller(tmp_path, r, plan, notes)
            finally:
                stop.set()
                await traffic
            assert result.outcome == "completed"
            with Runbook.open(plan) as runbook:
                routes = [
                    e.payload["weight"]
                    for e in runbook.journal.events(kinds=["action.outcome"])
                    if e.payload.get("ok")
                ]
            # each phase's weight was set once (a reconcile may re-set the current one)
            assert [w for w in routes if w in (10.0, 50.0, 100.0)].count(100.0) == 1

    asyncio.run(scenario())


MIGRATING_PLAN = """
version: 1
name: controller with the data handoff
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new: {{kind: app, url: "http://127.0.0.1:2"}}
  postgres: {{kind: postgres, url: "${{PG_URL}}"}}
migrate: {{source: app.db, target: postgres}}
stages:
  - id: full
    title: Phase 100%
    phase:
      weight: 100
      bake: {{min: 1s, max: 60s}}
      decision: {{title: done?, mode: manual}}
    sections:
      - title: Deployment
        steps:
          - id: full-route
            title: Route 100%
            action: {{route: {{weight: 100}}}}
          - id: full-handoff
            title: Hand writes to the new app
            action: {{migrate.handoff: {{}}}}
          - id: full-readonly
            title: Configure Python app to read-only mode
            action: {{readonly: {{system: legacy}}}}
"""


def test_a_rollback_after_the_data_handoff_hands_writes_back_without_loss(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import psycopg

    from changeover.migrate.copy import copy_database
    from changeover.migrate.handoff import read_handoff
    from changeover.migrate.schema import plan_schema
    from changeover.migrate.sqlite import introspect
    from migrate.corpus import make_app_db

    db = make_app_db(tmp_path / "app.db", rows=20)
    copy_database(db, pg_url, plan_schema(introspect(db)), jobs=1, capture=True)
    monkeypatch.setenv("PG_URL", pg_url)
    plan = tmp_path / "changeover.yaml"
    plan.write_text(MIGRATING_PLAN.format(), encoding="utf-8")

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            notes: list[tuple[str, str, dict[str, Any]]] = []
            run = asyncio.create_task(run_controller(tmp_path, r, plan, notes))
            while read_handoff(pg_url).owner != "new":
                assert not run.done(), run.result()
                await asyncio.sleep(0.1)
            with psycopg.connect(pg_url, autocommit=True) as conn:  # the new app writes
                conn.execute("UPDATE users SET name = 'written on new' WHERE id = 3")
            with Runbook.open(plan) as runbook:
                request_rollback(runbook, "immediate", "drill", by="carol")
            result = await asyncio.wait_for(run, 60)
            assert result.outcome == "rolled_back"
            assert result.rollback["writes"] == "legacy (handed back)"
            assert (await r.router.weights())["new"] == 0

    asyncio.run(scenario())
    assert read_handoff(pg_url).owner == "legacy"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 3").fetchone() == ("written on new",)


def test_a_failed_gate_without_a_severe_trigger_rolls_back_gracefully_in_steps(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(r.url, stop))
            notes: list[tuple[str, str, dict[str, Any]]] = []
            plan = write_plan(tmp_path)

            async def inject() -> None:
                while (await r.router.weights())["new"] < 50:
                    await asyncio.sleep(0.05)
                r.new_faults.error_rate = 0.045  # above the 3% gate, below the 5% trigger

            injector = asyncio.create_task(inject())
            try:
                result = await asyncio.wait_for(run_controller(tmp_path, r, plan, notes), 90)
            finally:
                stop.set()
                await traffic
                injector.cancel()
            assert result.outcome == "rolled_back", result
            assert result.rollback["mode"] == "graceful"
            with Runbook.open(plan) as runbook:
                steps = [
                    e.payload["weight"]
                    for e in runbook.journal.events(kinds=["action.outcome"])
                    if e.payload.get("step") == "rollback"
                ]
            assert steps == [10.0, 0.0]  # 50 → 10 → 0, a short watch at each step

    asyncio.run(scenario())


DEPLOYING_PLAN = """
version: 1
name: controller with a deploy
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new:
    kind: app
    instances:
      - name: go-1
        url: "http://127.0.0.1:{port}"
        deploy:
          command: {command}
          log: app.log
          ready_pattern: "listening on {port}"
stages:
  - id: canary
    title: Canary
    phase: {{weight: 10, bake: {{min: 1s, max: 20s}}, decision: {{title: go, mode: auto}}}}
    sections:
      - title: Deployment
        steps:
          - id: canary-deploy
            title: Deploy Go app to 1 of 3 instances
            action: {{deploy: {{instances: [go-1]}}}}
"""


def test_deploy_runs_the_instance_deployer_and_waits_for_its_log_line_and_health(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import sys

    from support.process import free_port

    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "healthz").write_text("ok")
    target = Path(__file__).parent.parent / "support" / "deploy_target.py"
    log = tmp_path / "app.log"  # the plan's `log: app.log` is relative to the plan
    command = json.dumps([sys.executable, str(target), str(port), str(site), str(log)])
    plan = tmp_path / "changeover.yaml"
    plan.write_text(DEPLOYING_PLAN.format(port=port, command=command), encoding="utf-8")

    async def scenario() -> Any:
        async with rig(tmp_path) as r:
            return await run_controller(tmp_path, r, plan, [])

    try:
        result = asyncio.run(scenario())
    finally:
        pid = site / "pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
    assert result.outcome == "completed", result
    with Runbook.open(plan) as runbook:
        outcome = runbook.journal.latest("action.outcome", step="canary-deploy")
        assert outcome is not None and outcome.payload["ok"] is True
        assert outcome.payload["detail"]["go-1"]["healthy"].endswith("/healthz")


def test_a_failing_deployer_stops_the_run_with_its_exit_code_and_traffic_unchanged(
    tmp_path: Path,
) -> None:
    import sys

    from changeover.rollout.controller import RolloutStopped

    command = json.dumps([sys.executable, "-c", "import sys; print('no disk'); sys.exit(3)"])
    plan = tmp_path / "changeover.yaml"
    plan.write_text(DEPLOYING_PLAN.format(port=1, command=command), encoding="utf-8")

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            with pytest.raises(RolloutStopped, match="exited 3: no disk"):
                await run_controller(tmp_path, r, plan, [])
            assert (await r.router.weights())["new"] == 0

    asyncio.run(scenario())


def test_deploy_starts_a_local_process_and_waits_for_its_ready_line(tmp_path: Path) -> None:
    import sys

    import psutil

    from support.process import free_port

    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "healthz").write_text("ok")
    argv = [
        sys.executable,
        "-u",
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(site),
    ]
    plan_text = (
        DEPLOYING_PLAN.format(port=port, command="[]")
        .replace("command: []", f"process: {json.dumps(argv)}")
        .replace(f'"listening on {port}"', f'"Serving HTTP on 127.0.0.1 port {port}"')
    )
    plan = tmp_path / "changeover.yaml"
    plan.write_text(plan_text, encoding="utf-8")

    async def scenario() -> Any:
        async with rig(tmp_path) as r:
            return await run_controller(tmp_path, r, plan, [])

    try:
        result = asyncio.run(scenario())
    finally:
        for process in psutil.process_iter(["cmdline"]):
            if str(site) in (process.info["cmdline"] or []):
                process.terminate()
    assert result.outcome == "completed", result
    assert f"port {port}" in (tmp_path / "app.log").read_text()


READONLY_STAGE = """
  - id: canary
    title: Phase 10%
    phase:
      weight: 10
      bake: {{min: 60s, max: 60s}}
      decision: {{title: go on, mode: manual}}
    sections:
      - title: Deployment
        steps:
          - id: canary-legacy-readonly
            title: Legacy read-only
            action:
              readonly:
                command: ["{python}", "-c", "open(r'{flag}', 'w').write('read-only')"]
                {undo}
"""


@pytest.mark.parametrize("with_undo", [True, False])
def test_a_rollback_undoes_the_legacy_read_only_hook_or_says_it_could_not(
    tmp_path: Path, with_undo: bool
) -> None:
    flag = tmp_path / "legacy-readonly.flag"
    undo = f"""undo: ["{sys.executable}", "-c", "import os; os.remove(r'{flag}')"]"""
    stage = READONLY_STAGE.format(python=sys.executable, flag=flag, undo=undo if with_undo else "")
    plan = tmp_path / "changeover.yaml"
    plan.write_text(PLAN.format(notify="", stages=stage), encoding="utf-8")

    async def scenario() -> dict[str, Any]:
        async with rig(tmp_path) as r:
            run = asyncio.create_task(run_controller(tmp_path, r, plan, []))
            while not flag.exists():
                assert not run.done(), run.result()
                await asyncio.sleep(0.05)
            with Runbook.open(plan) as runbook:
                request_rollback(runbook, "immediate", "drill", by="bob")
            result = await asyncio.wait_for(run, 30)
            assert result.outcome == "rolled_back"
            with Runbook.open(plan) as runbook:
                done = runbook.journal.latest(ROLLBACK_DONE)
                assert done is not None
                return done.payload

    done = asyncio.run(scenario())
    if with_undo:
        assert not flag.exists() and done["legacy"] == "writable again (undo hook ran)"
    else:
        assert flag.exists() and done["legacy"].startswith("STILL READ-ONLY"), done


def test_a_route_set_by_hand_before_the_run_is_what_the_controller_reconciles_to(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            plan = write_plan(tmp_path)
            with Runbook.open(plan) as runbook:
                # what 'changeover route set legacy=80 new=20' journals
                route = {"action": "route", "router": "proxy", "weights": {"legacy": 80, "new": 20}}
                runbook.journal.append("action.outcome", {**route, "ok": True}, actor="alice")
                controller = Controller(runbook, r.router, reader(r.source), interval=0.2)
                await controller._reconcile(controller.state())
                assert (await r.router.weights())["new"] == 20 and controller.weight == 20.0

    asyncio.run(scenario())
