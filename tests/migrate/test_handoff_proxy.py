"""The zero-loss handoff through the real built-in proxy while an app keeps writing.

A legacy app (SQLite) and a new app (PostgreSQL) run as processes behind ``changeover proxy
serve``; a paced writer sends ~200 orders/s through the proxy, each with its own sku, while
``migrate sync`` follows in a thread. Writes are handed to new mid-load and back again; every
acknowledged write must then exist exactly once, under the id it was acknowledged with, in both
databases, and verify must find them equal.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from changeover.migrate.apply import ForwardApplier
from changeover.migrate.copy import copy_database
from changeover.migrate.follow import follow
from changeover.migrate.handoff import HandoffResult, Owner, handoff, read_handoff
from changeover.migrate.schema import PgPlan, plan_schema
from changeover.migrate.sqlite import introspect
from changeover.migrate.verify import verify_database
from changeover.traffic.builtin import BuiltinRouter
from migrate.corpus import make_app_db
from support.proxy_process import RunningProxy, run_proxy, write_config
from support.write_apps import (
    Writer,
    audit_writes,
    skus_in_postgres,
    skus_in_sqlite,
    start_app,
)

pytestmark = pytest.mark.integration


@dataclass
class Stage:
    db: Path
    pg_url: str
    plan: PgPlan
    proxy: RunningProxy


@contextmanager
def stage(tmp_path: Path, pg_url: str, *, max_hold: str = "10s") -> Iterator[Stage]:
    """Copied with capture, both apps running, the proxy in front with legacy owning writes."""
    db = make_app_db(tmp_path / "app.db", rows=50)
    plan = plan_schema(introspect(db))
    copy_database(db, pg_url, plan, jobs=1, capture=True)
    with ExitStack() as stack:
        apps = {
            "legacy": [stack.enter_context(start_app("legacy", db=db))],
            "new": [stack.enter_context(start_app("new", pg_url=pg_url))],
        }
        config = write_config(tmp_path, apps, hold={"max_hold": max_hold})  # type: ignore[arg-type]
        proxy = stack.enter_context(run_proxy(config))
        yield Stage(db, pg_url, plan, proxy)


@contextmanager
def following(db: Path, pg_url: str, plan: PgPlan) -> Iterator[list[BaseException]]:
    """``migrate sync`` in a thread; its exception (if any) lands in the yielded list."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            follow(db, pg_url, plan, stop, idle=0.005)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "migrate sync did not stop"


def hand_to(s: Stage, to: Owner, steps: list[tuple[str, float]] | None = None) -> HandoffResult:
    async def main() -> HandoffResult:
        router = BuiltinRouter(s.proxy.admin, s.proxy.token)
        try:
            on_step: Callable[[str, float], None] | None = None
            if steps is not None:
                on_step = lambda name, seconds: steps.append((name, seconds))  # noqa: E731
            return await handoff(s.db, s.pg_url, s.plan, router, to=to, on_step=on_step)
        finally:
            await router.close()

    return asyncio.run(main())


def assert_every_acknowledged_write_is_there_once(s: Stage, writer: Writer) -> None:
    assert writer.outcomes, "the writer sent nothing"
    failed = [(o.sku, o.status) for o in writer.outcomes if not 200 <= o.status < 300]
    assert not failed, f"writes not acknowledged: {failed[:10]} ({len(failed)} in all)"
    for where, found in (
        ("SQLite", skus_in_sqlite(s.db, writer.prefix)),
        ("PostgreSQL", skus_in_postgres(s.pg_url, writer.prefix)),
    ):
        audit = audit_writes(writer.outcomes, found)
        assert audit.acknowledged == len(writer.outcomes)
        assert not audit.lost, f"{where}: acknowledged writes missing: {audit.lost[:10]}"
        assert not audit.duplicated, f"{where}: writes stored twice: {audit.duplicated[:10]}"
        assert not audit.moved, f"{where}: writes under another id: {audit.moved[:10]}"


def catch_up_and_verify(s: Stage) -> None:
    assert read_handoff(s.pg_url).owner == "legacy"
    with ForwardApplier(s.db, s.pg_url, s.plan) as applier:
        applier.catch_up()
    report = verify_database(s.db, s.pg_url, s.plan)
    assert report.equal, report.to_json()


def test_handoff_there_and_back_under_200_writes_per_second_loses_and_duplicates_nothing(
    tmp_path: Path, pg_url: str, record_property: Callable[[str, object], None]
) -> None:
    with stage(tmp_path, pg_url) as s, following(s.db, pg_url, s.plan) as sync_errors:
        writer = Writer(s.proxy.url, rate=200, seconds=12, prefix="load").start()
        time.sleep(1.0)
        there = hand_to(s, "new")
        time.sleep(1.5)  # the new app takes writes; sync follows with the reverse applier
        back = hand_to(s, "legacy")
        time.sleep(1.0)
        writer.stop()
        writer.join()
    assert not sync_errors, f"migrate sync failed: {sync_errors[0]!r}"

    apps = [o.app for o in sorted(writer.outcomes, key=lambda o: o.sent)]
    assert apps[0] == "legacy" and apps[-1] == "legacy"
    assert apps.count("new") > 100, "the new app took (almost) no writes between the handoffs"
    assert there.owner == "new" and back.owner == "legacy"
    assert there.drained >= 0 and back.verified_keys >= 0
    record_property("pause_seconds_to_new", round(there.pause_seconds, 4))
    record_property("pause_seconds_back", round(back.pause_seconds, 4))
    print(f"write pause: to new {there.pause_seconds:.3f}s, back {back.pause_seconds:.3f}s")
    slowest = max(o.seconds for o in writer.outcomes)
    assert slowest < 5, f"a write waited {slowest:.2f}s"
    catch_up_and_verify(s)
    assert_every_acknowledged_write_is_there_once(s, writer)
