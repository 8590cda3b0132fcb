"""The zero-loss write handoff: hold writes, drain, verify, flip the write owner, release.

Forward (legacy → new): catch up and verify outside the pause; then hold writes at the proxy
(waiting for writes already sent to finish), drain the SQLite changelog to zero, verify the keys
changed since the last verify, reset PostgreSQL identities past the maximum ids, swap capture
(SQLite triggers out, PostgreSQL triggers in, so every later write flows back to SQLite), flip the
write owner and release. ``back`` runs the same steps in the other direction.

Every step is idempotent and the phase is recorded in ``_changeover_handoff`` in PostgreSQL, so a
handoff killed at any point is finished (or safely repeated) by running it again; until then the
proxy keeps holding writes (bounded by its own max hold), so nothing reaches the wrong owner.
A failed drain or verify releases the hold with the owner unchanged and says why.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from changeover.migrate.apply import ForwardApplier, start_position
from changeover.migrate.capture import (
    changelog_head,
    install_capture,
    remove_triggers,
)
from changeover.migrate.copy import MigrationError, connect_target
from changeover.migrate.incremental import verify_changed
from changeover.migrate.reverse import (
    ReverseApplier,
    install_reverse_capture,
    remove_reverse_capture,
    set_reverse_position,
)
from changeover.migrate.schema import PgPlan, quote
from changeover.migrate.sqlite import connect_readonly
from changeover.migrate.verify import verify_database
from changeover.secrets import REDACTOR

HANDOFF_TABLE = "_changeover_handoff"
_CLOSE_ENOUGH = 100  # changelog entries left for the drain inside the pause
Owner = Literal["legacy", "new"]


class WriteSwitch(Protocol):
    """Where writes are held and routed: the built-in proxy (``BuiltinRouter``) fits."""

    async def hold(self, wait_writes: float | None = None) -> dict[str, Any]: ...
    async def set_write_owner(self, backend: str) -> dict[str, Any]: ...
    async def release(self) -> dict[str, Any]: ...


class NoSwitch:
    """No proxy: the operator has stopped writes to the legacy app some other way."""

    async def hold(self, wait_writes: float | None = None) -> dict[str, Any]:
        return {"writes_settled": True}

    async def set_write_owner(self, backend: str) -> dict[str, Any]:
        return {}

    async def release(self) -> dict[str, Any]:
        return {}


@dataclass
class HandoffResult:
    owner: Owner
    pause_seconds: float  # from hold to release: how long writes waited
    drained: int  # changelog entries applied inside the pause
    verified_keys: int  # keys re-verified inside the pause
    steps: list[tuple[str, float]] = field(default_factory=list)  # step, seconds
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "pause_seconds": round(self.pause_seconds, 4),
            "drained": self.drained,
            "verified_keys": self.verified_keys,
            "steps": [{"step": s, "seconds": round(t, 4)} for s, t in self.steps],
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class HandoffState:
    owner: Owner
    phase: str  # idle | holding | switched
    updated_at: object


def read_handoff(pg_url: str, schema: str = "public") -> HandoffState:
    """Who owns writes now (legacy until a handoff ran) and the phase of the last handoff."""
    with connect_target(pg_url) as conn:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{quote(schema)}.{quote(HANDOFF_TABLE)}",)
        ).fetchone()
        if not exists or not exists[0]:
            return HandoffState("legacy", "idle", None)
        row = conn.execute(
            f"SELECT owner, phase, updated_at FROM {quote(schema)}.{quote(HANDOFF_TABLE)}"
        ).fetchone()
    if row is None:
        return HandoffState("legacy", "idle", None)
    owner: Owner = "new" if row[0] == "new" else "legacy"
    return HandoffState(owner, str(row[1]), row[2])


def _set_phase(pg_url: str, schema: str, owner: Owner, phase: str) -> None:
    table = f"{quote(schema)}.{quote(HANDOFF_TABLE)}"
    with connect_target(pg_url) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY CHECK (id = 1), "
            "owner text NOT NULL, phase text NOT NULL, updated_at timestamptz NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {table} VALUES (1, %s, %s, now()) ON CONFLICT (id) DO UPDATE "
            "SET owner = EXCLUDED.owner, phase = EXCLUDED.phase, updated_at = now()",
            (owner, phase),
        )


class _Clock:
    def __init__(self, result: HandoffResult, on_step: Callable[[str, float], None] | None):
        self.result, self.on_step = result, on_step
        self.last = time.monotonic()

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.result.steps.append((name, now - self.last))
        if self.on_step is not None:
            self.on_step(name, now - self.last)
        self.last = now


async def handoff(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    switch: WriteSwitch,
    *,
    to: Owner = "new",
    schema: str = "public",
    backends: tuple[str, str] = ("legacy", "new"),
    wait_writes: float = 5.0,
    drain_timeout: float = 5.0,
    readonly_hook: Sequence[str] | None = None,
    on_step: Callable[[str, float], None] | None = None,
) -> HandoffResult:
    """Move write ownership to ``to`` without losing a write (steps: module docstring)."""
    state = read_handoff(pg_url, schema)
    if state.owner == to and state.phase == "idle":
        raise MigrationError(f"writes already belong to {to}: nothing to hand off")
    result = HandoffResult(owner=to, pause_seconds=0.0, drained=0, verified_keys=0)
    clock = _Clock(result, on_step)
    if to == "new":
        await _to_new(
            sqlite_path,
            pg_url,
            plan,
            switch,
            schema,
            backends[1],
            wait_writes,
            drain_timeout,
            state,
            result,
            clock,
        )
        if readonly_hook:
            result.warnings.extend(_run_hook(readonly_hook))
            clock.step("legacy read-only hook")
    else:
        await _to_legacy(
            sqlite_path,
            pg_url,
            plan,
            switch,
            schema,
            backends[0],
            wait_writes,
            drain_timeout,
            state,
            result,
            clock,
        )
    return result


async def _to_new(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    switch: WriteSwitch,
    schema: str,
    backend: str,
    wait_writes: float,
    drain_timeout: float,
    state: HandoffState,
    result: HandoffResult,
    clock: _Clock,
) -> None:
    swapped = state.owner == "new"  # killed after the swap: finish the flip and release only
    applier = None if swapped else ForwardApplier(sqlite_path, pg_url, plan, schema=schema)
    try:
        if applier is not None:
            _catch_up(applier.apply_batch)
            clock.step("catch up before the pause")
            _verify_changed(sqlite_path, pg_url, plan, schema, result, inside=False)
            clock.step("verify before the pause")

        def inside() -> None:
            assert applier is not None
            result.drained = _drain(applier.catch_up, applier.lag, drain_timeout)
            clock.step("drain changelog")
            result.verified_keys = _verify_changed(
                sqlite_path, pg_url, plan, schema, result, inside=True
            )
            clock.step("verify changed keys")
            with connect_target(pg_url) as conn, conn.transaction():
                conn.execute(f"SET search_path TO {quote(schema)}")
                for statement in plan.sequence_resets:
                    conn.execute(statement)
                position = install_reverse_capture(conn, plan, schema)
            clock.step("reset identities, start reverse capture")
            set_reverse_position(sqlite_path, position)
            remove_triggers(sqlite_path)
            _set_phase(pg_url, schema, "new", "holding")
            clock.step("stop forward capture")

        await _paused(
            switch,
            pg_url,
            schema,
            state.owner,
            "new",
            backend,
            wait_writes,
            result,
            clock,
            inside if applier is not None else None,
        )
    finally:
        if applier is not None:
            applier.close()


async def _to_legacy(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    switch: WriteSwitch,
    schema: str,
    backend: str,
    wait_writes: float,
    drain_timeout: float,
    state: HandoffState,
    result: HandoffResult,
    clock: _Clock,
) -> None:
    swapped = state.owner == "legacy"
    applier = None if swapped else ReverseApplier(sqlite_path, pg_url, plan, schema=schema)
    try:
        since = 0
        if applier is not None:
            _catch_up(applier.apply_batch)
            boundary = applier.position
            # Verified before the pause, so only later changes are checked inside it.
            if _verify_back(sqlite_path, pg_url, plan, schema, applier.changed_keys()):
                since = boundary
            clock.step("catch up and verify before the pause")

        def inside() -> None:
            assert applier is not None
            result.drained = _drain(applier.catch_up, applier.lag, drain_timeout)
            clock.step("drain reverse changelog")
            touched = applier.changed_keys(since)
            result.verified_keys = sum(len(k) for k in touched.values())
            if not _verify_back(sqlite_path, pg_url, plan, schema, touched):
                raise MigrationError(
                    f"verify of {result.verified_keys} keys written back to SQLite found "
                    "differences; writes stay with new. Run 'changeover migrate verify'"
                )
            clock.step("verify keys written back")
            install_capture(sqlite_path, plan)
            source = connect_readonly(sqlite_path)
            try:
                head = changelog_head(source)
            finally:
                source.close()
            start_position(pg_url, schema, head)
            with connect_target(pg_url) as conn, conn.transaction():
                # Verified above: the log's keys are in SQLite; a next handoff starts afresh.
                remove_reverse_capture(conn, plan, schema, keep_log=False)
            _set_phase(pg_url, schema, "legacy", "holding")
            clock.step("swap capture")

        await _paused(
            switch,
            pg_url,
            schema,
            state.owner,
            "legacy",
            backend,
            wait_writes,
            result,
            clock,
            inside if applier is not None else None,
        )
    finally:
        if applier is not None:
            applier.close()


async def _paused(
    switch: WriteSwitch,
    pg_url: str,
    schema: str,
    before: Owner,
    to: Owner,
    backend: str,
    wait_writes: float,
    result: HandoffResult,
    clock: _Clock,
    inside: Callable[[], None] | None,
) -> None:
    """Hold writes, run ``inside`` (drain, verify, swap capture), flip the owner, release.

    If ``inside`` fails the hold is released with the owner unchanged (writes go where they
    went before) and the phase goes back to idle; ``inside`` is None when a killed handoff had
    already swapped capture and only the flip and release are left.
    """
    held = time.monotonic()
    await _hold(switch, wait_writes)
    _set_phase(pg_url, schema, before, "holding")
    clock.step("hold writes")
    try:
        if inside is not None:
            inside()
    except BaseException:
        await switch.release()
        _set_phase(pg_url, schema, before, "idle")
        raise
    await switch.set_write_owner(backend)
    await switch.release()
    result.pause_seconds = time.monotonic() - held
    _set_phase(pg_url, schema, to, "idle")
    clock.step("flip write owner and release")


async def _hold(switch: WriteSwitch, wait_writes: float) -> None:
    answer = await switch.hold(wait_writes)
    if answer.get("writes_settled") is False:
        await switch.release()
        raise MigrationError(
            f"writes already sent to the current owner did not finish within {wait_writes:g}s "
            f"(in flight: {answer.get('writes_in_flight')}); released, nothing changed; "
            "try again or raise --wait-writes"
        )


def _catch_up(apply_batch: Callable[[], Any], settle: float = 0.5) -> None:
    """Apply outside the pause until caught up. Under steady writes a batch is almost never
    empty (``catch_up`` would run as long as the writes do), so after ``settle`` seconds a small
    batch is close enough: what is left is drained inside the pause."""
    started = time.monotonic()
    while True:
        entries = int(apply_batch().entries)
        if entries == 0 or (entries < _CLOSE_ENOUGH and time.monotonic() - started > settle):
            return


def _drain(catch_up: Callable[[], int], lag: Callable[[], Any], timeout: float) -> int:
    """Apply until the changelog is empty; writes still arriving (not through the proxy) fail."""
    deadline = time.monotonic() + timeout
    applied = 0
    while True:
        applied += catch_up()
        if lag().rows == 0:
            return applied
        if time.monotonic() > deadline:
            raise MigrationError(
                f"the changelog did not drain within {timeout:g}s: something still writes to "
                "the database outside the proxy; released with the owner unchanged"
            )
        time.sleep(0.005)


def _verify_changed(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    schema: str,
    result: HandoffResult,
    *,
    inside: bool,
) -> int:
    """Verify the keys changed since the last verified position.

    Before the pause a difference is not final — legacy is still writing, so a key may have
    changed again after the applied position; ``verified`` then stays put and those keys are
    checked again inside the pause, where writes are held and a difference stops the handoff.
    """
    count, report = verify_changed(sqlite_path, pg_url, plan, schema=schema)
    if report is not None and not report.equal:
        if not inside:
            result.warnings.append(
                f"{count} keys still changing before the pause; re-verified inside it"
            )
            return count
        raise MigrationError(
            f"verify of {count} changed keys inside the pause found differences; the handoff "
            "stopped and writes stay with legacy. Run 'changeover migrate verify' for the rows"
        )
    return count


def _verify_back(
    sqlite_path: str | Path,
    pg_url: str,
    plan: PgPlan,
    schema: str,
    keys: Mapping[str, Sequence[tuple[object, ...]]],
) -> bool:
    """True when every key written back to SQLite holds PostgreSQL's row (or none changed)."""
    if not keys:
        return True
    return verify_database(sqlite_path, pg_url, plan, schema=schema, keys=keys, jobs=1).equal


def _run_hook(argv: Sequence[str]) -> list[str]:
    """Run the legacy read-only hook (an argv list, never a shell string); failures are warnings.

    The proxy already sends every write to the new owner; the hook is belt and braces.
    """
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"legacy read-only hook {argv[0]!r} did not run: {exc}"]
    if done.returncode != 0:
        tail = REDACTOR.scrub((done.stderr or done.stdout).strip())[-300:]
        return [f"legacy read-only hook exited {done.returncode}: {tail}"]
    return []


def run_handoff(*args: Any, **kwargs: Any) -> HandoffResult:
    """``handoff`` for synchronous callers (the CLI)."""
    return asyncio.run(handoff(*args, **kwargs))
