"""``drill.rollback``: cut over under load, roll back, and prove nothing was lost.

With the sync follower running (``migrate.sync``: started or reused), under bounded loopback
load through the router with writes recorded: shift the weights to new step by step (10 → 50
→ 100 %, or the plan's ``weights``), hand writes off to new once it takes all traffic (when the
plan migrates), bake, then roll back exactly as on the night — a rollback request answered by
the rollout ``Controller`` (immediate: all traffic to legacy in one step, writes handed back).
Then: the sync drained, ``verify_database`` equal, and every acknowledged write found in both
PostgreSQL and SQLite. The controller's events go to a scratch journal next to the plan's, so
the real rollout's state never sees a rollback that was only a drill.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator

from changeover.drills.failover import WriteRequest
from changeover.drills.load import BackgroundLoad, drill_mix, load_numbers
from changeover.drills.result import DrillFailed, DrillLog, DrillResult, parse_params
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError, UsageError
from changeover.journal import ACTION_INTENT, ACTION_OUTCOME
from changeover.journal.sqlite import SqliteJournal
from changeover.metrics.base import Observation
from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR
from changeover.traffic.builtin import BuiltinRouter
from changeover.traffic.route import set_route
from changeover.traffic.router import Router
from changeover.units import Duration, Ratio

ACTOR = "changeover drill"
DRAIN_POLL_S = 0.2


class RollbackParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str = "new"
    legacy: str = "legacy"
    through: str = "public"
    weights: list[float] = Field(default_factory=lambda: [10.0, 50.0, 100.0])
    weight: float | None = Field(None, gt=0, le=100, description="shift straight to this")
    bake: Duration = timedelta(seconds=2)
    rate: float = 20.0
    path: str | None = None
    write: WriteRequest | None = None
    write_share: float = Field(0.2, gt=0, lt=1)
    error_budget: Ratio = 0.001
    drain_within: Duration = timedelta(seconds=60)

    @field_validator("weights")
    @classmethod
    def _percentages(cls, weights: list[float]) -> list[float]:
        if not weights or any(not 0 < w <= 100 for w in weights):
            raise ValueError("a list of percentages on new, each above 0 and at most 100")
        return weights

    def steps(self) -> list[float]:
        return [self.weight] if self.weight is not None else list(self.weights)


def judge_rollback(numbers: dict[str, Any], params: RollbackParams) -> list[str]:
    """Why the drill failed (empty: it passed), from what was measured."""
    reasons: list[str] = []
    if numbers.get("rolled_back") is not True:
        reasons.append("the controller did not roll back")
    if numbers.get("legacy_share_after") != 100.0:
        reasons.append(
            f"after the rollback the router shows {numbers.get('legacy_share_after')} % on "
            f"{params.legacy}, not 100 %"
        )
    writes = str(numbers.get("writes_owner", ""))
    if writes.startswith("NOT"):
        reasons.append(f"writes were not handed back: {writes}")
    if numbers.get("drained") is False:
        reasons.append(
            f"the sync did not drain within {params.drain_within.total_seconds():g} s "
            "after the rollback"
        )
    if numbers.get("verify_equal") is False:
        reasons.append(
            f"SQLite and PostgreSQL differ after the rollback: {numbers.get('verify_differing')} "
            "rows ('changeover migrate verify' lists them)"
        )
    lost = numbers.get("writes_lost", 0)
    if lost:
        reasons.append(
            f"{lost} acknowledged writes are missing after the rollback "
            f"(first ids: {numbers.get('writes_lost_ids')})"
        )
    if params.write is not None and params.write.table and not numbers.get("writes_acknowledged"):
        reasons.append("no write of the drill's load was acknowledged, so none could be checked")
    requests, errors = numbers.get("requests", 0), numbers.get("errors", 0)
    if requests and errors / requests > params.error_budget:
        reasons.append(
            f"{errors} of {requests} requests failed ({100 * errors / requests:.3f} %); the "
            f"error budget is {100 * params.error_budget:g} %"
        )
    return reasons


async def run_rollback(
    runbook: Runbook, router: Router, params: dict[str, Any], actor: str = ACTOR
) -> DrillResult:
    """Run the rollback drill; every step journaled, the verdict in the result."""
    chosen = parse_params(RollbackParams, params, "drill.rollback")
    log = DrillLog(runbook.journal, "rollback", actor)
    drill = _Rollback(runbook, router, chosen, log, actor)
    try:
        numbers = await drill.run()
    except DrillFailed as exc:
        return log.finish(drill.numbers, [str(exc)], drill.notes)
    finally:
        drill.scratch.close()
    return log.finish(numbers, judge_rollback(numbers, chosen), drill.notes)


class _Rollback:
    def __init__(
        self, runbook: Runbook, router: Router, params: RollbackParams, log: DrillLog, actor: str
    ) -> None:
        from changeover.rollout.actions import state_dir

        self.runbook = runbook
        self.router = router
        self.params = params
        self.log = log
        self.actor = actor
        self.ctx = ProbeContext(runbook.plan.systems, base_dir=runbook.loaded.base_dir)
        self.numbers: dict[str, Any] = {}
        self.notes: list[str] = []
        new = self.ctx.system(params.system, ["app"])
        self.ctx.system(params.legacy, ["app"])
        through = self.ctx.system(params.through, ["http", "app"])
        if through.url is None:
            raise UsageError(f"drill.rollback: system {params.through!r} has no url")
        self.public = self.ctx.secret(through.url, what=f"systems.{params.through}.url")
        self.read_path = params.path or new.health
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = state_dir(runbook) / "drills"
        self.record = folder / f"rollback-{stamp}-writes.jsonl"
        # The controller's own events (weights, handoff, rollback) go here, not to the plan's
        # journal: a rollback there would make the real 'changeover run' think it rolled back.
        self.scratch = Runbook(runbook.loaded, SqliteJournal(folder / f"rollback-{stamp}.db"))
        self.numbers["scratch_journal"] = str(self.scratch.journal.location)
        self.migrates = runbook.plan.migrate is not None

    async def run(self) -> dict[str, Any]:
        await self._preconditions()
        if self.migrates:
            await self._sync()
        load = BackgroundLoad(
            self.public + "/",
            self.params.rate,
            drill_mix(self.read_path, self._write_entry(), self.params.write_share),
            record=self.record,
        )
        self.record.parent.mkdir(parents=True, exist_ok=True)
        await load.start()
        try:
            try:
                await self._cut_over()
            except (DrillFailed, ChangeoverError):
                await self._undo_after_failure()
                raise
            await self._roll_back()
            await asyncio.sleep(self.params.bake.total_seconds())
        except BaseException:
            await load.cancel()
            raise
        self.numbers |= load_numbers(await load.stop())
        if self.migrates:
            await self._continuity()
        elif self.params.write is not None:
            self.notes.append("the plan has no migrate: section: writes were not looked up")
        return self.numbers

    def _write_entry(self) -> dict[str, Any] | None:
        write = self.params.write
        if write is None:
            self.notes.append(
                "no 'write' request given: the drill's load only reads, so no acknowledged "
                "write was checked (give write: {path, body, table})"
            )
            return None
        return write.model_dump(exclude={"table", "key"}, exclude_none=True)

    async def _preconditions(self) -> None:
        started = time.monotonic()
        weights = await self.router.weights()
        if weights[self.params.system] > 0:
            raise DrillFailed(
                f"the drill starts from all traffic on {self.params.legacy}, but the router "
                f"shows {weights.describe()}: run it before the cutover"
            )
        owner = "legacy"
        if self.migrates:
            from changeover.migrate.handoff import read_handoff
            from changeover.rollout.actions import migration_endpoints

            _, url, _ = await asyncio.to_thread(migration_endpoints, self.runbook)
            state = await asyncio.to_thread(read_handoff, url)
            owner = state.owner
            if owner != "legacy" or state.phase != "idle":
                raise DrillFailed(
                    f"writes are owned by {owner} (handoff phase {state.phase}): the drill "
                    "starts with legacy owning writes"
                )
        self.log.step("starting-point", started, {"weights": weights.describe(), "owner": owner})

    async def _sync(self) -> None:
        from changeover.rollout.actions import ActionFailed, migrate_sync

        started = time.monotonic()
        try:
            detail = await migrate_sync(self.runbook)
        except ActionFailed as exc:
            raise DrillFailed(str(exc)) from exc
        self.log.step("sync-running", started, {"pid": detail["pid"], "lag": detail["lag"]})

    async def _cut_over(self) -> None:
        router_name = self._router_name()
        new, legacy = self.params.system, self.params.legacy
        for weight in self.params.steps():
            started = time.monotonic()
            try:
                observed = await set_route(
                    self.scratch, self.router, router_name, {legacy: 100 - weight, new: weight}
                )
            except ChangeoverError as exc:
                raise DrillFailed(f"shifting to {weight:g} % on {new}: {exc}") from exc
            self.log.step(f"shift-{weight:g}", started, {"weights": observed.describe()})
            await asyncio.sleep(self.params.bake.total_seconds())
        if self.migrates and self.params.steps()[-1] >= 100:
            await self._hand_off()
            await asyncio.sleep(self.params.bake.total_seconds())

    async def _hand_off(self) -> None:
        from changeover.rollout.actions import ActionFailed, handoff

        if not isinstance(self.router, BuiltinRouter):
            self.notes.append(
                "writes stayed with legacy: the handoff needs the built-in proxy's write hold"
            )
            return
        started = time.monotonic()
        payload = {"step": "drill-handoff", "action": "migrate.handoff", "to": "new"}
        self.scratch.journal.append(ACTION_INTENT, payload, actor=self.actor)
        try:
            detail = await handoff(self.scratch, self.router, "new")
        except (ActionFailed, ChangeoverError) as exc:
            self.scratch.journal.append(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
            raise DrillFailed(f"handing writes to new: {exc}") from exc
        # The controller hands writes back on rollback when its journal shows this outcome.
        self.scratch.journal.append(ACTION_OUTCOME, {**payload, "ok": True, "detail": detail})
        self.numbers["handoff_pause_s"] = detail.get("pause_seconds")
        self.log.step("writes-handed-off", started, {"pause_s": detail.get("pause_seconds")})

    async def _roll_back(self) -> None:
        from changeover.rollout.controller import Controller, request_rollback

        started = time.monotonic()
        request_rollback(self.scratch, "immediate", "rollback drill", self.actor)
        controller = Controller(
            self.scratch,
            self.router,
            _no_metrics,
            legacy=self.params.legacy,
            new=self.params.system,
            actor=self.actor,
        )
        result = await controller.run()
        done = result.rollback or {}
        weights = await self.router.weights()
        self.numbers |= {
            "rolled_back": result.outcome == "rolled_back",
            "rollback_s": done.get("seconds"),
            "writes_owner": done.get("writes"),
            "legacy_share_after": weights[self.params.legacy],
        }
        self.log.step(
            "rolled-back",
            started,
            {"weights": weights.describe(), "writes": done.get("writes")},
            result.outcome == "rolled_back",
        )

    async def _undo_after_failure(self) -> None:
        """The cut-over failed half-way: roll back as the drill would, so traffic and writes
        are on legacy again; if even that fails, say so loudly."""
        try:
            await self._roll_back()
        except (DrillFailed, ChangeoverError) as exc:
            self.notes.append(
                f"the drill failed AND could not roll back ({exc}): check 'changeover route "
                "show' and 'changeover migrate status' now"
            )
        else:
            self.notes.append(
                f"rolled back after the failure: {self.numbers.get('writes_owner')}, "
                f"{self.params.legacy} at {self.numbers.get('legacy_share_after')} %"
            )

    def _router_name(self) -> str:
        from changeover.traffic.route import router_name

        return router_name(self.runbook.plan)

    async def _continuity(self) -> None:
        from changeover.migrate.status import migration_status
        from changeover.migrate.verify import verify_database
        from changeover.rollout.actions import migration_endpoints

        source, url, pg_plan = await asyncio.to_thread(migration_endpoints, self.runbook)
        started = time.monotonic()
        deadline = started + self.params.drain_within.total_seconds()
        drained = False
        while time.monotonic() < deadline:
            status = await asyncio.to_thread(migration_status, source, url, pg_plan)
            pending = [(status.get(side) or {}).get("rows", 0) for side in ("forward", "reverse")]
            if not any(pending):
                drained = True
                break
            await asyncio.sleep(DRAIN_POLL_S)
        self.numbers["drained"] = drained
        self.log.step("sync-drained", started, {"drained": drained}, drained)

        started = time.monotonic()
        report = await asyncio.to_thread(verify_database, source, url, pg_plan)
        differing = sum(t.missing + t.extra + t.different for t in report.tables)
        self.numbers |= {
            "verify_equal": report.equal,
            "verify_rows": sum(t.source_rows for t in report.tables),
            "verify_differing": differing,
        }
        self.log.step("verified", started, {"equal": report.equal, "differing": differing})

        write = self.params.write
        if write is None or write.table is None:
            return
        started = time.monotonic()
        acknowledged = acknowledged_keys(self.record, write.key)
        missing = await asyncio.to_thread(
            _missing_keys, source, url, write.table, write.key, acknowledged
        )
        self.numbers |= {
            "writes_acknowledged": len(acknowledged),
            "writes_lost": len(missing),
            "writes_lost_ids": missing[:10],
        }
        self.log.step(
            "writes-found", started, {"acknowledged": len(acknowledged), "lost": len(missing)}
        )


async def _no_metrics(metric: str, of: str | None, source: str | None) -> Observation:
    raise ChangeoverError("the rollback drill judges no gates")


def acknowledged_keys(record: Path, key: str) -> list[Any]:
    """The ``key`` of every write the load was told succeeded (2xx with a JSON answer)."""
    keys: list[Any] = []
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DrillFailed(f"cannot read the drill's write record {record}: {exc}") from exc
    for line in lines:
        entry = json.loads(line)
        status = entry.get("status")
        if status is None or not 200 <= status < 300:
            continue
        try:
            answer = json.loads(entry.get("body") or "null")
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or key not in answer:
            raise DrillFailed(
                f"an acknowledged write's answer has no {key!r} field: set write.key to the "
                "field that identifies the written row"
            )
        keys.append(answer[key])
    return keys


def _missing_keys(
    sqlite_path: str, pg_url: str, table: str, key: str, keys: Sequence[Any]
) -> list[Any]:
    """The keys found in PostgreSQL and SQLite both are kept; the others are lost writes."""
    if not keys:
        return []
    query = sql.SQL("SELECT {key} FROM public.{table} WHERE {key} = ANY(%s)").format(
        key=sql.Identifier(key), table=sql.Identifier(table)
    )
    try:
        with psycopg.connect(pg_url, connect_timeout=10, autocommit=True) as conn:
            in_pg = {row[0] for row in conn.execute(query, [list(keys)]).fetchall()}
    except psycopg.Error as exc:
        reason = REDACTOR.scrub(str(exc)).strip()
        raise DrillFailed(f"cannot look the writes up in PostgreSQL: {reason}") from exc
    quoted_key, quoted_table = _sqlite_name(key), _sqlite_name(table)
    in_sqlite: set[Any] = set()
    try:
        with closing(sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=30)) as conn:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {quoted_key} FROM {quoted_table} WHERE {quoted_key} IN ({marks})",
                    chunk,
                ).fetchall()
                in_sqlite |= {row[0] for row in rows}
    except sqlite3.Error as exc:
        raise DrillFailed(f"cannot look the writes up in SQLite: {exc}") from exc
    return [k for k in keys if k not in in_pg or k not in in_sqlite]


def _sqlite_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
