"""The actions the controller runs itself (``AUTOMATED``); any other action waits for a sign-off.

Migration: ``migrate.copy`` (bulk copy with change capture; resumable), ``migrate.sync`` (the
sync follower as a detached process that outlives the controller, one per plan, found again by
its pid file next to the journal), ``migrate.verify``, and ``migrate.handoff`` (writes move under
the built-in proxy's write hold; a rollback hands them back first). Apps: ``deploy``,
``readonly`` (the legacy app's hook) and ``cache.warm`` (GET paths on every instance).
After the cutover: ``advise`` (``changeover.advise``) and the cleanup actions ``archive.logs``,
``archive.sqlite``, ``revoke-write`` and ``decommission`` (``changeover.cleanup.actions``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import psycopg

from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR
from changeover.traffic.router import Router

if TYPE_CHECKING:
    from changeover.migrate.apply import Lag

AUTOMATED = frozenset(
    {
        "route",
        "migrate.copy",
        "migrate.sync",
        "migrate.verify",
        "migrate.handoff",
        "readonly",
        "deploy",
        "cache.warm",
        "advise",
        "archive.logs",
        "archive.sqlite",
        "revoke-write",
        "decommission",
        "drill.failover",
        "drill.rollback",
    }
)
# migrate.sync is done when the follower is this close to the SQLite changelog's head.
SYNC_CAUGHT_UP_ROWS = 50
SYNC_CAUGHT_UP_SECONDS = 1.0
SYNC_TIMEOUT = 120.0
# A follower just started must still be running after this long: a bad plan or a missing
# PG_URL makes it exit within a second, and a lag of 0 read before that proves nothing.
SYNC_SETTLE = 3.0
WARM_TIMEOUT = 30.0
# The followers this process started, so their exit is reaped (no zombie looks alive).
_FOLLOWERS: dict[int, subprocess.Popen[bytes]] = {}


async def run(
    name: str, params: Mapping[str, Any], runbook: Runbook, router: Router
) -> dict[str, Any]:
    """Run the automated action ``name`` (one of ``AUTOMATED`` except ``route``, which the
    controller does itself); its JSON-able detail is journaled with the outcome."""
    if name == "migrate.copy":
        return await asyncio.to_thread(migrate_copy, runbook, params)
    if name == "migrate.sync":
        return await migrate_sync(runbook)
    if name == "migrate.verify":
        return await asyncio.to_thread(migrate_verify, runbook)
    if name == "migrate.handoff":
        return await handoff(runbook, router, "new")
    if name == "cache.warm":
        return await cache_warm(runbook, params)
    if name == "deploy":
        return await deploy(runbook, params)
    if name == "readonly":
        return await asyncio.to_thread(readonly, params, router)
    if name == "advise":
        from changeover.advise.action import advise_step

        return await advise_step(runbook, params)
    if name in ("archive.logs", "archive.sqlite", "revoke-write", "decommission"):
        return await asyncio.to_thread(_cleanup, name, params, runbook)
    if name in ("drill.failover", "drill.rollback"):
        from changeover.drills import drill_action

        return await drill_action(name, dict(params), runbook, router)
    raise UsageError(f"action {name!r} is not automated by changeover run")


def _cleanup(name: str, params: Mapping[str, Any], runbook: Runbook) -> dict[str, Any]:
    from changeover.cleanup import actions as cleanup

    if name == "archive.logs":
        return cleanup.archive_logs(runbook, params)
    if name == "archive.sqlite":
        return cleanup.archive_sqlite(runbook, params)
    if name == "revoke-write":
        return cleanup.revoke_write(params)
    return cleanup.decommission(runbook, params)


class ActionFailed(Exception):
    """An action ran and failed; ``str()`` is the plain reason journaled with its outcome."""


def migration_endpoints(runbook: Runbook) -> tuple[str, str, Any]:
    """(SQLite path, resolved PostgreSQL URL, schema plan) from the plan's ``migrate:``."""
    from changeover.migrate.planning import sqlite_path
    from changeover.migrate.schema import plan_schema
    from changeover.migrate.sqlite import introspect
    from changeover.plan.systems import PostgresSystem

    migration = runbook.plan.migrate
    if migration is None:
        raise UsageError("the plan has no migrate: section; the handoff needs its source/target")
    base = runbook.loaded.base_dir
    path = sqlite_path(migration.source)
    source = path if path.is_absolute() else base / path
    system = runbook.plan.systems[migration.target]
    assert isinstance(system, PostgresSystem)
    ctx = ProbeContext(runbook.plan.systems, base_dir=base)
    url = ctx.secret(system.url, what=f"systems.{migration.target}.url")
    return str(source), url, plan_schema(introspect(source), dict(migration.casts))


def migrate_copy(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's bulk copy with change capture installed (``changeover migrate copy --capture``).

    Resumable: the copy keeps its state in PostgreSQL, so after a restart only the tables that
    did not commit are loaded; a copy that had already finished is reported, not repeated."""
    from changeover.migrate.copy import copy_database

    jobs = _positive_int(params, "jobs", 2, "migrate.copy")
    source, url, pg_plan = migration_endpoints(runbook)
    state = _copy_state(url)
    if state is not None and "finished" in state:
        return _finished_copy(url, state)
    summary = copy_database(source, url, pg_plan, jobs=jobs, capture=True)
    if summary.failed_statements:
        raise ActionFailed(_refused(list(summary.failed_statements)))
    return {
        "tables": {t.table: t.copied for t in summary.tables},
        "copied": summary.copied,
        "seconds": round(summary.seconds, 2),
    }


def _copy_state(url: str) -> dict[str, str] | None:
    """The copy's own record (``_changeover_copy``: item → value), or None before any copy."""
    from changeover.migrate.copy import COPY_STATE, MigrationError, connect_target
    from changeover.migrate.schema import quote

    with connect_target(url) as conn:
        try:
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"public.{quote(COPY_STATE)}",)
            ).fetchone()
            if not exists or not exists[0]:
                return None
            rows = conn.execute(f"SELECT item, value FROM public.{quote(COPY_STATE)}").fetchall()
        except psycopg.Error as exc:
            raise MigrationError(
                f"cannot read the copy's state ({COPY_STATE}): {REDACTOR.scrub(str(exc)).strip()}"
            ) from exc
    return {str(item): str(value) for item, value in rows}


def _finished_copy(url: str, state: Mapping[str, str]) -> dict[str, Any]:
    """The detail of a copy that finished before this run (a restart after it, or by hand)."""
    if "capture_head" not in state:
        raise ActionFailed(
            "migrate.copy: PostgreSQL already holds a finished copy made without change capture "
            "('migrate copy' without --capture), so migrate.sync cannot follow it: drop the "
            "copied tables and run this step again"
        )
    refused = _retry_statements(url, json.loads(state["finished"]))
    if refused:
        raise ActionFailed(_refused(refused))
    tables = {
        item.removeprefix("table:"): int(json.loads(value)[0])
        for item, value in state.items()
        if item.startswith("table:")
    }
    return {"tables": tables, "copied": sum(tables.values()), "already": True}


def _retry_statements(url: str, statements: Sequence[str]) -> list[tuple[str, str]]:
    """Run again the post-load statements PostgreSQL refused after the copy (the operator may
    have fixed the data since); the ones still refused, with the reason."""
    from changeover.migrate.copy import connect_target

    refused: list[tuple[str, str]] = []
    if not statements:
        return refused
    with connect_target(url) as conn:
        conn.execute("SET search_path TO public")
        for statement in statements:
            try:
                with conn.transaction():
                    conn.execute(statement)
            except (psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject):
                pass  # created by hand meanwhile
            except psycopg.Error as exc:
                refused.append((statement, REDACTOR.scrub(str(exc)).strip()))
    return refused


def _refused(refused: Sequence[tuple[str, str]]) -> str:
    statement, reason = refused[0]
    return (
        f"migrate.copy: the rows are copied but PostgreSQL refused {len(refused)} index or "
        f"constraint statement(s), first: {statement} ({reason}); fix the data or create them "
        "by hand, then run 'changeover run' again: this step tries them again"
    )


async def migrate_sync(runbook: Runbook, timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
    """Start ``changeover migrate sync`` for this plan as a detached process (unless one already
    runs), then wait until PostgreSQL is caught up with the SQLite changelog.

    The follower outlives the controller and follows the write owner through the handoff, so it
    is started once per plan: its pid file and log (``sync.pid``, ``sync.log``) sit next to the
    journal, and a live process with our command line is reused, never doubled."""
    source, url, _ = await asyncio.to_thread(migration_endpoints, runbook)
    copied = await asyncio.to_thread(_copy_state, url)
    if copied is None or "finished" not in copied or "capture_head" not in copied:
        # The follower would exit at once ("nothing to sync yet"): say why before starting it.
        raise ActionFailed(
            "migrate.sync: the bulk copy with change capture has not finished; run the "
            "migrate.copy step ('changeover migrate copy --capture') first"
        )
    lag = await asyncio.to_thread(_forward_lag, source, url)
    folder = state_dir(runbook)
    pid_file, log = folder / "sync.pid", folder / "sync.log"
    argv = sync_argv(runbook.loaded.path)
    pid = running_follower(pid_file, argv)
    started = pid is None
    if pid is None:
        pid = _start_follower(argv, log, pid_file)
    deadline = time.monotonic() + timeout
    settled = time.monotonic() + (SYNC_SETTLE if started else 0.0)
    while True:
        if not _is_follower(pid, argv):
            tail = REDACTOR.scrub(_tail(log)) or "(empty)"
            raise ActionFailed(
                f"migrate.sync: the sync follower (pid {pid}) exited; the end of {log}: {tail}"
            )
        caught_up = lag.rows <= SYNC_CAUGHT_UP_ROWS or lag.seconds < SYNC_CAUGHT_UP_SECONDS
        if caught_up and time.monotonic() >= settled:
            return {"pid": pid, "log": str(log), "started": started, "lag": lag.to_json()}
        if time.monotonic() >= deadline:
            raise ActionFailed(
                f"migrate.sync: the sync follower (pid {pid}) runs, but PostgreSQL is still "
                f"{lag.rows:,} changes ({lag.seconds:.1f}s) behind after {timeout:g}s; it keeps "
                f"running (see {log}): run 'changeover run' again to wait once more"
            )
        await asyncio.sleep(0.5)
        lag = await asyncio.to_thread(_forward_lag, source, url)


def _forward_lag(source: str, url: str) -> Lag:
    from changeover.migrate.apply import pending_forward

    lag = pending_forward(source, url, "public")
    if lag is None:
        raise ActionFailed(
            f"migrate.sync: {source} has no change capture; run the migrate.copy step "
            "('changeover migrate copy --capture') first"
        )
    return lag


def state_dir(runbook: Runbook) -> Path:
    """Where this plan's local run files go: next to a SQLite journal, else ``.changeover``."""
    from changeover.journal.sqlite import SqliteJournal

    if isinstance(runbook.journal, SqliteJournal):
        return runbook.journal.path.parent
    return runbook.loaded.base_dir / ".changeover"


def sync_argv(plan: Path) -> list[str]:
    """The follower's command line; the plan's PostgreSQL URL stays a reference it resolves."""
    return [sys.executable, "-m", "changeover", "migrate", "sync", "--plan", str(plan.resolve())]


def running_follower(pid_file: Path, argv: Sequence[str]) -> int | None:
    """The pid in ``pid_file`` when that process is alive and runs ``argv``, else None."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if _is_follower(pid, argv) else None


def _is_follower(pid: int, argv: Sequence[str]) -> bool:
    popen = _FOLLOWERS.get(pid)
    if popen is not None:
        # Ours: its exit status is authoritative, and right after the start its command line
        # may still read empty (the kernel is mid-exec).
        return popen.poll() is None
    try:
        process = psutil.Process(pid)
        # The interpreter's path may differ (a symlink, a venv); the arguments may not.
        return process.status() != psutil.STATUS_ZOMBIE and process.cmdline()[1:] == argv[1:]
    except psutil.Error:
        return False


def _start_follower(argv: list[str], log: Path, pid_file: Path) -> int:
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
            )
        _FOLLOWERS[popen.pid] = popen
        partial = pid_file.with_suffix(".pid.tmp")
        partial.write_text(f"{popen.pid}\n", encoding="utf-8")
        os.replace(partial, pid_file)
    except OSError as exc:
        raise ActionFailed(f"migrate.sync: cannot start the sync follower: {exc}") from exc
    return popen.pid


def _tail(log: Path, lines: int = 5, limit: int = 600) -> str:
    try:
        text = log.read_bytes()[-8192:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])[-limit:]


def migrate_verify(runbook: Runbook) -> dict[str, Any]:
    """Compare every row in PostgreSQL with SQLite (``changeover migrate verify``)."""
    from changeover.migrate.verify import verify_database

    source, url, pg_plan = migration_endpoints(runbook)
    report = verify_database(source, url, pg_plan)
    if not report.equal:
        differing = [t for t in report.tables if not t.equal]
        rows = sum(t.missing + t.extra + t.different for t in differing)
        names = ", ".join(t.table for t in differing[:5]) + (", …" if len(differing) > 5 else "")
        raise ActionFailed(
            f"migrate.verify: {rows:,} rows differ in {len(differing)} of {len(report.tables)} "
            f"tables ({names}): {sum(t.missing for t in differing):,} missing in PostgreSQL, "
            f"{sum(t.extra for t in differing):,} extra, "
            f"{sum(t.different for t in differing):,} different; "
            "'changeover migrate verify' lists each row"
        )
    return report.to_json(details=False)


async def cache_warm(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """GET each of ``paths`` (default: the health path) on every instance of an app system (or
    the ``instances`` named), ``rounds`` times; any answer but 2xx fails the step, naming the
    path and the instance."""
    from changeover.probes.http import HttpTargetParams, resolve_target

    name = params.get("system")
    if not isinstance(name, str) or not name:
        raise ActionFailed(
            "cache.warm: name the app system, e.g. "
            "{cache.warm: {system: new, paths: [/api/v1/items?limit=100]}}"
        )
    ctx = ProbeContext(runbook.plan.systems, base_dir=runbook.loaded.base_dir)
    system = ctx.system(name, ["app"])
    paths, note = _warm_paths(params.get("paths"), system.health)
    rounds = _positive_int(params, "rounds", 1, "cache.warm")
    known = [i.name for i in system.instances]
    chosen = params.get("instances")
    if chosen is not None:
        # The instances deployed so far: one not started yet has nothing to warm.
        if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
            raise ActionFailed("cache.warm: instances is a list of instance names, e.g. [new-1]")
        unknown = [c for c in chosen if c not in known]
        if unknown:
            raise ActionFailed(
                f"cache.warm: {name} has no instance {unknown[0]!r} "
                f"(instances: {', '.join(known) or 'none'})"
            )
    instances: list[str | None] = list(chosen or known) or [None]
    started = time.monotonic()
    for instance in instances:
        target = resolve_target(HttpTargetParams(system=name, instance=instance), ctx, ["app"])
        where = f"instance {instance}" if instance else f"system {name}"
        async with httpx.AsyncClient(
            headers=dict(target.headers), verify=target.verify, timeout=WARM_TIMEOUT
        ) as client:
            for _ in range(rounds):
                for path in paths:
                    await _warm(client, target.url(path), path, where)
    detail: dict[str, Any] = {
        "system": name,
        "instances": [i or name for i in instances],
        "paths": paths,
        "rounds": rounds,
        "requests": len(instances) * rounds * len(paths),
        "seconds": round(time.monotonic() - started, 2),
    }
    if note:
        detail["note"] = note
    return detail


def _warm_paths(value: Any, health: str) -> tuple[list[str], str | None]:
    if value is None:
        return [health], f"no paths given: warmed the health path {health} only"
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(p, str) and p.startswith("/") for p in value)
    ):
        raise ActionFailed(
            "cache.warm: paths must be a list of paths starting with /, "
            "e.g. [/api/v1/items?limit=100]"
        )
    return list(value), None


async def _warm(client: httpx.AsyncClient, url: str, path: str, where: str) -> None:
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        reason = REDACTOR.scrub(str(exc)) or type(exc).__name__
        raise ActionFailed(f"cache.warm: GET {path} on {where}: no answer ({reason})") from exc
    if not response.is_success:
        raise ActionFailed(
            f"cache.warm: GET {path} on {where} answered HTTP {response.status_code}"
        )


def _positive_int(params: Mapping[str, Any], key: str, default: int, action: str) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ActionFailed(f"{action}: {key} must be a whole number of at least 1, not {value!r}")
    return value


async def handoff(runbook: Runbook, router: Router, to: str) -> dict[str, Any]:
    """Move write ownership (``to`` = "new" or "legacy"); idempotent when already there."""
    from changeover.migrate.handoff import handoff as run_handoff
    from changeover.migrate.handoff import read_handoff
    from changeover.traffic.builtin import BuiltinRouter

    if not isinstance(router, BuiltinRouter):
        raise ActionFailed(
            "the write handoff needs the built-in proxy's write hold; with HAProxy or nginx "
            "run 'changeover migrate handoff --no-proxy' by hand and sign the step off"
        )
    source, url, pg_plan = await asyncio.to_thread(migration_endpoints, runbook)
    state = await asyncio.to_thread(read_handoff, url)
    if state.owner == to and state.phase == "idle":
        return {"owner": to, "already": True}
    result = await run_handoff(source, url, pg_plan, router, to=to)  # type: ignore[arg-type]
    return result.to_json()


def readonly(params: Mapping[str, Any], router: Router) -> dict[str, Any]:
    """The legacy app's read-only hook, or the built-in proxy's write pinning."""
    from changeover.traffic.builtin import BuiltinRouter

    command = params.get("command")
    if command:
        argv = _argv(command, "readonly: command", "[app-ctl, readonly]")
        undo = params.get("undo")
        if undo is not None:
            _argv(undo, "readonly: undo", "[app-ctl, writable]")  # refused before it is needed
        _run_argv(argv, "readonly hook", timeout=60)
        return {"hook": argv[0], "exit": 0, "undo": bool(undo)}
    if isinstance(router, BuiltinRouter):
        return {"pinned": "the built-in proxy sends every write to the write owner"}
    raise ActionFailed(
        "readonly: give a command (the legacy app's read-only hook); without the built-in "
        "proxy nothing else keeps writes away from legacy"
    )


def writable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Undo the read-only hook on rollback: the ``undo`` argv of the plan's readonly step."""
    argv = _argv(params.get("undo"), "readonly: undo", "[app-ctl, writable]")
    _run_argv(argv, "writable hook", timeout=60)
    return {"hook": argv[0], "exit": 0}


def _argv(command: object, what: str, example: str) -> list[str]:
    if not command or isinstance(command, str) or not isinstance(command, Sequence):
        raise ActionFailed(f"{what} must be an argv list, e.g. {example}")
    return [str(part) for part in command]


async def deploy(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """Start each named instance with its deployer, then wait for its startup log line and its
    health endpoint. Deployers (``systems.<app>.instances[].deploy``): ``command`` (an argv
    list run to completion, e.g. a deploy script), ``process`` (a local background process) or
    ``systemd`` (``systemctl start UNIT``)."""
    from changeover.plan.systems import AppSystem

    names = [str(n) for n in params.get("instances", [])]
    if not names:
        raise ActionFailed("deploy: name the instances, e.g. {deploy: {instances: [go-1]}}")
    found: dict[str, tuple[Any, Any]] = {}
    for system in runbook.plan.systems.values():
        if isinstance(system, AppSystem):
            for instance in system.instances:
                found.setdefault(instance.name, (system, instance))
    ctx = ProbeContext(runbook.plan.systems, base_dir=runbook.loaded.base_dir)
    done: dict[str, Any] = {}
    for name in names:
        if name not in found:
            raise ActionFailed(f"deploy: no instance {name!r} under any app system's instances")
        system, instance = found[name]
        how = instance.deploy
        if how is None or not (how.command or how.process or how.systemd):
            raise ActionFailed(
                f"deploy: instance {name!r} has no deploy command, process or systemd unit"
            )
        log = ctx.path(how.log) if how.log else None
        log_start = log.stat().st_size if log is not None and log.exists() else 0
        if how.process:
            argv = [str(part) for part in how.process]
            _start_process(argv, log, name)
        else:
            argv = list(how.command) if how.command else ["systemctl", "start", str(how.systemd)]
            await asyncio.to_thread(_run_argv, argv, f"deploy {name}")
        if log is not None and how.ready_pattern:
            await _wait_for_line(log, log_start, how.ready_pattern, name)
        url = ctx.secret(instance.url, what=f"instance {name} url").rstrip("/") + system.health
        await _wait_healthy(url, name)
        done[name] = {"deployer": argv[0], "healthy": url}
    return done


def _start_process(argv: list[str], log: Path | None, name: str) -> None:
    """Start a local process in its own session (it outlives ``changeover run``), output to log."""
    try:
        sink = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
            )
        finally:
            if log is not None:
                sink.close()  # type: ignore[union-attr]
    except OSError as exc:
        raise ActionFailed(f"deploy {name}: cannot start {argv[0]!r}: {exc}") from exc


def _run_argv(argv: list[str], what: str, timeout: float = 300) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ActionFailed(f"{what}: {argv[0]!r} did not run: {exc}") from exc
    if result.returncode != 0:
        tail = REDACTOR.scrub((result.stderr or result.stdout).strip())[-300:]
        raise ActionFailed(f"{what}: {argv[0]!r} exited {result.returncode}: {tail}")


async def _wait_for_line(
    log: Any, start: int, pattern: str, name: str, timeout: float = 60
) -> None:
    import time

    wanted = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            with open(log, "rb") as fp:
                fp.seek(start)
                text = fp.read().decode("utf-8", errors="replace")
            if any(wanted.search(line) for line in text.splitlines()):
                return
        await asyncio.sleep(0.2)
    raise ActionFailed(
        f"deploy {name}: no startup line matching {pattern!r} in {log} in {timeout:g}s"
    )


async def _wait_healthy(url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(url)
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = REDACTOR.scrub(str(exc)) or type(exc).__name__
            await asyncio.sleep(0.2)
    raise ActionFailed(f"deploy {name}: {url} not healthy within {timeout:g}s ({last})")
