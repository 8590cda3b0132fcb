"""The demo's world: embedded servers, the legacy app on its seeded SQLite, the built-in proxy.

``open_world`` brings everything up inside an ``ExitStack`` and registers the teardown, so
whatever ends the demo — the last step, an error, Ctrl-C — stops every process it started: the
legacy app, the proxy, the new-app instances the controller deploys, the sync follower (all
children of this process, found with psutil), then the servers. Secrets (the session secret,
the apps' admin token, the proxy's token) are files in the work directory or environment
variables, registered with the redactor; they never reach the plan, the journal or the output.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

from changeover.demo.data import seed_legacy_db
from changeover.demo.plan import NEW_INSTANCES, PROXY_TOKEN_ENV, Ports
from changeover.demo.prepare import prepare_demo_servers
from changeover.errors import ServiceError
from changeover.secrets import REDACTOR
from changeover.services import Services, start_demo_services
from changeover.services._process import free_port

READY_TIMEOUT_S = 30.0


@dataclass
class World:
    workdir: Path
    services: Services
    ports: Ports
    proxy: subprocess.Popen[bytes]
    legacy_db: Path
    legacy_rows: int
    admin_token: str
    session_secret: str

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy}"


def open_world(stack: ExitStack, workdir: Path, users: int) -> World:
    """Everything the demo's plan refers to, running; torn down when ``stack`` closes."""
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    stack.callback(stop_children)  # registered first, runs last: anything still left
    services = stack.enter_context(start_demo_services())
    stack.callback(stop_children, ours_only=True)  # the apps and follower, before the servers
    environ = services.environ()
    os.environ.update(environ)
    # The new-app instances read their URLs from the environment, never from argv (ps shows it).
    os.environ["CHANGEOVER_DEMO_PG_URL"] = services.postgres.url
    os.environ["CHANGEOVER_DEMO_REDIS_URL"] = services.redis.url
    prepare_demo_servers(services.postgres.url, services.redis.url)

    session_secret = _secret_file(workdir / "session.secret")
    admin_token = _secret_file(workdir / "admin.token")
    proxy_token = secrets.token_urlsafe(24)
    REDACTOR.register(proxy_token)
    os.environ[PROXY_TOKEN_ENV] = proxy_token

    legacy_db = workdir / "legacy.db"
    legacy_db.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{legacy_db}{suffix}").unlink(missing_ok=True)
    rows = seed_legacy_db(legacy_db, users)

    ports = Ports(
        legacy=free_port(),
        new=(free_port(), free_port(), free_port()),
        proxy=free_port(),
        admin=free_port(),
    )
    start_legacy(workdir, legacy_db, ports.legacy)
    proxy = start_proxy(workdir, ports)
    return World(workdir, services, ports, proxy, legacy_db, rows, admin_token, session_secret)


def _secret_file(path: Path) -> str:
    value = secrets.token_urlsafe(32)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(value + "\n", encoding="utf-8")
    REDACTOR.register(value)
    return value


def start_legacy(workdir: Path, db: Path, port: int) -> subprocess.Popen[bytes]:
    """The legacy app as its own process, its output in logs/legacy.log; waits until ready."""
    argv = [
        sys.executable, "-m", "changeover.demo.apps.legacy", "--db", str(db),
        "--port", str(port), "--secret-file", str(workdir / "session.secret"),
        "--admin-token-file", str(workdir / "admin.token"),
    ]  # fmt: skip
    return spawn(argv, workdir / "logs" / "legacy.log", "listening on", "the legacy app")


def spawn(argv: list[str], log: Path, ready: str, what: str) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log``; return once it printed ``ready``."""
    with log.open("ab") as sink:
        offset = sink.tell()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    wait_ready(log, ready, process, what, offset)
    return process


def wait_ready(
    log: Path, pattern: str, process: subprocess.Popen[bytes], what: str, offset: int = 0
) -> None:
    """Wait for ``pattern`` in what ``process`` wrote to ``log`` after byte ``offset`` (the
    log is appended to by every demo in a work directory: an older ready line must not count)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with log.open("rb") as stream:
            stream.seek(offset)
            text = stream.read().decode("utf-8", errors="replace")
        if pattern in text:
            return
        if process.poll() is not None:
            tail = REDACTOR.scrub(text.strip())[-400:]
            raise ServiceError(
                f"{what} exited with {process.returncode} before it was ready: {tail}"
            )
        time.sleep(0.1)
    raise ServiceError(f"{what} was not ready within {READY_TIMEOUT_S:g}s (see {log})")


def start_proxy(workdir: Path, ports: Ports) -> subprocess.Popen[bytes]:
    """``changeover proxy serve`` as its own process — the data plane never shares an event loop
    with the controller — its admin token a reference to the environment; waits until ready."""
    config = {
        "listen": {"host": "127.0.0.1", "port": ports.proxy},
        "admin": {"host": "127.0.0.1", "port": ports.admin, "token": "${" + PROXY_TOKEN_ENV + "}"},
        "backends": {
            "legacy": [{"name": "legacy", "url": f"http://127.0.0.1:{ports.legacy}"}],
            "new": [
                {"name": name, "url": f"http://127.0.0.1:{port}"}
                for name, port in zip(NEW_INSTANCES, ports.new, strict=True)
            ],
        },
        "health": {"path": "/healthz", "interval": "1s", "rise": 1, "fall": 2},
        "state_file": "proxy-state.json",
    }
    path = workdir / "proxy.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (workdir / "proxy-state.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "changeover", "proxy", "serve", "--config", str(path)]
    return spawn(argv, workdir / "logs" / "proxy.log", "proxy listening on", "the built-in proxy")


def stop_children(grace: float = 5.0, *, ours_only: bool = False) -> None:
    """Stop every process this one started (apps, instances, the sync follower): SIGTERM, then
    SIGKILL for any still running after ``grace`` seconds. ``ours_only``: only the Python
    processes running changeover's own modules, leaving the database servers to their own stop.
    """
    children = [c for c in psutil.Process().children(recursive=True) if not ours_only or _ours(c)]
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)


def _ours(process: psutil.Process) -> bool:
    try:
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("changeover")
