"""ChecksSource: a gate's own probes run at each look against real sockets, failures counted."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from changeover.metrics.checks import ChecksSource, checks_key
from changeover.plan.model import ProbeCall
from changeover.probes.base import ProbeContext
from support.backends import free_port


@pytest.fixture
def listening() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def tcp(port: int, **extra: object) -> ProbeCall:
    return ProbeCall.model_validate({"tcp": {"open": [f"127.0.0.1:{port}"], **extra}})


def test_runs_and_failed_runs_accumulate_per_set_of_checks(listening: int) -> None:
    closed = free_port()

    async def scenario() -> None:
        source = ChecksSource(ProbeContext({}))
        up = [tcp(listening)]
        down = [tcp(listening), tcp(closed)]
        first = await source.read("features", "new", up)
        second = await source.read("features", "new", up)
        assert (first.events, first.total) == (0, 1)
        assert (second.events, second.total) == (0, 2)
        broken = await source.read("features", "new", down)
        assert (broken.events, broken.total) == (1, 2)  # its own tally: 2 checks, 1 failed
        assert broken.unit is not None and f"127.0.0.1:{closed}" in broken.unit
        assert checks_key(up) != checks_key(down)
        assert checks_key(up) == checks_key([tcp(listening)])

    asyncio.run(scenario())


def test_a_slow_check_counts_as_failed_within_the_looks_timeout(listening: int) -> None:
    # The socket listens but never answers: the HTTP request waits for a response forever.
    call = ProbeCall.model_validate(
        {"http": {"url": f"http://127.0.0.1:{listening}", "timeout": 30}}
    )

    async def scenario() -> None:
        source = ChecksSource(ProbeContext({}), timeout=0.5)
        started = time.monotonic()
        observation = await source.read("features", None, [call])
        assert time.monotonic() - started < 3
        assert (observation.events, observation.total) == (1, 1)

    asyncio.run(scenario())
