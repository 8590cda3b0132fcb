"""ProcessSource against real child processes: one holding memory, one keeping a core busy, and
``python -m http.server`` instances found by the loopback port they listen on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import psutil
import pytest

from changeover.metrics.base import Observation
from changeover.metrics.process import (
    Listeners,
    PortTable,
    ProcessMatch,
    ProcessSource,
    listeners,
)
from support.process import accepts, free_port, stop

HOLD = (
    "import sys, time; data = bytearray(80 * 1024 * 1024); print('ok', flush=True); time.sleep(30)"
)
SPIN = "import time; print('ok', flush=True); end = time.time() + 30\nwhile time.time() < end: pass"


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A child with 80 MB of touched memory and a marker in its command line."""
    marker = f"marker-{secrets.token_hex(4)}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, marker], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    yield proc, marker
    proc.kill()
    proc.wait()
    proc.stdout.close()


def read(source: ProcessSource, metric: str, of: str | None = "new") -> Observation:
    async def once() -> Observation:
        try:
            return await source.read(metric, of)
        finally:
            await source.close()

    return asyncio.run(once())


def test_memory_of_a_process_found_by_pid(child: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, _ = child
    obs = read(ProcessSource({"new": ProcessMatch(pid=proc.pid)}), "memory_leak")
    assert obs.unit == "MB" and obs.value is not None and obs.value > 80


def test_memory_of_a_process_found_by_command_line(
    child: tuple[subprocess.Popen[bytes], str],
) -> None:
    _, marker = child
    obs = read(ProcessSource({"new": ProcessMatch(cmdline=marker)}), "memory")
    assert obs.value is not None and 80 < obs.value < 200  # one process, not the test as well


def test_cpu_of_a_busy_process_stands_out_from_a_sleeping_one(
    child: tuple[subprocess.Popen[bytes], str],
) -> None:
    sleeping, _ = child
    busy = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE)

    async def scenario() -> tuple[Observation, Observation, Observation]:
        source = ProcessSource(
            {"busy": ProcessMatch(pid=busy.pid), "idle": ProcessMatch(pid=sleeping.pid)}
        )
        try:
            first = await source.read("cpu", "busy")  # takes its own short sample
            await asyncio.sleep(0.5)
            second = await source.read("cpu", "busy")  # since the first read
            idle = await source.read("cpu", "idle")
            return first, second, idle
        finally:
            await source.close()

    try:
        assert busy.stdout is not None and busy.stdout.readline() == b"ok\n"
        first, second, idle = asyncio.run(scenario())
    finally:
        busy.kill()
        busy.wait()
        if busy.stdout is not None:
            busy.stdout.close()
    # Loose bounds: on a loaded 2-core machine the spinner gets only a share of a core.
    for obs in (first, second):
        assert obs.unit == "%" and obs.value is not None and 10 < obs.value <= 110
    assert idle.value is not None and idle.value < 5


def test_an_ended_process_is_unavailable() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    obs = read(ProcessSource({"new": ProcessMatch(pid=proc.pid)}), "memory")
    assert obs.unavailable == f"no running process matches pid={proc.pid!r}"


def test_an_unknown_system_names_the_targets() -> None:
    obs = read(ProcessSource({"new": ProcessMatch(name="app")}), "cpu", of="legacy")
    assert obs.unavailable == "no process target for 'legacy' (targets: new)"


def test_a_match_needs_something_to_match() -> None:
    with pytest.raises(ValueError):
        ProcessMatch()


# --- found by listening port -----------------------------------------------------------------

WORKERS = (
    "import socket, subprocess, sys, time\n"
    "sock = socket.socket(); sock.bind(('127.0.0.1', int(sys.argv[1]))); sock.listen()\n"
    "worker = subprocess.Popen([sys.executable, '-c', sys.argv[2]], stdout=subprocess.PIPE)\n"
    "worker.stdout.readline(); print('ok', flush=True); time.sleep(30)"
)


@contextlib.contextmanager
def http_server(port: int | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m http.server`` on a free loopback port (or ``port``), stopped on the way out."""
    for _ in range(5):  # a free port may be taken again before the server binds it: retry
        chosen = port or free_port()
        argv = [sys.executable, "-m", "http.server", str(chosen), "--bind", "127.0.0.1"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ends = time.monotonic() + 10
            while proc.poll() is None and not accepts(chosen) and time.monotonic() < ends:
                time.sleep(0.02)
            if proc.poll() is None and accepts(chosen):
                yield proc, chosen
                return
        finally:
            stop(proc)
    pytest.fail("python -m http.server did not start on a loopback port")


def test_memory_of_a_process_found_by_its_listening_port() -> None:
    with http_server() as (_, port):
        obs = read(ProcessSource({"new": ProcessMatch(port=port)}), "memory_leak")
    assert obs.unavailable is None and obs.unit == "MB"
    assert obs.value is not None and 1 < obs.value < 200  # one small Python, not the test too


def test_cpu_of_a_process_found_by_its_listening_port_is_readable() -> None:
    with http_server() as (_, port):
        obs = read(ProcessSource({"new": ProcessMatch(port=port)}), "cpu")
    assert obs.unavailable is None and obs.unit == "%"
    assert obs.value is not None and 0 <= obs.value < 50  # idle


def test_the_instances_of_a_system_are_summed() -> None:
    with http_server() as (_, first), http_server() as (_, second):
        a = read(ProcessSource({"new": ProcessMatch(port=first)}), "memory")
        b = read(ProcessSource({"new": ProcessMatch(port=second)}), "memory")
        both = ProcessSource({"new": [ProcessMatch(port=first), ProcessMatch(port=second)]})
        total = read(both, "memory")
        cpu = read(both, "cpu")
    assert a.value is not None and b.value is not None and total.value is not None
    assert total.value == pytest.approx(a.value + b.value, abs=2)  # idle servers: steady RSS
    assert cpu.unavailable is None and cpu.value is not None


def test_an_instance_not_running_adds_nothing_while_another_runs() -> None:
    # The plan deploys instances stage by stage: the ones not started yet are not an error.
    with http_server() as (_, running):
        alone = read(ProcessSource({"new": ProcessMatch(port=running)}), "memory")
        with_idle = read(
            ProcessSource({"new": [ProcessMatch(port=running), ProcessMatch(port=free_port())]}),
            "memory",
        )
    assert alone.value is not None and with_idle.value == pytest.approx(alone.value, abs=2)


def test_a_port_nobody_listens_on_is_unavailable_with_a_plain_reason() -> None:
    port = free_port()
    obs = read(ProcessSource({"new": ProcessMatch(port=port)}), "memory")
    assert obs.value is None
    assert obs.unavailable == f"nothing listens on TCP port {port} on this machine"


def test_a_system_without_a_local_instance_points_to_prometheus() -> None:
    source = ProcessSource({"new": [], "legacy": ProcessMatch(port=1)}, prometheus="metrics")
    assert read(source, "memory_leak").unavailable == (
        "new has no instance on this machine; read memory from Prometheus (source: metrics)"
    )
    assert read(source, "cpu").unavailable == (
        "new has no instance on this machine; read cpu from Prometheus (source: metrics)"
    )


def test_the_children_of_the_listening_process_count_as_its_workers() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKERS, str(port), HOLD],
        stdout=subprocess.PIPE,
        start_new_session=True,  # the worker goes with its parent's group on the way out
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        obs = read(ProcessSource({"new": ProcessMatch(port=port)}), "memory")
    finally:
        stop(proc, kill_group=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
    assert obs.value is not None and obs.value > 80  # the worker's 80 MB, not the parent's few


def test_a_process_replaced_behind_its_port_is_found_again_before_the_cache_expires() -> None:
    table = PortTable(max_age=60)  # the cache alone would keep the first pid for a minute
    with http_server() as (first, port):
        assert [p.pid for p in table.processes(port)] == [first.pid]
    with http_server(port) as (second, _):
        assert [p.pid for p in table.processes(port)] == [second.pid]


def test_the_port_scan_is_cached_for_its_max_age() -> None:
    now = [0.0]
    table = PortTable(max_age=2.0, clock=lambda: now[0])
    port = free_port()
    assert table.processes(port) == []
    with http_server(port) as (proc, _):
        assert table.processes(port) == []  # scanned before it started: not seen yet
        now[0] = 2.5
        assert [p.pid for p in table.processes(port)] == [proc.pid]


def test_a_port_needs_to_be_a_tcp_port() -> None:
    with pytest.raises(ValueError, match="between 1 and 65535"):
        ProcessMatch(port=70000)


def test_another_users_listener_is_unavailable_not_nothing() -> None:
    # Linux lists another user's LISTEN socket without its pid: say so rather than "nothing".
    def conn(port: int, pid: int | None, status: str = psutil.CONN_LISTEN) -> SimpleNamespace:
        return SimpleNamespace(status=status, laddr=SimpleNamespace(port=port), pid=pid)

    table = listeners([conn(8101, None), conn(8102, 4242), conn(8103, 7, psutil.CONN_ESTABLISHED)])
    assert table == Listeners({8102: frozenset({4242})}, frozenset({8101}))
    source = ProcessSource({"new": ProcessMatch(port=8101)}, ports=PortTable(scan=lambda: table))
    assert read(source, "memory").unavailable == (
        "a process of another user listens on TCP port 8101; this user cannot read it "
        "(run changeover as that user or as root)"
    )
