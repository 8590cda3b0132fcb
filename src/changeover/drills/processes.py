"""The processes a drill stops and starts: an app instance found by the port it listens on,
a plan-given stop/start argv, and ``pg_ctl`` run as the owner of the data directory.

Loopback only: an instance whose URL is not a loopback address cannot be found by its port
here, so the plan must give its ``stop`` argv (a systemctl unit, a deploy script).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from changeover.drills.result import DrillFailed
from changeover.secrets import REDACTOR

TOOL_TIMEOUT = 60.0


def listening_pid(url: str) -> int:
    """The process listening on the loopback port of ``url`` (the instance the deployer started)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    if port is None:
        raise DrillFailed(f"{url}: no port in the URL; give the drill a 'stop' argv")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise DrillFailed(
            f"{url} is not on this machine's loopback: give the drill a 'stop' argv "
            "(e.g. [systemctl, stop, api@1]) and a 'start' argv"
        )
    try:
        sockets = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied as exc:
        raise DrillFailed(
            "cannot list listening sockets (permission denied): run as the apps' user or "
            "give the drill a 'stop' argv"
        ) from exc
    for conn in sockets:
        bound: Any = conn.laddr  # an (ip, port) pair; empty for sockets without an address
        if conn.status == psutil.CONN_LISTEN and bound and bound[1] == port and conn.pid:
            return int(conn.pid)
    raise DrillFailed(f"nothing listens on port {port} ({url}): is the instance running?")


async def stop_pid(pid: int, grace: float) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; how it ended ("exited" / "killed")."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return "already gone"
    except psutil.AccessDenied as exc:
        raise DrillFailed(f"not allowed to stop process {pid}: {exc}") from exc
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(process):
            return "exited"
        await asyncio.sleep(0.05)
    try:
        process.kill()
    except psutil.NoSuchProcess:
        return "exited"
    await asyncio.to_thread(psutil.wait_procs, [process], 5)
    return "killed"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def run_argv(argv: Sequence[str], what: str, *, user_of: Path | None = None) -> None:
    """Run ``argv`` to completion (never through a shell); as the owner of ``user_of`` when we
    are root and it belongs to someone else (pg_ctl refuses to run as root)."""
    await asyncio.to_thread(_run, list(argv), what, user_of)


def _run(argv: list[str], what: str, user_of: Path | None) -> None:
    user: int | None = None
    group: int | None = None
    if user_of is not None and os.geteuid() == 0:
        try:
            info = user_of.stat()
        except OSError as exc:
            raise DrillFailed(f"{what}: cannot read {user_of}: {exc.strerror or exc}") from exc
        if info.st_uid != 0:
            user, group = info.st_uid, info.st_gid
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            cwd="/",  # the tool's user may not be allowed into our working directory
            user=user,
            group=group,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise DrillFailed(f"{what}: {argv[0]!r} did not run: {exc}") from exc
    if result.returncode != 0:
        tail = REDACTOR.scrub((result.stderr or result.stdout).strip())[-300:]
        raise DrillFailed(f"{what}: {argv[0]!r} exited {result.returncode}: {tail}")
