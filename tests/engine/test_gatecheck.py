"""Gate steps outside a traffic phase, checked by ``changeover check``: the watch-and-judge
mechanism (pure, with an injected clock), and each after-the-flip detector against real servers
— the built-in proxy in front of a small app whose answers a switch changes, PostgreSQL with
pg_stat_statements, a process whose memory grows — firing on a staged problem and quiet on a
healthy run."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httptools
import psycopg
import pytest

from changeover.engine.check import StepOutcome, run_checks, select_steps
from changeover.engine.gatecheck import LOOKS, check_gate_step, judge, watch_gates
from changeover.engine.runbook import Runbook
from changeover.engine.state import State, project
from changeover.journal import open_journal
from changeover.loadgen.client import send
from changeover.metrics.base import MetricSource, Observation
from changeover.metrics.postgres import PostgresSource
from changeover.metrics.process import ProcessMatch, ProcessSource
from changeover.metrics.proxy import ProxySource
from changeover.metrics.registry import Metrics
from changeover.plan.load import LoadedPlan, load_plan
from changeover.plan.model import Gate
from changeover.probes.base import Status
from changeover.proxy.app import ProxyServer
from changeover.rollout.gates import Reading
from changeover.services import PostgresServer
from changeover.traffic.builtin import BuiltinRouter
from support.standin import port_of, start_proxy, start_stand_in

WINDOW_S = 2.0
CUTOVER = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

# --- the mechanism, without servers -----------------------------------------------------------


def _gate(**fields: Any) -> Gate:
    return Gate.model_validate(fields)


def _obs(metric: str, at: float = 0.0, **fields: Any) -> Observation:
    return Observation(metric, "new", at, **fields)


def test_a_gauge_below_its_limit_passes_and_above_it_fails_with_the_detail() -> None:
    gate = _gate(metric="db_queries_per_request", of="new", below=10)
    quiet = judge("n1", gate, Reading(None, _obs(gate.metric, value=3.0, unit="per")), elapsed_s=2)
    assert quiet.status is Status.PASS
    busy = Reading(None, _obs(gate.metric, value=51.0, unit="per", detail="worst: SELECT 1"))
    fired = judge("n1", gate, busy, elapsed_s=2)
    assert fired.status is Status.FAIL
    assert "51" in fired.reason and "worst: SELECT 1" in fired.reason
    (measure,) = fired.evidence
    assert (measure.value, measure.ok) == (51.0, False)


def test_an_unreadable_metric_is_an_error_with_the_sources_reason() -> None:
    gate = _gate(metric="rate_limited", of="new", below="1%")
    reading = Reading(None, Observation.missing("rate_limited", "new", 0.0, "proxy unreachable"))
    result = judge("rl", gate, reading, elapsed_s=2)
    assert result.status is Status.ERROR
    assert "proxy unreachable" in result.reason


def test_too_few_requests_to_tell_is_a_warning_not_a_pass() -> None:
    gate = _gate(metric="rate_limited", of="new", below="1%")
    reading = Reading(_obs(gate.metric, events=0, total=0), _obs(gate.metric, events=0, total=20))
    result = judge("rl", gate, reading, elapsed_s=2)
    assert result.status is Status.WARN
    assert result.reason.startswith("undecided after 2s")


def test_a_baseline_without_traffic_after_the_flip_leaves_a_ratio_gate_undecided() -> None:
    # why the default plan holds new's 401/403 share to a plain threshold instead
    gate = _gate(metric="auth_failures", of="new", max_ratio_to="legacy", ratio=2)
    reading = Reading(
        _obs(gate.metric, events=0, total=0),
        _obs(gate.metric, events=400, total=2000),
        baseline_start=_obs(gate.metric, events=10, total=500),
        baseline_now=_obs(gate.metric, events=10, total=500),
    )
    result = judge("auth", gate, reading, elapsed_s=30)
    assert result.status is Status.WARN
    assert "no requests counted yet on the baseline" in result.reason


def test_a_window_is_two_reads_apart_and_trend_gates_get_a_series() -> None:
    reads: list[tuple[float, str]] = []
    now = [0.0]

    async def read(metric: str, of: str | None, source: str | None) -> Observation:
        reads.append((now[0], metric))
        if metric == "memory_leak":
            return _obs(metric, now[0], value=100 + 40 * now[0], unit="MB")
        return _obs(metric, now[0], events=int(now[0]), total=int(100 * now[0]))

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    gates = [_gate(metric="rate_limited", of="new", below="1%"), _gate(metric="memory_leak")]
    readings = asyncio.run(
        watch_gates(gates, read, window_s=30.0, sleep=sleep, clock=lambda: now[0])
    )
    rate, leak = readings
    assert [t for t, m in reads if m == "rate_limited"] == [0.0, 30.0]
    assert len([m for _, m in reads if m == "memory_leak"]) == LOOKS
    assert rate.start is not None and rate.start.at == 0.0 and rate.now.at == 30.0
    assert len(leak.series) == LOOKS and leak.series[-1] == (30.0, 1300.0)


# --- selection and state ----------------------------------------------------------------------

_PLAN = """\
version: 1
name: detectors
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Lead}}]
systems:
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new: {{kind: app, url: "http://127.0.0.1:1"}}
  postgres: {{kind: postgres, url: "${{PG_URL:-postgresql://127.0.0.1:1/none}}"}}
{systems}
stages:
  - id: full
    title: Full
    phase: {{weight: 100}}
    sections:
      - title: Monitoring
        steps:
          - {{id: full-error-rate, title: Errors, gate: {{metric: error_rate, of: new, below: 1%}}}}
  - id: after
    title: After the flip
    window: {{opens: 0h, due: 24h}}
    sections:
      - title: Common issues to watch for
        steps:
{steps}
"""


def write_plan(tmp_path: Path, steps: dict[str, str], systems: str = "") -> LoadedPlan:
    lines = "".join(
        f"          - {{id: {step_id}, title: {step_id}, gate: {gate}}}\n"
        for step_id, gate in steps.items()
    )
    path = tmp_path / "changeover.yaml"
    path.write_text(_PLAN.format(steps=lines, systems=systems), encoding="utf-8")
    return load_plan(path)


def test_gate_steps_after_the_flip_are_checked_and_phase_gates_stay_the_controllers(
    tmp_path: Path,
) -> None:
    loaded = write_plan(tmp_path, {"watch-rate": "{metric: rate_limited, of: new, below: 1%}"})
    before = select_steps(loaded, now=CUTOVER - timedelta(hours=1))
    after = select_steps(loaded, now=CUTOVER + timedelta(hours=1))
    named = select_steps(loaded, stage_ids=["after"], now=CUTOVER - timedelta(hours=1))
    assert [s.id for _, s in before.steps] == []  # its window has not opened
    assert [s.id for _, s in after.steps] == ["watch-rate"]
    assert [s.id for _, s in named.steps] == ["watch-rate"]
    assert [s.id for _, s in select_steps(loaded, stage_ids=["full"]).steps] == []

    @dataclass
    class Event:
        kind: str
        payload: dict[str, Any]
        seq: int = 1
        ts: str = "2026-12-01T03:00:00+00:00"
        actor: str = "changeover"

    state = project(loaded.plan, [], CUTOVER)
    assert state.by_id("watch-rate").state is State.PENDING
    assert state.by_id("full-error-rate").state is State.LATER
    failed = Event("check.result", {"step": "watch-rate", "status": "fail"})
    assert project(loaded.plan, [failed], CUTOVER).by_id("watch-rate").state is State.FAILED


# --- real servers: the built-in proxy in front of an app with a switch -------------------------


@dataclass
class Switch:
    """What the app answers, changed while it runs."""

    status: int = 200  # answered to a ``share`` of the requests, 200 to the rest
    share: float = 0.0
    hang: bool = False  # never answer (a stuck request)
    queries: int = 1  # SELECTs per request against ``db`` (an N+1 handler runs 50)
    db: str | None = None
    seen: int = 0


_REASONS = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 504: "Gateway Timeout"}


class _App(asyncio.Protocol):
    def __init__(self, switch: Switch, conn: psycopg.AsyncConnection[Any] | None) -> None:
        self.switch = switch
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        switch = self.switch
        switch.seen += 1
        if switch.hang:
            return
        # every 1/share-th request gets the switch's status: a steady, exact share
        picked = switch.share > 0 and switch.seen % round(1 / switch.share) == 0
        status = switch.status if picked else 200
        task = asyncio.ensure_future(self._answer(status))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, status: int) -> None:
        if self.conn is not None:
            for i in range(self.switch.queries):
                await self.conn.execute("SELECT %s::int + 1", (i,))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Length: 2\r\n\r\nok".encode()
            )


@dataclass
class Rig:
    proxy: ProxyServer
    token: str
    admin: str
    url: str
    switch: Switch
    sources: list[MetricSource] = field(default_factory=list)

    def metrics(self, *more: MetricSource) -> Metrics:
        self.sources = [ProxySource(self.admin, self.token), *more]
        return Metrics(self.sources)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, switch: Switch, new_share: float = 100.0) -> AsyncIterator[Rig]:
    loop = asyncio.get_running_loop()
    conn = None
    if switch.db is not None:
        conn = await psycopg.AsyncConnection.connect(switch.db, autocommit=True)
    app = await loop.create_server(lambda: _App(switch, conn), "127.0.0.1", 0)
    legacy = await start_stand_in("legacy")
    proxy, token = await start_proxy(tmp_path, port_of(legacy), port_of(app))
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    router = BuiltinRouter(admin, token)
    await router.set_weights({"legacy": 100.0 - new_share, "new": new_share})
    await router.close()
    made = Rig(proxy, token, admin, f"http://127.0.0.1:{proxy.port}", switch)
    try:
        yield made
    finally:
        for source in made.sources:
            await source.close()
        await proxy.close(grace=0.2)
        for server in (app, legacy):
            server.close()
        if conn is not None:
            await conn.close()


async def traffic(url: str, stop: asyncio.Event, *, concurrency: int = 4) -> None:
    """Bounded load on loopback until stopped (at most 20 s)."""
    ends = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < ends:
        # a slow moment on a busy machine must not end the load (nor the test)
        with contextlib.suppress(TimeoutError, OSError):
            await send(url, 50, concurrency=concurrency, timeout=5)


async def check_under_load(
    r: Rig, loaded: LoadedPlan, metrics: Metrics, *, load: bool = True
) -> dict[str, StepOutcome]:
    stop = asyncio.Event()
    task = asyncio.create_task(traffic(r.url, stop)) if load else None
    try:
        await asyncio.sleep(0.2)  # requests flowing before the window opens
        outcomes = await run_checks(
            loaded,
            select_steps(loaded, stage_ids=["after"]),
            None,
            metrics=metrics,
            gate_window_s=WINDOW_S,
        )
    finally:
        stop.set()
        if task is not None:
            await task
    return {o.step.id: o for o in outcomes}


STATUS_GATES = {
    "watch-rate-limiting": "{metric: rate_limited, of: new, below: 1%}",
    "watch-timeouts": "{metric: timeout_rate, of: new, below: 1%}",
    "watch-auth-tokens": "{metric: auth_failures, of: new, below: 2%}",
}


@pytest.mark.parametrize(
    ("status", "fired"),
    [(429, "watch-rate-limiting"), (504, "watch-timeouts"), (401, "watch-auth-tokens")],
)
def test_a_burst_of_one_status_fires_its_detector_and_only_that_one(
    tmp_path: Path, status: int, fired: str
) -> None:
    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch(status=status, share=0.2)) as r:
            return await check_under_load(r, write_plan(tmp_path, STATUS_GATES), r.metrics())

    outcomes = asyncio.run(scenario())
    assert outcomes[fired].status is Status.FAIL, outcomes[fired].reason
    assert "lies above the" in outcomes[fired].reason
    quiet = {step: o.status for step, o in outcomes.items() if step != fired}
    assert set(quiet.values()) <= {Status.PASS, Status.WARN}, outcomes


def test_a_healthy_app_keeps_the_status_detectors_quiet(tmp_path: Path) -> None:
    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch()) as r:
            return await check_under_load(r, write_plan(tmp_path, STATUS_GATES), r.metrics())

    outcomes = asyncio.run(scenario())
    assert all(o.status is Status.PASS for o in outcomes.values()), {
        k: o.reason for k, o in outcomes.items()
    }


AUTH_VS_LEGACY = {
    "watch-auth-tokens": "{metric: auth_failures, of: new, max_ratio_to: legacy, ratio: 2}"
}


@pytest.mark.parametrize("share", [0.2, 0.0])
def test_auth_failures_against_legacys_rate_in_the_same_window_while_it_has_traffic(
    tmp_path: Path, share: float
) -> None:
    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch(status=401, share=share), new_share=50.0) as r:
            return await check_under_load(r, write_plan(tmp_path, AUTH_VS_LEGACY), r.metrics())

    outcome = asyncio.run(scenario())["watch-auth-tokens"]
    if share:
        assert outcome.status is Status.FAIL, outcome.reason
    else:
        assert outcome.status is Status.PASS, outcome.reason


STUCK = {"watch-stuck-requests": "{metric: oldest_in_flight_s, of: new, below: 1s}"}


@pytest.mark.parametrize("hang", [True, False])
def test_a_request_that_never_gets_an_answer_fires_the_stuck_request_detector(
    tmp_path: Path, hang: bool
) -> None:
    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch(hang=hang)) as r:
            stuck = asyncio.create_task(send(r.url, 1, timeout=10))
            try:
                return await check_under_load(
                    r, write_plan(tmp_path, STUCK), r.metrics(), load=False
                )
            finally:
                stuck.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await stuck

    outcome = asyncio.run(scenario())["watch-stuck-requests"]
    if hang:
        assert outcome.status is Status.FAIL
        assert "requests in flight to new: 1" in outcome.reason
        (probe,) = outcome.probes
        (measure,) = probe.result.evidence
        assert isinstance(measure.value, float) and measure.value > 1.0
    else:
        assert outcome.status is Status.PASS, outcome.reason


def test_the_plans_own_sources_serve_gate_steps_through_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No metrics handed in: the plan's built-in proxy router system is read."""

    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch(status=429, share=0.2)) as r:
            monkeypatch.setenv("PROXY_ADMIN", r.admin)
            monkeypatch.setenv("PROXY_TOKEN", r.token)
            systems = (
                "  router: {kind: router, type: builtin, admin: '${PROXY_ADMIN}', "
                "token: '${PROXY_TOKEN}'}"
            )
            # the plan sets the check's window (1 s, not the 30 s default)
            gates = {
                "watch-rate-limiting": "{metric: rate_limited, of: new, below: 1%, window: 1s}"
            }
            loaded = write_plan(tmp_path, gates, systems)
            journal = open_journal(None, loaded.base_dir)
            runbook = Runbook(loaded, journal)
            stop = asyncio.Event()
            task = asyncio.create_task(traffic(r.url, stop))
            try:
                await asyncio.sleep(0.2)
                began = time.monotonic()
                outcomes = await run_checks(
                    loaded, select_steps(loaded, step_ids=["watch-rate-limiting"]), journal
                )
                assert time.monotonic() - began < 15
            finally:
                stop.set()
                await task
            state = runbook.state(CUTOVER + timedelta(hours=1))
            assert state.by_id("watch-rate-limiting").state is State.FAILED
            runbook.close()
            return {o.step.id: o for o in outcomes}

    outcome = asyncio.run(scenario())["watch-rate-limiting"]
    assert outcome.status is Status.FAIL, outcome.reason


# --- real servers: PostgreSQL ------------------------------------------------------------------


def _statements(pg_primary: PostgresServer, pg_url: str) -> None:
    if "shared_preload_libraries" not in pg_primary.settings:
        pytest.skip(f"the PostgreSQL in {pg_primary.bin_dir} does not ship pg_stat_statements")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


N_PLUS_ONE = {
    "watch-n-plus-one": "{metric: db_queries_per_request, of: new, source: postgres, below: 10}"
}


@pytest.mark.parametrize("queries", [50, 1])
def test_a_handler_running_50_selects_per_request_fires_the_n_plus_one_detector(
    tmp_path: Path, pg_primary: PostgresServer, pg_url: str, queries: int
) -> None:
    _statements(pg_primary, pg_url)

    async def scenario() -> dict[str, StepOutcome]:
        async with rig(tmp_path, Switch(queries=queries, db=pg_url)) as r:
            made: list[Metrics] = []

            async def requests(of: str | None) -> Observation:
                return await made[0].read("requests", of)  # as rollout.sources wires it

            made.append(r.metrics(PostgresSource(pg_url, requests=requests)))
            metrics = made[0]
            return await check_under_load(r, write_plan(tmp_path, N_PLUS_ONE), metrics)

    outcome = asyncio.run(scenario())["watch-n-plus-one"]
    (probe,) = outcome.probes
    (measure,) = probe.result.evidence
    assert isinstance(measure.value, float)
    if queries == 50:
        assert outcome.status is Status.FAIL, outcome.reason
        # the evidence names the statement and how often it ran per request
        assert "SELECT $1::int + $2" in outcome.reason and "/request" in outcome.reason
        # statements of requests still in flight at either edge of a short window skew it
        assert 40 <= measure.value <= 65
    else:
        assert outcome.status is Status.PASS, outcome.reason
        assert measure.value <= 1.5
    assert "changeover-metrics" not in outcome.reason  # our own reads are not counted


POOL = {"watch-pool-exhaustion": "{metric: db_connections, source: postgres, below: 50%}"}


@pytest.mark.parametrize("hold", [True, False])
def test_holding_most_connections_fires_the_pool_exhaustion_detector(
    tmp_path: Path, pg_url: str, hold: bool
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (limit,) = conn.execute("SHOW max_connections").fetchone()  # type: ignore[misc]
        (busy,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
    wanted = int(int(limit) * 0.6) - int(busy) if hold else 0
    with contextlib.ExitStack() as held:
        for _ in range(max(wanted, 0)):
            c = held.enter_context(psycopg.connect(pg_url))
            c.execute("SELECT 1")  # a transaction left open: idle in transaction
        loaded = write_plan(tmp_path, POOL)
        step = loaded.plan.step("watch-pool-exhaustion")

        async def scenario() -> list[tuple[str, Any]]:
            metrics = Metrics([PostgresSource(pg_url)])
            try:
                return await check_gate_step(step, metrics.read, window_s=0.5)
            finally:
                await metrics.close()

        ((_, result),) = asyncio.run(scenario())
    if hold:
        assert result.status is Status.FAIL, result.reason
        assert f"of max_connections {limit} in use" in result.reason
        assert "idle in transaction" in result.reason
    else:
        assert result.status is Status.PASS, result.reason


# --- real process: memory that grows -----------------------------------------------------------

_GROWER = """
import sys, time
grow = sys.argv[1] == "grow"
kept = []
print("ready", flush=True)
for _ in range(100):
    if grow:
        kept.append(bytearray(2 * 1024 * 1024))
        for i in range(0, len(kept[-1]), 4096):
            kept[-1][i] = 1  # touched: resident, not just reserved
    time.sleep(0.05)
"""


@contextlib.contextmanager
def process(mode: str) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _GROWER, mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


@pytest.mark.parametrize("mode", ["grow", "steady"])
def test_memory_that_keeps_growing_fires_the_leak_detector(tmp_path: Path, mode: str) -> None:
    loaded = write_plan(tmp_path, {"watch-leaks": "{metric: memory_leak, of: new}"})
    step = loaded.plan.step("watch-leaks")
    with process(mode) as child:

        async def scenario() -> list[tuple[str, Any]]:
            metrics = Metrics([ProcessSource({"new": ProcessMatch(pid=child.pid)})])
            try:
                return await check_gate_step(step, metrics.read, window_s=WINDOW_S)
            finally:
                await metrics.close()

        ((_, result),) = asyncio.run(scenario())
    verdict = result.details["verdict"]
    assert isinstance(verdict, dict) and verdict["samples"] == LOOKS
    if mode == "grow":
        assert result.status is Status.FAIL, result.reason
        assert isinstance(verdict["observed"], float) and verdict["observed"] > 10.0
    else:
        assert result.status is Status.PASS, result.reason
