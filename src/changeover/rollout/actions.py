"""The actions the controller runs itself: the write handoff (both ways) and legacy read-only.

``migrate.handoff`` moves write ownership to the new app through the built-in proxy's write hold
(``changeover.migrate.handoff``), reading the plan's ``migrate:`` section; a rollback after it
runs the same handoff back first, so no write is lost whichever way the night goes.
``readonly`` puts the legacy app in read-only mode: the built-in proxy already sends every write
to the write owner, and a ``command`` (an argv list, never a shell string) runs the app's own hook.
``deploy`` starts instances with their deployer and waits for the startup line and health.
Other actions (cache.warm, …) are done by hand and signed off until they are automated.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR
from changeover.traffic.router import Router

AUTOMATED = frozenset({"route", "migrate.handoff", "readonly", "deploy"})


async def run(
    name: str, params: Mapping[str, Any], runbook: Runbook, router: Router
) -> dict[str, Any]:
    """Run the automated action ``name`` (one of ``AUTOMATED`` except ``route``, which the
    controller does itself); its JSON-able detail is journaled with the outcome."""
    if name == "migrate.handoff":
        return await handoff(runbook, router, "new")
    if name == "deploy":
        return await deploy(runbook, params)
    if name == "readonly":
        return await asyncio.to_thread(readonly, params, router)
    raise UsageError(f"action {name!r} is not automated by changeover run")


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
        if isinstance(command, str) or not isinstance(command, Sequence):
            raise ActionFailed("readonly: command must be an argv list, e.g. [app-ctl, readonly]")
        argv = [str(part) for part in command]
        _run_argv(argv, "readonly hook", timeout=60)
        return {"hook": argv[0], "exit": 0}
    if isinstance(router, BuiltinRouter):
        return {"pinned": "the built-in proxy sends every write to the write owner"}
    raise ActionFailed(
        "readonly: give a command (the legacy app's read-only hook); without the built-in "
        "proxy nothing else keeps writes away from legacy"
    )


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
