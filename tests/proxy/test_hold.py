"""The write hold: FIFO release, bounds (queue size, hold time), and routing at release time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from changeover.proxy.balance import Balancer
from changeover.proxy.hold import HoldRejected, WriteHold
from changeover.proxy.http import Reject, RequestHead
from changeover.proxy.state import Instance, RoutingState

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), 10)

    return asyncio.run(bounded())


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_release_lets_a_thousand_waiters_go_in_arrival_order() -> None:
    hold = WriteHold()
    arrived: list[int] = []
    resumed: list[int] = []

    async def write(i: int) -> None:
        arrived.append(i)
        await hold.wait()
        resumed.append(i)

    async def main() -> None:
        # Arrival order is made different from creation order on purpose.
        tasks = [asyncio.create_task(write(i)) for i in reversed(range(1000))]
        await settle()
        assert hold.held_now == 1000
        assert resumed == []
        assert hold.release() == 1000
        await asyncio.gather(*tasks)

    run(main)
    assert resumed == arrived
    assert len(set(resumed)) == 1000
    stats = hold.stats()
    assert (stats.held_now, stats.released, stats.rejected_full, stats.rejected_timeout) == (
        0,
        1000,
        0,
        0,
    )


def test_waiters_past_the_max_hold_time_are_rejected_in_order() -> None:
    clock = FakeClock()
    hold = WriteHold(max_hold=5.0, clock=clock)
    outcome: dict[str, str] = {}

    async def write(name: str) -> None:
        try:
            await hold.wait()
            outcome[name] = "released"
        except HoldRejected as exc:
            outcome[name] = str(exc)

    async def main() -> None:
        first = asyncio.create_task(write("first"))
        await settle()
        clock.now += 3
        second = asyncio.create_task(write("second"))
        await settle()
        clock.now += 1.999
        assert hold.expire() == 0
        clock.now += 0.001
        assert hold.expire() == 1
        await first
        assert hold.held_now == 1
        assert hold.stats().oldest_waiting == pytest.approx(2.0)
        clock.now += 3
        assert hold.expire() == 1
        await second

    run(main)
    assert "held for 5.0s" in outcome["first"] and "5s limit" in outcome["first"]
    assert "retry" in outcome["second"]
    stats = hold.stats()
    assert stats.rejected_timeout == 2
    assert stats.longest_wait == pytest.approx(5.0)
    assert stats.held_now == 0


def test_the_loop_timer_rejects_an_overdue_waiter_by_itself() -> None:
    hold = WriteHold(max_hold=0.05)

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(HoldRejected):
            await hold.wait()
        return time.monotonic() - started

    waited = run(main)
    assert 0.04 <= waited < 1.0


def test_a_full_queue_rejects_at_once() -> None:
    hold = WriteHold(max_waiters=2)

    async def main() -> None:
        tasks = [asyncio.create_task(hold.wait()) for _ in range(2)]
        await settle()
        with pytest.raises(HoldRejected, match="too many writes held"):
            await hold.wait()
        hold.release()
        await asyncio.gather(*tasks)

    run(main)
    stats = hold.stats()
    assert (stats.rejected_full, stats.released) == (1, 2)


def test_a_cancelled_waiter_leaves_the_queue_and_the_order_holds() -> None:
    hold = WriteHold(max_waiters=3)
    resumed: list[int] = []

    async def write(i: int) -> None:
        await hold.wait()
        resumed.append(i)

    async def main() -> None:
        tasks = [asyncio.create_task(write(i)) for i in range(3)]
        await settle()
        tasks[1].cancel()
        await settle()
        assert hold.held_now == 2
        # The freed place can be taken again.
        tasks.append(asyncio.create_task(write(3)))
        await settle()
        assert hold.release() == 3
        await asyncio.gather(tasks[0], tasks[2], tasks[3])

    run(main)
    assert resumed == [0, 2, 3]


def test_release_with_nobody_waiting_is_harmless() -> None:
    hold = WriteHold()
    assert hold.release() == 0
    assert hold.expire() == 0
    assert hold.stats().released == 0


# -- through the balancer's chooser ----------------------------------------------------------

LEGACY = Instance("legacy", "a", "127.0.0.1", 8001)
NEW = Instance("new", "a", "127.0.0.1", 8002)


def request(method: str, request_id: str, session: str = "s1") -> RequestHead:
    headers = [("Cookie", f"co_session={session}")]
    if method != "GET":
        headers.append(("Content-Length", "2"))
    return RequestHead(
        method, "/orders", "/orders", "1.1", headers, ("127.0.0.1", 4000), request_id
    )


def balancer(holding: bool, **hold_options: float) -> Balancer:
    state = RoutingState({"legacy": 50.0, "new": 50.0}, "legacy", holding=holding)
    return Balancer(
        state,
        {"legacy": [LEGACY], "new": [NEW]},
        hold=WriteHold(**hold_options),  # type: ignore[arg-type]
    )


def test_held_writes_go_to_the_write_owner_of_the_release_moment() -> None:
    lb = balancer(holding=True)
    routed: list[tuple[str, str]] = []

    async def write(i: int) -> None:
        choice = await lb.chooser(request("POST", f"w{i}", session=f"s{i}"), 0, frozenset())
        routed.append((f"w{i}", choice.instance.key))

    async def main() -> None:
        tasks = [asyncio.create_task(write(i)) for i in range(200)]
        await settle()
        assert lb.hold.held_now == 200
        # Reads are never held.
        read = await lb.chooser(request("GET", "r"), 0, frozenset())
        assert read.instance in (LEGACY, NEW)
        assert routed == []
        # The handoff: flip the owner and end the hold in one state change.
        lb.state = replace(lb.state, write_owner="new", holding=False)
        await asyncio.gather(*tasks)

    run(main)
    assert routed == [(f"w{i}", "new/a") for i in range(200)]


def test_writes_after_the_release_are_not_held() -> None:
    lb = balancer(holding=False)

    async def main() -> str:
        choice = await lb.chooser(request("PUT", "w"), 0, frozenset())
        return choice.instance.key

    assert run(main) == "legacy/a"
    assert lb.hold.stats().released == 0


def test_a_write_held_too_long_is_answered_503_with_retry_after() -> None:
    lb = balancer(holding=True, max_hold=0.05)

    async def main() -> Reject:
        with pytest.raises(Reject) as caught:
            await lb.chooser(request("DELETE", "w"), 0, frozenset())
        return caught.value

    reject = run(main)
    assert reject.status == 503
    assert ("Retry-After", "1") in reject.headers
    assert "longer than the 0.05s limit" in reject.reason


def test_a_full_hold_queue_is_answered_503() -> None:
    lb = balancer(holding=True, max_waiters=1)

    async def main() -> Reject:
        first = asyncio.create_task(lb.chooser(request("POST", "w1"), 0, frozenset()))
        await settle()
        with pytest.raises(Reject) as caught:
            await lb.chooser(request("POST", "w2"), 0, frozenset())
        lb.state = replace(lb.state, holding=False)
        await first
        return caught.value

    reject = run(main)
    assert reject.status == 503 and ("Retry-After", "1") in reject.headers
