"""The actions the controller runs itself: the write handoff (both ways) and legacy read-only.

``migrate.handoff`` moves write ownership to the new app through the built-in proxy's write hold
(``changeover.migrate.handoff``), reading the plan's ``migrate:`` section; a rollback after it
runs the same handoff back first, so no write is lost whichever way the night goes.
``readonly`` puts the legacy app in read-only mode: the built-in proxy already sends every write
to the write owner, and a ``command`` (an argv list, never a shell string) runs the app's own hook.
Other actions (deploy, cache.warm, …) are done by hand and signed off until they are automated.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.probes.base import ProbeContext
from changeover.secrets import REDACTOR
from changeover.traffic.router import Router

AUTOMATED = frozenset({"route", "migrate.handoff", "readonly"})


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
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ActionFailed(f"readonly hook {argv[0]!r} did not run: {exc}") from exc
        if done.returncode != 0:
            tail = REDACTOR.scrub((done.stderr or done.stdout).strip())[-300:]
            raise ActionFailed(f"readonly hook exited {done.returncode}: {tail}")
        return {"hook": argv[0], "exit": 0}
    if isinstance(router, BuiltinRouter):
        return {"pinned": "the built-in proxy sends every write to the write owner"}
    raise ActionFailed(
        "readonly: give a command (the legacy app's read-only hook); without the built-in "
        "proxy nothing else keeps writes away from legacy"
    )
