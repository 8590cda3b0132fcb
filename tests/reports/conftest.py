"""Journals for the report tests: one real night through the controller (stand-in apps, the
built-in proxy, load on loopback, a real data handoff and verify on PostgreSQL), made once per
session, and a small builder for hand-written journals of the edge cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from changeover.engine.runbook import Runbook
from changeover.journal.sqlite import SqliteJournal
from changeover.loadgen.client import send
from changeover.metrics.proxy import ProxySource
from changeover.rollout.controller import Controller, approve
from changeover.services import PostgresServer
from changeover.traffic.builtin import BuiltinRouter
from support.standin import port_of, start_proxy, start_stand_in

PG_ENV = "REPORT_TEST_PG_URL"

NIGHT_PLAN = """
version: 1
name: report test night
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead, name: Ana}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:{legacy}"}}
  new: {{kind: app, url: "http://127.0.0.1:{new}"}}
  public: {{kind: http, url: "http://127.0.0.1:{proxy}"}}
  postgres: {{kind: postgres, url: "${{{pg_env}}}"}}
migrate: {{source: app.db, target: postgres}}
stages:
  - id: canary
    title: "Phase 1: Canary (10%)"
    phase:
      weight: 10
      bake: {{min: 2s, max: 30s}}
      decision: {{title: Proceed to 50% if all green, mode: manual}}
    sections:
      - title: Deployment
        steps:
          - {{id: canary-route-10, title: Route 10%, action: {{route: {{weight: 10}}}}}}
      - title: Monitoring
        steps:
          - id: canary-error-rate
            title: Error rate < 1%
            gate: {{metric: error_rate, of: new, below: 1%}}
  - id: staged
    title: "Phase 2: Staged (50%)"
    phase:
      weight: 50
      bake: {{min: 3s, max: 30s}}
      decision: {{title: Proceed to 100% if all green, mode: auto}}
    sections:
      - title: Deployment
        steps:
          - {{id: staged-route-50, title: Route 50/50, action: {{route: {{weight: 50}}}}}}
      - title: Monitoring
        steps:
          - id: staged-error-rate
            title: Error rate < 1%
            gate: {{metric: error_rate, of: new, below: 1%}}
  - id: full
    title: "Phase 3: Full (100%)"
    phase:
      weight: 100
      bake: {{min: 2s, max: 30s}}
      decision: {{title: Cutover complete, mode: auto}}
    sections:
      - title: Deployment
        steps:
          - {{id: full-route-100, title: Route 100%, action: {{route: {{weight: 100}}}}}}
          - {{id: migrate-handoff, title: Hand writes over, action: {{migrate.handoff: {{}}}}}}
          - {{id: full-verify, title: Verify every row, action: {{migrate.verify: {{}}}}}}
      - title: Intensive monitoring
        steps:
          - id: full-error-rate
            title: "Error rate < 1% (target: < 0.1%)"
            gate: {{metric: error_rate, of: new, below: 1%, target: 0.1%}}
          - id: full-latency-p95
            title: Latency p95 < 100ms
            gate: {{metric: latency_p95, of: new, below: 100ms}}
  - id: post-cutover
    title: Post-cutover checks
    sections:
      - title: Stability
        steps:
          - id: all-features-working
            title: All features working
            check: {{http: {{system: public, path: /healthz}}}}
rollback:
  immediate:
    - id: rollback-error-rate
      title: Error rate > 5% sustained
      gate: {{metric: error_rate, of: new, above: 5%, sustained: 1s}}
success_criteria:
  - {{id: success-team-confident, title: Team confident in stability, manual: {{role: lead}}}}
  - {{id: success-documentation, title: Documentation complete, manual: {{role: lead}}}}
"""


@dataclass(frozen=True)
class Night:
    plan: Path
    workdir: Path


@pytest.fixture(scope="session")
def night(tmp_path_factory: pytest.TempPathFactory, pg_primary: PostgresServer) -> Iterator[Night]:
    """A whole cutover through the real controller: canary approved by hand, 50/50, 100 % with
    the write handoff and a verify, post-cutover check, sign-off and a note (about 20 s)."""
    from changeover.migrate.copy import copy_database
    from changeover.migrate.schema import plan_schema
    from changeover.migrate.sqlite import introspect
    from migrate.corpus import make_app_db

    workdir = tmp_path_factory.mktemp("night")
    name = f"report_{secrets.token_hex(4)}"
    pg_url = pg_primary.create_database(name)
    db = make_app_db(workdir / "app.db", rows=20)
    copy_database(db, pg_url, plan_schema(introspect(db)), jobs=1, capture=True)
    previous = os.environ.get(PG_ENV)
    os.environ[PG_ENV] = pg_url
    try:
        # Its own thread: Playwright's sync API may already run an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            plan = pool.submit(lambda: asyncio.run(_run_night(workdir))).result()
        yield Night(plan, workdir)
    finally:
        if previous is None:
            os.environ.pop(PG_ENV, None)
        else:
            os.environ[PG_ENV] = previous
        if pg_primary.running:
            pg_primary.drop_database(name)


async def _run_night(workdir: Path) -> Path:
    legacy = await start_stand_in("legacy")
    new = await start_stand_in("new")
    proxy, token = await start_proxy(workdir, port_of(legacy), port_of(new))
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    router, source = BuiltinRouter(admin, token), ProxySource(admin, token)
    plan = workdir / "changeover.yaml"
    plan.write_text(
        NIGHT_PLAN.format(
            legacy=port_of(legacy), new=port_of(new), proxy=proxy.port, pg_env=PG_ENV
        ),
        encoding="utf-8",
    )
    url = f"http://127.0.0.1:{proxy.port}"
    stop = asyncio.Event()

    async def load() -> None:
        ends = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < ends:
            await send(url, 300, concurrency=8)

    async def read(metric: str, of: str | None, _source: str | None) -> Any:
        return await source.read(metric, of)

    traffic = asyncio.create_task(load())
    try:
        with Runbook.open(plan) as runbook:
            controller = Controller(
                runbook, router, read, interval=0.2, graceful_step_s=0.2, sample_s=0.5
            )
            run = asyncio.create_task(controller.run())
            while "canary" not in controller.state().decision_asked:
                assert not run.done(), run.result()
                await asyncio.sleep(0.1)
            approve(runbook, "canary", by="Ana (deployment lead)")
            result = await asyncio.wait_for(run, 120)
            assert result.outcome == "completed", result
            stop.set()
            await traffic
            await asyncio.to_thread(runbook.check, stage_ids=["post-cutover"])
            runbook.signoff("success-team-confident", by="Ana", note="retro round: all green")
            runbook.note("canary looked clean; approved after reading the gates", by="Ana")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await traffic
        await source.close()
        await router.close()
        await proxy.close(grace=0.5)
        for server in (legacy, new):
            server.close()
            await server.wait_closed()
    return plan


# --- hand-written journals -----------------------------------------------------------------

SMALL_PLAN = """
version: 1
name: small night
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Deployment Lead, name: Ana}]
systems:
  legacy: {kind: app, url: "http://127.0.0.1:1"}
  new: {kind: app, url: "http://127.0.0.1:2"}
  postgres: {kind: postgres, url: "postgresql://u@127.0.0.1:1/db"}
  redis: {kind: redis, url: "redis://127.0.0.1:1/0"}
stages:
  - id: pre
    title: Documentation
    sections:
      - title: Documentation
        steps:
          - {id: runbook-reviewed, title: Runbook documented and reviewed, manual: {role: lead}}
  - id: staged
    title: Staged
    phase: {weight: 50, bake: {min: 1s, max: 10s}, decision: {title: go, mode: auto}}
    sections:
      - title: Monitoring
        steps:
          - {id: staged-errors, title: Error rate < 1%, gate: {metric: error_rate, of: new,
             below: 1%}}
          - {id: staged-db, title: Database performance acceptable, gate: {metric: db_latency_p95,
             source: postgres, below: 50ms}}
          - {id: staged-cache, title: Cache hit rate > 80%, gate: {metric: cache_hit_rate,
             source: redis, above: 80%}}
  - id: full
    title: Full
    phase: {weight: 100, bake: {min: 1s, max: 10s}, decision: {title: done, mode: auto}}
    sections:
      - title: Monitoring
        steps:
          - {id: full-errors, title: Error rate < 1%, gate: {metric: error_rate, of: new,
             below: 1%}}
          - {id: full-p95, title: Latency p95 < 100ms, gate: {metric: latency_p95, of: new,
             below: 100ms}}
          - {id: full-features, title: Major features work, gate: {metric: features, of: new,
             check: {http: {system: new, path: /healthz}}}}
  - id: post
    title: Post-launch
    sections:
      - title: Continuous monitoring
        steps:
          - {id: watch-every-30m, title: Check metrics every 30 minutes, manual: {role: lead}}
      - title: Stability
        steps:
          - {id: endpoints, title: All endpoints, check: {http: {system: new, path: /healthz}}}
success_criteria:
  - {id: success-team-confident, title: Team confident in stability, manual: {role: lead}}
  - {id: success-documentation, title: Documentation complete, manual: {role: lead}}
  - {id: success-monitoring-active, title: Post-launch monitoring active, manual: {role: lead}}
  - {id: success-performance-improvement, title: 20-30x performance improvement verified,
     gate: {metric: latency_p95, of: new, max_ratio_to: legacy, ratio: 0.05}}
"""


class Scribe:
    """Writes a journal by hand, one event at a time, on a clock that moves only when told."""

    def __init__(self, workdir: Path, plan_text: str = SMALL_PLAN) -> None:
        self.plan = workdir / "changeover.yaml"
        self.plan.write_text(plan_text, encoding="utf-8")
        self.now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
        self.journal = SqliteJournal(
            workdir / ".changeover" / "journal.db", clock=lambda: self.now, actor="changeover run"
        )

    def at(self, seconds: float) -> Scribe:
        self.now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC) + timedelta(seconds=seconds)
        return self

    def add(self, kind: str, actor: str | None = None, **payload: Any) -> Scribe:
        self.journal.append(kind, payload, actor=actor)
        return self

    def phase(
        self, name: str, weight: float, error_counter: tuple[int, int] | None = None
    ) -> Scribe:
        self.add("action.outcome", step=f"{name}-route", action="route", weight=weight, ok=True)
        self.add("rollout.phase-started", phase=name, weight=weight)
        start = {}
        if error_counter is not None:
            events, total = error_counter
            start["error_rate|new|None"] = {
                "metric": "error_rate",
                "of": "new",
                "at": 0.0,
                "events": events,
                "total": total,
            }
        return self.add("rollout.monitoring", phase=name, start=start)

    def sample(
        self,
        phase: str,
        weights: tuple[float, float],
        legacy: dict[str, Any] | None,
        new: dict[str, Any] | None,
        gates: list[dict[str, Any]] | None = None,
    ) -> Scribe:
        backends = {
            name: numbers for name, numbers in (("legacy", legacy), ("new", new)) if numbers
        }
        return self.add(
            "rollout.sample",
            phase=phase,
            observed_s=1.0,
            weights={"legacy": weights[0], "new": weights[1]},
            backends=backends,
            gates=gates or [],
        )

    def close(self) -> None:
        self.journal.close()


def numbers(
    requests: int, errors: int = 0, p95: float = 10.0, seconds: float = 5.0
) -> dict[str, Any]:
    return {
        "requests": requests,
        "rps": requests / seconds,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "p50_ms": p95 / 2,
        "p95_ms": p95,
        "p99_ms": p95 * 1.5,
    }


def gate(name: str, outcome: str = "pass", observed: float = 0.0, unit: str = "") -> dict[str, Any]:
    return {
        "gate": name,
        "outcome": outcome,
        "observed": observed,
        "bound": None,
        "threshold": None,
        "unit": unit,
        "samples": 100,
    }


@pytest.fixture
def scribe(tmp_path: Path) -> Iterator[Scribe]:
    writer = Scribe(tmp_path)
    yield writer
    writer.close()


def report_of(writer: Scribe) -> Any:
    """The report of a hand-written journal, as ``changeover report`` would make it."""
    from changeover.plan.load import load_plan
    from changeover.report.build import JournalInfo, build_report

    plan = load_plan(writer.plan).plan
    events = list(writer.journal.events())
    info = JournalInfo(str(writer.plan.parent), len(events), events[-1].hash, True)
    return build_report(plan, events, journal=info, now=writer.now)


def judged(writer: Scribe) -> dict[int, Any]:
    """Criterion number → ``Criterion`` for a hand-written journal."""
    return {c.number: c for c in report_of(writer).criteria}
