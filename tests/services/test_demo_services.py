"""The demo bundle, and the safety net that stops servers a crashed or killed process left."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import psycopg
import pytest
import redis

from changeover.services import find_postgres_bin_dir, find_redis_server, start_demo_services
from support.binaries import missing


@pytest.fixture
def needs_servers() -> None:
    if find_postgres_bin_dir() is None:
        missing("PostgreSQL", "postgresql")
    if find_redis_server() is None:
        missing("redis-server", "redis-server")


@pytest.mark.usefixtures("needs_servers")
def test_demo_services_start_together_and_stop_together() -> None:
    with start_demo_services() as services:
        env = services.environ()
        assert set(env) == {"PG_URL", "PG_REPLICA_URL", "REDIS_URL"}
        with psycopg.connect(env["PG_URL"]) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        with psycopg.connect(env["PG_REPLICA_URL"]) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with redis.Redis.from_url(env["REDIS_URL"]) as client:
            assert client.ping() is True
        pids = [services.postgres.pid, services.replica.pid, services.redis.pid]
        processes = [psutil.Process(pid) for pid in pids]
    assert not any(process.is_running() for process in processes)


@contextlib.contextmanager
def _run_child(code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``code`` (which starts a server and prints its pid)."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:  # the test failed early: let the child clean up, then go
            child.terminate()
            child.wait(30)
        assert child.stdout is not None
        child.stdout.close()


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _started_pid(child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.split() and line.split()[0].isdigit(), f"the child printed {line!r}"
    return int(line.split()[0])


@pytest.mark.usefixtures("needs_servers")
def test_a_server_left_running_is_stopped_at_interpreter_exit() -> None:
    code = """
        from changeover.services import start_redis
        server = start_redis()
        print(server.pid, server.data_dir, flush=True)
        """
    with _run_child(code) as child:
        pid = _started_pid(child)
        assert child.wait(30) == 0
    assert _gone(pid)


@pytest.mark.usefixtures("needs_servers")
def test_sigterm_stops_the_servers_then_ends_the_process() -> None:
    code = """
        import time
        from changeover.services import start_redis
        server = start_redis()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    with _run_child(code) as child:
        pid = _started_pid(child)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == -signal.SIGTERM
    assert _gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.usefixtures("needs_servers")
def test_a_killed_parent_takes_its_postgres_with_it() -> None:
    code = """
        import time
        from changeover.services import start_postgres
        server = start_postgres()
        print(server.pid, server.data_dir.parent, flush=True)
        time.sleep(60)
        """
    with _run_child(code) as child:
        assert child.stdout is not None
        pid, base = child.stdout.readline().split()
        try:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            assert _gone(int(pid))
        finally:
            shutil.rmtree(base)  # a killed process cannot remove its temporary files
