"""Run a real HAProxy (Debian package ``haproxy``) in a temp directory, for tests and benchmarks.

``run_haproxy(workdir, servers)`` writes a config with one frontend on a free loopback port and
one backend ``app`` holding ``servers`` (name → host:port), a runtime API on a unix socket
(``admin.sock``, level admin) and on a loopback TCP port, starts ``haproxy -db`` in the
foreground and stops it on exit. The default balancing is the one changeover recommends:
consistent hashing on the session cookie (see ``changeover.traffic.haproxy``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from support.binaries import require_binary
from support.process import accepts, free_port, log_tail, stop

STICKY_BALANCE = "balance hash req.cook(co_session)\n    hash-type consistent"


@dataclass
class HaproxyServer:
    """A running HAProxy: where clients and the runtime API reach it."""

    url: str  # the frontend, http://127.0.0.1:port
    port: int
    admin_socket: Path  # runtime API, unix socket
    admin_tcp: str  # runtime API over TCP, "ipv4@127.0.0.1:port"
    workdir: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.workdir / "haproxy.log", lines)


def config(
    port: int,
    admin_socket: Path,
    admin_port: int,
    servers: Mapping[str, str],
    *,
    balance: str = STICKY_BALANCE,
    threads: int = 1,
) -> str:
    lines = "".join(f"    server {name} {address} weight 1\n" for name, address in servers.items())
    return (
        "global\n"
        f"    nbthread {threads}\n"
        f"    stats socket {admin_socket} mode 600 level admin\n"
        f"    stats socket ipv4@127.0.0.1:{admin_port} level admin\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "frontend web\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend app\n"
        "backend app\n"
        f"    {balance}\n"
        f"{lines}"
    )


@contextlib.contextmanager
def run_haproxy(
    workdir: Path,
    servers: Mapping[str, str],
    *,
    balance: str = STICKY_BALANCE,
    threads: int = 1,
    start_timeout: float = 10.0,
) -> Iterator[HaproxyServer]:
    """Start HAProxy balancing over ``servers`` (name → "host:port"); stop it on exit.

    Skips (or fails under CHANGEOVER_REQUIRE_ALL=1) when haproxy is not installed.
    """
    binary = require_binary("haproxy", "haproxy", extra_dirs=("/usr/sbin",))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    for _attempt in range(3):  # a free port may be taken between choosing and binding it
        server = _start(binary, workdir, servers, balance, threads, start_timeout)
        if server is not None:
            break
    if server is None:
        raise RuntimeError(f"HAProxy did not start:\n{log_tail(workdir / 'haproxy.log')}")
    try:
        yield server
    finally:
        stop(server.process)


def _start(
    binary: str,
    workdir: Path,
    servers: Mapping[str, str],
    balance: str,
    threads: int,
    timeout: float,
) -> HaproxyServer | None:
    port, admin_port = free_port(), free_port()
    admin_socket = workdir / "admin.sock"
    admin_socket.unlink(missing_ok=True)
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(
        config(port, admin_socket, admin_port, servers, balance=balance, threads=threads)
    )
    with open(workdir / "haproxy.log", "ab") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = HaproxyServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        admin_socket=admin_socket,
        admin_tcp=f"ipv4@127.0.0.1:{admin_port}",
        workdir=workdir,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # most likely a port was taken; the log says why
        if admin_socket.exists() and accepts(port):
            return server
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"HAProxy not ready within {timeout:g}s:\n{server.log_tail()}")
