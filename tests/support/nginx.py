"""Run a real nginx (Debian package ``nginx``) in a temp directory, for tests and benchmarks.

``run_nginx(workdir, include)`` writes an ``nginx.conf`` whose ``http {}`` block includes
``changeover-upstream.conf`` (written first from ``include(status_port)``) and proxies a server
on a free loopback port to ``upstream changeover_app``. nginx runs in the foreground
(``daemon off``, one worker) with its pid file, logs and temp paths in ``workdir``, and is
stopped on exit.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from support.binaries import require_binary
from support.process import accepts, free_port, log_tail, stop


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (graceful), then SIGKILL to the group: nginx's master takes its workers along."""
    stop(process, first_signal=signal.SIGQUIT, kill_group=True)


@dataclass
class NginxServer:
    """A running nginx and the files a router needs to drive it."""

    url: str  # the proxying server, http://127.0.0.1:port
    port: int
    status_url: str  # served by the include, once the router renders a status server
    config: Path
    include: Path
    prefix: Path
    binary: str
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.prefix / "error.log", lines)


def config(workdir: Path, port: int, include: Path, *, workers: int = 1) -> str:
    return (
        "daemon off;\n"
        "master_process on;\n"
        f"worker_processes {workers};\n"
        "user root;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log notice;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    include {include};\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        "        location / {\n"
        "            proxy_pass http://changeover_app;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "        }\n"
        "    }\n"
        "}\n"
    )


@contextlib.contextmanager
def run_nginx(
    workdir: Path,
    include: Callable[[int], str],
    *,
    workers: int = 1,
    start_timeout: float = 10.0,
) -> Iterator[NginxServer]:
    """Start nginx with the include ``include(status_port)``; stop it on exit.

    Skips (or fails under CHANGEOVER_REQUIRE_ALL=1) when nginx is not installed.
    """
    binary = require_binary("nginx", "nginx", extra_dirs=("/usr/sbin",))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    for _attempt in range(3):  # a free port may be taken between choosing and binding it
        server = _start(binary, workdir, include, workers, start_timeout)
        if server is not None:
            break
    if server is None:
        raise RuntimeError(f"nginx did not start:\n{log_tail(workdir / 'error.log')}")
    try:
        yield server
    finally:
        _stop(server.process)


def _start(
    binary: str,
    workdir: Path,
    include: Callable[[int], str],
    workers: int,
    timeout: float,
) -> NginxServer | None:
    port, status_port = free_port(), free_port()
    include_file = workdir / "changeover-upstream.conf"
    include_file.write_text(include(status_port))
    conf = workdir / "nginx.conf"
    conf.write_text(config(workdir, port, include_file, workers=workers))
    with open(workdir / "nginx.out", "ab") as log:
        process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", f"{workdir}/", "-e", str(workdir / "error.log")],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = NginxServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        status_url=f"http://127.0.0.1:{status_port}/changeover-status",
        config=conf,
        include=include_file,
        prefix=workdir,
        binary=binary,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # most likely a port was taken; the log says why
        if (workdir / "nginx.pid").exists() and accepts(port):
            return server
        time.sleep(0.05)
    _stop(process)
    raise RuntimeError(f"nginx not ready within {timeout:g}s:\n{server.log_tail()}")
