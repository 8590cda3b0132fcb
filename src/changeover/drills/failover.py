"""``drill.failover``: lose a new-app instance under load, then lose the PostgreSQL primary.

Part one, under bounded loopback load through the router: stop one instance (SIGTERM, SIGKILL
after ``stop_grace``; the process listening on its port, or the plan's ``stop`` argv), time how
long until the router takes it out, count the errors the clients saw against the error budget,
start it again (its deployer, or the plan's ``start`` argv) and time its return. Part two, when
``database`` is given: stop the primary, ``pg_ctl promote`` the replica, and time until every
instance is healthy again and a write through the app succeeds (the apps reach the promoted
server through a multi-host URL with ``target_session_attrs=read-write``). Verdicts:
``judge_failover``, a pure function of the numbers and the limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from changeover.drills.load import BackgroundLoad, drill_mix, load_numbers
from changeover.drills.processes import listening_pid, run_argv, stop_pid
from changeover.drills.result import DrillFailed, DrillLog, DrillResult, parse_params
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError, UsageError
from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR
from changeover.traffic.builtin import BuiltinRouter
from changeover.traffic.router import Router
from changeover.units import Duration, Ratio

POLL_S = 0.05
HTTP_TIMEOUT_S = 2.0
ACTOR = "changeover drill"


class WriteRequest(BaseModel):
    """A write the drill sends itself: to prove an app writes again (failover), or to record
    acknowledged writes and look each one up afterwards (rollback: ``table``/``key``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: str = "POST"
    path: str = Field(pattern=r"^/")
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    table: str | None = None  # where an acknowledged write lands (rollback drill)
    key: str = "id"  # the answer's JSON field and the table's column that identify it


class DatabaseFailover(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    replica: str = Field(description="the postgres system of the replica to promote")
    data_dir: str | None = Field(None, description="the replica's data directory (pg_ctl)")
    primary_data_dir: str | None = Field(None, description="stopped with pg_ctl -m immediate")
    primary_stop: list[str] | None = Field(None, description="argv that stops the primary")
    pg_ctl: str | None = None
    reconnect_within: Duration = timedelta(seconds=30)
    write: WriteRequest | None = None


class FailoverParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str = "new"
    instance: str | None = None
    through: str = "public"
    path: str | None = None
    rate: float = 50.0
    error_budget: Ratio = 0.001
    eject_within: Duration = timedelta(seconds=10)
    readmit_within: Duration = timedelta(seconds=30)
    stop: list[str] | None = None
    start: list[str] | None = None
    stop_grace: Duration = timedelta(seconds=5)
    settle: Duration = timedelta(seconds=2)
    database: DatabaseFailover | None = None


def judge_failover(numbers: dict[str, Any], params: FailoverParams) -> list[str]:
    """Why the drill failed (empty: it passed), from what was measured."""
    reasons: list[str] = []
    ejected = numbers.get("ejected_after_s")
    bound = params.eject_within.total_seconds()
    if ejected is None:
        reasons.append(f"the router never took the stopped instance out (waited {bound:g} s)")
    elif ejected > bound:
        reasons.append(f"the router took the stopped instance out after {ejected:.2f} s; "
                       f"the bound is {bound:g} s")  # fmt: skip
    requests, errors = numbers.get("requests", 0), numbers.get("errors", 0)
    budget = params.error_budget
    if requests == 0:
        reasons.append("no request of the drill's load was sent")
    elif errors / requests > budget:
        reasons.append(
            f"{errors} of {requests} requests failed ({100 * errors / requests:.3f} %) while the "
            f"instance was down; the error budget is {100 * budget:g} %"
        )
    readmitted = numbers.get("readmitted_after_s")
    bound = params.readmit_within.total_seconds()
    if readmitted is None:
        reasons.append(f"the restarted instance was not taken back within {bound:g} s")
    if params.database is not None:
        reconnect = numbers.get("reconnect_s")
        bound = params.database.reconnect_within.total_seconds()
        if reconnect is None:
            reasons.append(f"the app did not write through the promoted server within {bound:g} s")
        elif reconnect > bound:
            reasons.append(f"the app wrote again {reconnect:.2f} s after the promotion; "
                           f"the bound is {bound:g} s")  # fmt: skip
    return reasons


async def run_failover(
    runbook: Runbook, router: Router, params: dict[str, Any], actor: str = ACTOR
) -> DrillResult:
    """Run the failover drill; every step journaled, the verdict in the result."""
    chosen = parse_params(FailoverParams, params, "drill.failover")
    drill = _Failover(runbook, router, chosen, DrillLog(runbook.journal, "failover", actor))
    try:
        numbers = await drill.instance_part()
        if chosen.database is not None:
            numbers |= await drill.database_part(chosen.database)
    except DrillFailed as exc:
        return drill.log.finish(drill.numbers, [str(exc)], drill.notes)
    reasons = judge_failover(numbers, chosen)
    return drill.log.finish(numbers, reasons, drill.notes)


class _Failover:
    def __init__(
        self, runbook: Runbook, router: Router, params: FailoverParams, log: DrillLog
    ) -> None:
        self.runbook = runbook
        self.router = router
        self.params = params
        self.log = log
        self.ctx = ProbeContext(runbook.plan.systems, base_dir=runbook.loaded.base_dir)
        self.numbers: dict[str, Any] = {}
        self.notes: list[str] = []
        self.stopped = self.restarted = False
        system = self.ctx.system(params.system, ["app"])
        if not system.instances:
            raise UsageError(f"drill.failover: app {params.system!r} has no instances")
        names = [i.name for i in system.instances]
        name = params.instance or names[0]
        if name not in names:
            raise UsageError(
                f"drill.failover: {params.system} has no instance {name!r} "
                f"(instances: {', '.join(names)})"
            )
        self.system = system
        self.instance = next(i for i in system.instances if i.name == name)
        self.urls = {
            i.name: self.ctx.secret(i.url, what=f"instance {i.name} url").rstrip("/")
            for i in system.instances
        }
        through = self.ctx.system(params.through, ["http", "app"])
        if through.url is None:
            raise UsageError(f"drill.failover: system {params.through!r} has no url")
        self.public = self.ctx.secret(through.url, what=f"systems.{params.through}.url")

    # --- part one: an instance ------------------------------------------------------------

    async def instance_part(self) -> dict[str, Any]:
        name, key = self.instance.name, f"{self.params.system}/{self.instance.name}"
        started = time.monotonic()
        health = await self._router_health()
        down = [k for k, ok in health.items() if k.startswith(f"{self.params.system}/") and not ok]
        if down:
            raise DrillFailed(
                f"the router already has {', '.join(down)} out before the drill: bring it back "
                "first (a drill on a degraded pool proves nothing)"
            )
        if key not in health:
            raise DrillFailed(f"the router does not know {key} (it knows {', '.join(health)})")
        self.log.step("router-healthy", started, {"instances": len(health)})

        path = self.params.path or self.system.health
        load = BackgroundLoad(self.public + "/", self.params.rate, drill_mix(path, None, 0.0))
        await load.start()
        try:
            settle = self.params.settle.total_seconds()
            await asyncio.sleep(settle)
            started = time.monotonic()
            self.stopped = True  # (or half-stopped): from here on, a failure starts it again
            how = await self._stop_instance()
            self.log.step("instance-stopped", started, {"instance": name, "how": how})
            bound = self.params.eject_within.total_seconds()
            ejected = await _until(lambda: self._healthy(key, False), bound + 5)
            ejected_after = None if ejected is None else ejected - started
            self.numbers["ejected_after_s"] = _round(ejected_after)
            self.log.step(
                "instance-ejected", started, {"after_s": _round(ejected_after)}, ejected is not None
            )
            await asyncio.sleep(settle)
            started = time.monotonic()
            await self._start_instance()
            self.restarted = True
            self.log.step("instance-restarted", started, {"instance": name})
            back = await _until(
                lambda: self._healthy(key, True), self.params.readmit_within.total_seconds()
            )
            readmitted = None if back is None else back - started
            self.numbers["readmitted_after_s"] = _round(readmitted)
            self.log.step(
                "instance-readmitted", started, {"after_s": _round(readmitted)}, back is not None
            )
            await asyncio.sleep(settle)
        except BaseException:
            await load.cancel()
            if self.stopped and not self.restarted:
                await self._restart_after_failure()
            raise
        result = await load.stop()
        self.numbers |= load_numbers(result)
        return self.numbers

    async def _restart_after_failure(self) -> None:
        """The drill failed with the instance down: start it again, or say it is still down."""
        try:
            await self._start_instance()
        except (DrillFailed, ChangeoverError) as exc:
            self.notes.append(f"{self.instance.name} is STILL STOPPED: {exc}")
        else:
            self.notes.append(f"{self.instance.name} was started again after the failure")

    async def _stop_instance(self) -> str:
        if self.params.stop:
            await run_argv(self.params.stop, f"stop {self.instance.name}")
            return f"ran {self.params.stop[0]}"
        pid = await asyncio.to_thread(listening_pid, self.urls[self.instance.name])
        ended = await stop_pid(pid, self.params.stop_grace.total_seconds())
        return f"pid {pid} {ended}"

    async def _start_instance(self) -> None:
        if self.params.start:
            await run_argv(self.params.start, f"start {self.instance.name}")
            return
        if self.instance.deploy is None:
            raise DrillFailed(
                f"instance {self.instance.name} has no deploy and the drill no 'start' argv: "
                "start it by hand now"
            )
        from changeover.rollout.actions import ActionFailed, deploy

        try:
            await deploy(self.runbook, {"instances": [self.instance.name]})
        except ActionFailed as exc:
            raise DrillFailed(f"the instance did not come back: {exc}") from exc

    async def _router_health(self) -> dict[str, bool]:
        """Instance key → in the router's rotation (the built-in proxy's health view)."""
        if isinstance(self.router, BuiltinRouter):
            headers = {"Authorization": f"Bearer {self.router.token}"} if self.router.token else {}
            try:
                async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                    response = await client.get(f"{self.router.admin}/v1/health", headers=headers)
                    response.raise_for_status()
            except httpx.HTTPError as exc:
                raise DrillFailed(
                    f"cannot read the proxy's health view: {REDACTOR.scrub(str(exc))}"
                ) from exc
            return {k: bool(v.get("healthy")) for k, v in response.json().items()}
        stats = await self.router.stats()
        return {f"{s.backend}/{s.instance}": s.status == "UP" for s in stats.instances}

    async def _healthy(self, key: str, wanted: bool) -> bool:
        return (await self._router_health()).get(key, False) is wanted

    # --- part two: the database ------------------------------------------------------------

    async def database_part(self, db: DatabaseFailover) -> dict[str, Any]:
        replica = self.ctx.system(db.replica, ["postgres"])
        replica_url = self.ctx.secret(replica.url, what=f"systems.{db.replica}.url")
        started = time.monotonic()
        if not await asyncio.to_thread(_in_recovery, replica_url):
            raise DrillFailed(f"{db.replica} is not a replica (pg_is_in_recovery() is false)")
        if not db.primary_stop and not db.primary_data_dir:
            raise DrillFailed(
                "database: give primary_data_dir or primary_stop — promoting the replica while "
                "the primary still takes writes would leave two primaries"
            )
        data_dir = self.ctx.path(db.data_dir) if db.data_dir else None
        pg_ctl = db.pg_ctl or _find_pg_ctl(data_dir)
        self.log.step("replica-in-recovery", started, {"replica": db.replica})

        stopped_at = time.monotonic()
        if db.primary_stop:
            await run_argv(db.primary_stop, "stop the primary")
        else:
            assert db.primary_data_dir is not None
            data = self.ctx.path(db.primary_data_dir)
            argv = [pg_ctl, "stop", "-D", str(data), "-m", "immediate", "-w"]
            await run_argv(argv, "pg_ctl stop (the primary)", user_of=data)
        self.log.step("primary-stopped", stopped_at, {})

        started = time.monotonic()
        try:
            if data_dir is not None:
                argv = [pg_ctl, "promote", "-D", str(data_dir), "-w", "-t", "60"]
                await run_argv(argv, "pg_ctl promote", user_of=data_dir)
            else:
                await asyncio.to_thread(_promote_sql, replica_url)
        except DrillFailed:
            self.notes.append(
                "the primary is STOPPED and the replica was not promoted: nothing takes writes "
                "— start the primary again or promote the replica by hand"
            )
            raise
        promoted_at = time.monotonic()
        if await asyncio.to_thread(_in_recovery, replica_url):
            raise DrillFailed(f"{db.replica} is still in recovery after the promotion")
        self.log.step("replica-promoted", started, {"how": "pg_ctl" if db.data_dir else "sql"})
        self.notes.append(
            f"{db.replica} is now the primary and the old primary is stopped: rebuild the old "
            "one as a replica of it (pg_basebackup) before the night"
        )

        bound = db.reconnect_within.total_seconds()
        wrote = await _until(lambda: self._app_writes(db.write), bound + 5)
        reconnect = None if wrote is None else wrote - promoted_at
        downtime = None if wrote is None else wrote - stopped_at
        self.log.step("app-reconnected", promoted_at, {"after_s": _round(reconnect)}, bool(wrote))
        return {
            "promote_s": _round(promoted_at - started),
            "reconnect_s": _round(reconnect),
            "write_downtime_s": _round(downtime),
        }

    async def _app_writes(self, write: WriteRequest | None) -> bool:
        """Every instance healthy, and (when given) the write accepted by the first one."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            try:
                for url in self.urls.values():
                    response = await client.get(url + self.system.health)
                    if not response.is_success:
                        return False
                if write is not None:
                    first = next(iter(self.urls.values()))
                    response = await client.request(
                        write.method,
                        first + write.path,
                        json=write.body,
                        headers=write.headers,
                    )
                    return response.is_success
            except httpx.HTTPError:
                return False
        return True


async def _until(done: Callable[[], Awaitable[bool]], timeout: float) -> float | None:
    """The monotonic time ``done()`` first held, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await done():
                return time.monotonic()
        except DrillFailed:
            pass  # a router or app busy for a moment: asked again
        await asyncio.sleep(POLL_S)
    return None


def _in_recovery(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        reason = REDACTOR.scrub(str(exc)).strip()
        raise DrillFailed(f"cannot ask the replica whether it is in recovery: {reason}") from exc
    return bool(row and row[0])


def _promote_sql(url: str) -> None:
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT pg_promote(true, 60)")
    except psycopg.Error as exc:
        reason = REDACTOR.scrub(str(exc)).strip()
        raise DrillFailed(f"pg_promote() on the replica failed: {reason}") from exc


def _find_pg_ctl(data_dir: Path | None) -> str:
    """The pg_ctl of the data directory's major version (its PG_VERSION file) when this machine
    has that version's binaries, else the one changeover's embedded servers use."""
    from changeover.services import find_postgres_bin_dir
    from changeover.services.binaries import system_postgres_bin_dirs

    if data_dir is not None:
        try:
            version = (data_dir / "PG_VERSION").read_text(encoding="ascii").strip()
        except OSError:
            version = ""
        for bin_dir in system_postgres_bin_dirs():
            if version and version in bin_dir.parts and (bin_dir / "pg_ctl").exists():
                return str(bin_dir / "pg_ctl")
    found = find_postgres_bin_dir()
    if found is None:
        raise DrillFailed("pg_ctl not found: give database.pg_ctl (its path)")
    return str(found.path / "pg_ctl")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
