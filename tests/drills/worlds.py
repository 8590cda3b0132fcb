"""The real worlds the drills run in, built per test in a temporary directory and torn down.

``failover_world``: a PostgreSQL primary with a streaming replica (the test's own: the drill
stops the primary), Redis, two demo new-app instances deployed by the plan's ``process``
deployer on a multi-host read-write URL, and the built-in proxy in front (active checks every
200 ms, fall 2, rise 1). ``rollback_world``: the demo's legacy app on a seeded SQLite file, its
copy with change capture in PostgreSQL, two new-app instances, and the demo's proxy. Each
stops every process it started: by its handle, or by the port it listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from changeover.demo.data import seed_legacy_db
from changeover.drills.processes import listening_pid
from changeover.engine.runbook import Runbook
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.rollout.actions import deploy
from changeover.services import PostgresServer, start_postgres, start_replica
from support.pids import stop_pid
from support.process import free_port

TOKEN_ENV = "CHANGEOVER_DRILL_TEST_TOKEN"
HEALTH = {"path": "/healthz", "interval": "200ms", "rise": 1, "fall": 2}
FALL_TIMES_INTERVAL_S = 2 * 0.2


@dataclass
class World:
    plan: Path
    instances: dict[str, str]  # name → URL
    proxy: subprocess.Popen[bytes]
    primary: PostgresServer | None = None
    replica: PostgresServer | None = None
    extra: dict[str, Any] | None = None


def _secrets(workdir: Path) -> None:
    (workdir / "session.secret").write_text("drill-session-secret-0123456789\n")
    (workdir / "admin.token").write_text("drill-admin-token-abcdef\n")


def _new_instance(workdir: Path, name: str, port: int, schema: str) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "changeover.demo.apps.new", "--port", str(port),
        "--instance", name, "--schema", schema, "--pool-size", "4",
        "--secret-file", str(workdir / "session.secret"),
        "--admin-token-file", str(workdir / "admin.token"),
    ]  # fmt: skip
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "deploy": {"process": argv, "log": f"logs/{name}.log", "ready_pattern": "listening on"},
    }


def start_proxy(
    workdir: Path, backends: dict[str, list[tuple[str, int]]], **extra: Any
) -> tuple[subprocess.Popen[bytes], int, int]:
    """``changeover proxy serve`` on free ports; waits for its ready line."""
    listen, admin = free_port(), free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": listen},
        "admin": {"host": "127.0.0.1", "port": admin, "token": "${" + TOKEN_ENV + "}"},
        "backends": {
            backend: [{"name": n, "url": f"http://127.0.0.1:{p}"} for n, p in members]
            for backend, members in backends.items()
        },
        "health": HEALTH,
        "state_file": "proxy-state.json",
        **extra,
    }
    path = workdir / "proxy.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    log = (workdir / "logs" / "proxy.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "changeover", "proxy", "serve", "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    log.close()
    for _ in range(300):
        text = (workdir / "logs" / "proxy.log").read_text(errors="replace")
        if "proxy listening on" in text:
            return proc, listen, admin
        if proc.poll() is not None:
            raise AssertionError(f"the proxy exited: {text[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the proxy did not get ready")


def stop_instances(urls: dict[str, str]) -> None:
    """Stop whatever listens on the instances' ports (they run in their own sessions)."""
    for url in urls.values():
        with contextlib.suppress(Exception):
            stop_pid(listening_pid(url))


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def write_plan(workdir: Path, plan: dict[str, Any]) -> Path:
    path = workdir / "changeover.yaml"
    path.write_text(json.dumps(plan, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def deploy_all(plan: Path, names: list[str]) -> None:
    with Runbook.open(plan) as runbook:
        asyncio.run(deploy(runbook, {"instances": names}))


@contextlib.contextmanager
def failover_world(
    workdir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    (workdir / "logs").mkdir(parents=True)
    _secrets(workdir)
    db = workdir / "legacy.db"
    seed_legacy_db(db, 30)
    with start_postgres() as primary:
        url = primary.create_database("drill")
        copy_database(db, url, plan_schema(introspect(db)), schema="app")
        with start_replica(primary) as replica:
            both = f"127.0.0.1:{primary.port},127.0.0.1:{replica.port}"
            multi = f"postgresql://changeover:{primary.password}@{both}/drill"
            monkeypatch.setenv("CHANGEOVER_DEMO_PG_URL", multi + "?target_session_attrs=read-write")
            monkeypatch.setenv("CHANGEOVER_DEMO_REDIS_URL", redis_url)
            monkeypatch.setenv("DRILL_PG_URL", url)
            monkeypatch.setenv("DRILL_REPLICA_URL", replica.url_for("drill"))
            monkeypatch.setenv(TOKEN_ENV, "drill-proxy-token-0123456789")
            ports = {"new-1": free_port(), "new-2": free_port()}
            instances = [_new_instance(workdir, n, p, "app") for n, p in ports.items()]
            urls = {i["name"]: i["url"] for i in instances}
            proxy, listen, admin = start_proxy(
                workdir, {"new": list(ports.items())}, weights={"new": 100}, write_owner="new"
            )
            try:
                plan = write_plan(
                    workdir,
                    {
                        "version": 1,
                        "name": "failover drill test",
                        "cutover_at": "2026-12-01T02:00:00Z",
                        "systems": {
                            "postgres": {"url": "${DRILL_PG_URL}"},
                            "postgres-replica": {"kind": "postgres", "url": "${DRILL_REPLICA_URL}"},
                            "new": {"kind": "app", "instances": instances},
                            "public": {"kind": "http", "url": f"http://127.0.0.1:{listen}"},
                            "router": {
                                "kind": "router",
                                "admin": f"http://127.0.0.1:{admin}",
                                "token": "${" + TOKEN_ENV + "}",
                            },
                        },
                        "stages": [{"id": "pre", "title": "Pre", "sections": [{
                            "title": "Drills", "steps": [
                                {"id": "failover-test", "title": "Failover testing passed",
                                 "action": {"drill.failover": {"system": "new"}}},
                            ]}]}],
                    },
                )  # fmt: skip
                deploy_all(plan, list(ports))
                yield World(plan, urls, proxy, primary, replica)
            finally:
                stop_instances(urls)
                stop_process(proxy)


@contextlib.contextmanager
def rollback_world(
    workdir: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """The demo's world in small, on this test's database: legacy on SQLite (copied with change
    capture into PostgreSQL), new-1 and new-2 deployed, the demo's proxy with all on legacy."""
    from changeover.demo.plan import PROXY_TOKEN_ENV, Ports, demo_plan
    from changeover.demo.world import start_legacy
    from changeover.demo.world import start_proxy as start_demo_proxy
    from changeover.rollout.actions import migrate_copy, state_dir

    (workdir / "logs").mkdir(parents=True)
    _secrets(workdir)
    seed_legacy_db(workdir / "legacy.db", 200)
    for name, value in {
        "PG_URL": pg_url,
        "REDIS_URL": redis_url,
        "CHANGEOVER_DEMO_PG_URL": pg_url,
        "CHANGEOVER_DEMO_REDIS_URL": redis_url,
        PROXY_TOKEN_ENV: "drill-proxy-token-0123456789",
    }.items():
        monkeypatch.setenv(name, value)
    ports = Ports(free_port(), (free_port(), free_port(), free_port()), free_port(), free_port())
    plan = write_plan(workdir, demo_plan(workdir, ports))
    urls = {f"new-{n}": f"http://127.0.0.1:{port}" for n, port in enumerate(ports.new[:2], 1)}
    legacy = start_legacy(workdir, workdir / "legacy.db", ports.legacy)
    proxy: subprocess.Popen[bytes] | None = None
    try:
        proxy = start_demo_proxy(workdir, ports)
        with Runbook.open(plan) as runbook:
            migrate_copy(runbook, {})
            folder = state_dir(runbook)
        deploy_all(plan, list(urls))
        yield World(plan, urls, proxy, extra={"state_dir": folder, "legacy": legacy})
    finally:
        pid_file = folder / "sync.pid" if "folder" in locals() else None
        if pid_file is not None and pid_file.exists():
            with contextlib.suppress(ValueError):
                stop_pid(int(pid_file.read_text().strip()))
        stop_instances(urls)
        if proxy is not None:
            stop_process(proxy)
        stop_process(legacy)
