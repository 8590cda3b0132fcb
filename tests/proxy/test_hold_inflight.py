"""Writes in flight: a hold can wait for the writes routed before it to end, against real processes.

The data handoff holds writes, then must know that every write already sent to the old owner
has finished before it drains the changelog. The proxy counts writes per backend from routing
to the end of the exchange; ``POST /v1/hold {"wait_writes": s}`` waits for that count to reach 0.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from changeover.proxy.hold import WritesInFlight
from changeover.traffic import RouterError
from changeover.traffic.builtin import BuiltinRouter
from support.backends import BackendProcess, free_port, start_backend
from support.proxy_process import RunningProxy, run_proxy, write_config

pytestmark = pytest.mark.integration

Proxy = tuple[RunningProxy, dict[str, list[BackendProcess]]]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    with ExitStack() as stack:
        backends = {
            "legacy": [stack.enter_context(start_backend("legacy-1"))],
            "new": [stack.enter_context(start_backend("new-1"))],
        }
        running = stack.enter_context(run_proxy(write_config(tmp_path, backends)))
        yield running, backends


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def counted(router: BuiltinRouter, expected: dict[str, int], within: float = 5.0) -> None:
    async def check() -> bool:
        return await router.writes_in_flight() == expected

    await until(check, within)


def targets(backend: BackendProcess) -> list[str]:
    return [str(t) for t in backend.count()["targets"]]  # type: ignore[union-attr]


def scenario(
    proxy: RunningProxy, body: Callable[[BuiltinRouter, httpx.AsyncClient], Awaitable[None]]
) -> None:
    async def main() -> None:
        router = BuiltinRouter(proxy.admin, proxy.token)
        try:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                await asyncio.wait_for(body(router, client), 30)
        finally:
            await router.close()

    asyncio.run(main())


# ---- the counter itself (no servers) ------------------------------------------------------------


def test_settle_returns_at_once_when_no_write_is_in_flight() -> None:
    writes = WritesInFlight()

    async def main() -> bool:
        return await writes.settle(0)

    assert asyncio.run(main()) is True
    assert writes.by_backend(["legacy", "new"]) == {"legacy": 0, "new": 0}


def test_settle_wakes_when_the_last_write_ends_and_times_out_otherwise() -> None:
    writes = WritesInFlight()

    async def main() -> tuple[bool, bool, dict[str, int]]:
        first = writes.started("legacy")
        second = writes.started("legacy")
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, first)
        timed_out = await writes.settle(0.2)  # one write is still in flight
        in_flight = writes.by_backend(["legacy", "new"])
        loop.call_later(0.05, second)
        settled = await writes.settle(5)
        return timed_out, settled, in_flight

    timed_out, settled, in_flight = asyncio.run(main())
    assert (timed_out, settled) == (False, True)
    assert in_flight == {"legacy": 1, "new": 0}
    assert writes.total == 0
    assert writes._idle == []  # a timed-out wait leaves nothing behind


# ---- the running proxy --------------------------------------------------------------------------


def test_hold_waits_for_a_write_sent_before_it_and_keeps_later_writes_back(proxy: Proxy) -> None:
    running, backends = proxy
    legacy, new = backends["legacy"][0], backends["new"][0]

    async def body(router: BuiltinRouter, client: httpx.AsyncClient) -> None:
        slow = asyncio.create_task(client.post("/slow?ms=500&id=before", content=b"{}"))
        await counted(router, {"legacy": 1, "new": 0})
        started = time.monotonic()
        answer = await router.hold(wait_writes=3)
        waited = time.monotonic() - started
        assert answer["holding"] is True
        assert answer["writes_settled"] is True
        assert answer["writes_in_flight"] == {"legacy": 0, "new": 0}
        assert 0.2 <= waited < 2.5, waited  # it waited for the slow write, not for the limit
        assert (await slow).status_code == 200

        held = asyncio.create_task(client.post("/w?id=held", content=b"{}"))
        await asyncio.sleep(0.4)
        assert not held.done()
        seen = await asyncio.to_thread(lambda: targets(legacy) + targets(new))
        assert "POST /w?id=held" not in seen, "a held write was forwarded before the release"
        assert await router.writes_in_flight() == {"legacy": 0, "new": 0}

        await router.set_write_owner("new")
        await router.release()
        response = await held
        assert (response.status_code, response.headers["x-backend"]) == (200, "new-1")
        assert "POST /w?id=held" in await asyncio.to_thread(targets, new)
        assert "POST /w?id=held" not in await asyncio.to_thread(targets, legacy)

    scenario(running, body)


def test_hold_reports_unsettled_when_a_write_outlasts_the_wait(proxy: Proxy) -> None:
    running, _ = proxy

    async def body(router: BuiltinRouter, client: httpx.AsyncClient) -> None:
        slow = asyncio.create_task(client.post("/slow?ms=2000", content=b"{}"))
        await counted(router, {"legacy": 1, "new": 0})
        started = time.monotonic()
        answer = await router.hold(wait_writes=0.1)
        waited = time.monotonic() - started
        assert answer["holding"] is True
        assert answer["writes_settled"] is False
        assert answer["writes_in_flight"] == {"legacy": 1, "new": 0}
        assert waited < 1.0, waited
        await router.release()
        assert (await slow).status_code == 200
        await counted(router, {"legacy": 0, "new": 0})

    scenario(running, body)


def test_reads_are_not_counted_as_writes_in_flight(proxy: Proxy) -> None:
    running, backends = proxy
    legacy = backends["legacy"][0]

    async def body(router: BuiltinRouter, client: httpx.AsyncClient) -> None:
        read = asyncio.create_task(client.get("/slow?ms=1500&id=read"))

        async def arrived() -> bool:
            return "GET /slow?ms=1500&id=read" in await asyncio.to_thread(targets, legacy)

        await until(arrived)
        assert await router.writes_in_flight() == {"legacy": 0, "new": 0}
        started = time.monotonic()
        answer = await router.hold(wait_writes=3)
        assert answer["writes_settled"] is True
        assert time.monotonic() - started < 1.0  # did not wait for the read
        assert not read.done()
        await router.release()
        assert (await read).status_code == 200

    scenario(running, body)


def test_writes_in_flight_return_to_zero_after_errors_and_disconnects(tmp_path: Path) -> None:
    with ExitStack() as stack:
        backends = {
            "legacy": [stack.enter_context(start_backend("legacy-1"))],
            "new": [stack.enter_context(start_backend("new-1"))],
        }
        config = write_config(tmp_path, backends)
        data = json.loads(config.read_text())
        data["backends"]["gone"] = [{"name": "gone-1", "url": f"http://127.0.0.1:{free_port()}"}]
        config.write_text(json.dumps(data))
        running = stack.enter_context(run_proxy(config))
        zero = {"legacy": 0, "new": 0, "gone": 0}

        async def body(router: BuiltinRouter, client: httpx.AsyncClient) -> None:
            # the backend resets the connection: 502
            assert (await client.post("/reset", content=b"{}")).status_code == 502
            assert await router.writes_in_flight() == zero

            # the client goes away (reset) while its write runs
            host, port = running.url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /slow?ms=3000 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            await counted(router, {**zero, "legacy": 1})
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # with linger 0: a reset, not a half-close
            await counted(router, zero, within=1.0)

            # the client closes its side in the middle of its request body: that body can
            # never end, so the write ends at once instead of when the upstream times out
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            await counted(router, {**zero, "legacy": 1})
            writer.close()
            await counted(router, zero, within=1.0)

            # the write owner cannot be reached at all: 502 (or 503 once it is known down)
            await router.set_write_owner("gone")
            assert (await client.post("/w", content=b"{}")).status_code in (502, 503)
            assert await router.writes_in_flight() == zero

            answer = await router.hold(wait_writes=1)
            assert (answer["writes_settled"], answer["writes_in_flight"]) == (True, zero)

        scenario(running, body)


def test_hold_refuses_a_bad_wait_and_then_holds_nothing(proxy: Proxy) -> None:
    running, _ = proxy
    auth = {"Authorization": f"Bearer {running.token}"}
    hold = f"{running.admin}/v1/hold"
    bad: list[tuple[bytes, str]] = [
        (b'{"wait_writes": "3"}', "wait_writes"),
        (b'{"wait_writes": -1}', "wait_writes"),
        (b'{"wait_writes": 61}', "wait_writes"),
        (b'{"wait_writes": true}', "wait_writes"),
        (b'{"wait_writes": null}', "wait_writes"),
        (b'{"wait_writes": NaN}', "wait_writes"),
        (b'{"wait": 3}', "wait"),
        (b"[3]", "body"),
        (b"three", "body"),
    ]
    with httpx.Client(timeout=10) as admin:
        for content, field in bad:
            response = admin.post(hold, content=content, headers=auth)
            assert response.status_code == 400, (content, response.text)
            assert response.json()["field"] == field, content
        too_long = admin.post(hold, content=b'{"wait_writes": 61}', headers=auth)
        assert "0 to 60" in too_long.json()["error"]
        refused = admin.post(hold, json={"wait_writes": 1})
        assert refused.status_code == 401  # the token rule holds for the new body too
    assert running.admin_call("GET", "/v1/state")["holding"] is False

    async def body(router: BuiltinRouter, client: httpx.AsyncClient) -> None:
        with pytest.raises(RouterError, match="wait_writes"):
            await router.hold(wait_writes=-1)
        plain = await router.hold()  # no body: as before, without waiting
        assert plain["holding"] is True
        assert "writes_settled" not in plain
        assert plain["writes_in_flight"] == {"legacy": 0, "new": 0}

    scenario(running, body)
