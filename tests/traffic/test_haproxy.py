"""The HAProxy router against a real HAProxy 2.6 and real backend processes.

One HAProxy per module (backend ``app``: legacy-1, legacy-2, new-1; consistent hashing on the
``co_session`` cookie); every test sets the weights it needs first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeover.plan.systems import RouterSystem
from changeover.probes.base import ProbeContext
from changeover.traffic import RouterError, RouterStats, Server, open_router
from changeover.traffic.haproxy import HaproxyRouter
from support.haproxy import HaproxyServer, run_haproxy
from traffic.conftest import send, share, stickiness

REQUESTS = 2000


@pytest.fixture(scope="module")
def haproxy(
    tmp_path_factory: pytest.TempPathFactory, servers: list[Server]
) -> Iterator[HaproxyServer]:
    workdir = tmp_path_factory.mktemp("haproxy")
    with run_haproxy(workdir, {s.name: s.address for s in servers}) as server:
        yield server


@pytest.fixture
def router(haproxy: HaproxyServer, servers: list[Server]) -> HaproxyRouter:
    return HaproxyRouter(str(haproxy.admin_socket), servers)


def test_shifts_10_50_100_0_confirmed_by_counts(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    async def main() -> list[tuple[int, float, float, float]]:
        measured = []
        for percent in (10, 50, 100, 0):
            observed = await router.set_weights({"legacy": 100 - percent, "new": percent})
            assert observed["new"] == pytest.approx(percent, abs=0.5)
            assert (await router.weights()).percent == observed.percent
            anonymous = await send(haproxy.url, REQUESTS)
            fresh_sessions = [uuid.uuid4().hex for _ in range(REQUESTS)]
            with_cookie = await send(haproxy.url, REQUESTS, sessions=fresh_sessions)
            measured.append((percent, observed["new"], share(anonymous), share(with_cookie)))
        return measured

    for percent, observed, anonymous, sessions in asyncio.run(main()):
        print(
            f"HAProxy new={percent}%: router shows {observed:.2f}%, answered "
            f"{anonymous:.2f}% of requests without cookie, {sessions:.2f}% of new sessions"
        )
        assert anonymous == pytest.approx(percent, abs=3), (percent, anonymous)
        assert sessions == pytest.approx(percent, abs=3), (percent, sessions)


def test_100_and_0_percent_send_nothing_to_the_other_backend(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    async def main() -> tuple[Counter[str], Counter[str]]:
        await router.set_weights({"new": 100})
        all_new = Counter(name for _s, name in await send(haproxy.url, 300))
        await router.set_weights({"legacy": 100})
        all_legacy = Counter(name for _s, name in await send(haproxy.url, 300))
        return all_new, all_legacy

    all_new, all_legacy = asyncio.run(main())
    assert set(all_new) == {"new-1"}
    assert set(all_legacy) == {"legacy-1", "legacy-2"}


def test_weights_reads_back_the_per_server_weights(router: HaproxyRouter) -> None:
    async def main() -> tuple[dict[str, int], dict[str, float]]:
        await router.set_weights({"legacy": 90, "new": 10})
        fresh = HaproxyRouter(router.admin, [*router._servers])  # another process reading
        seen = await fresh.weights()
        return dict(seen.servers), dict(seen.percent)

    servers, percent = asyncio.run(main())
    # 10 % on one server vs 90 % on two: 56 : 252 : 252 is exactly 10 %
    assert servers == {"legacy-1": 252, "legacy-2": 252, "new-1": 56}
    assert percent["new"] == pytest.approx(10.0)


def test_session_cookie_keeps_its_server_while_weights_are_unchanged(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    sessions = [uuid.uuid4().hex for _ in range(200)]

    async def main() -> list[tuple[str, str]]:
        await router.set_weights({"legacy": 50, "new": 50})
        return await send(haproxy.url, 4000, sessions=sessions)

    results = asyncio.run(main())
    assert stickiness(results) >= 0.999
    # and the sessions are really split between both apps, not all hashed to one server
    assert 30 <= share(results) <= 70


def test_rollback_to_0_moves_sticky_sessions_off_the_new_app(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    sessions = [uuid.uuid4().hex for _ in range(200)]

    async def main() -> tuple[float, float]:
        await router.set_weights({"legacy": 50, "new": 50})
        before = await send(haproxy.url, 400, sessions=sessions)
        await router.set_weights({"legacy": 100, "new": 0})
        after = await send(haproxy.url, 400, sessions=sessions)
        return share(before), share(after)

    before, after = asyncio.run(main())
    assert before > 20  # some sessions were on the new app
    assert after == 0


def test_drain_stops_new_sessions_to_an_instance_and_keeps_the_backend_share(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    async def main() -> tuple[Counter[str], float, RouterStats, Counter[str]]:
        await router.set_weights({"legacy": 50, "new": 50})
        await router.drain("legacy", "legacy-1")
        drained = await send(haproxy.url, 1000)
        stats = await router.stats()
        await router.ready("legacy", "legacy-1")
        back = Counter(name for _s, name in await send(haproxy.url, 600))
        return Counter(name for _s, name in drained), share(drained), stats, back

    drained, new_share, stats, back = asyncio.run(main())
    assert drained["legacy-1"] == 0
    assert new_share == pytest.approx(50, abs=3)  # legacy-2 took legacy-1's part
    status = {s.instance: s.status for s in stats.instances}
    assert status == {"legacy-1": "DRAIN", "legacy-2": "UP", "new-1": "UP"}
    assert back["legacy-1"] > 0


def test_stats_count_requests_and_responses_by_class(
    haproxy: HaproxyServer, router: HaproxyRouter
) -> None:
    async def main() -> tuple[RouterStats, RouterStats]:
        await router.set_weights({"legacy": 100, "new": 0})
        before = await router.stats()
        await send(haproxy.url, 300, path="/status/200")
        await send(haproxy.url, 50, path="/status/503")
        await send(haproxy.url, 20, path="/status/404")
        return before, await router.stats()

    before, after = asyncio.run(main())
    assert after.requests("legacy") - before.requests("legacy") == 370
    assert after.requests("new") - before.requests("new") == 0
    grown = {
        klass: after.responses("legacy")[klass] - before.responses("legacy")[klass]
        for klass in ("2xx", "4xx", "5xx")
    }
    assert grown == {"2xx": 300, "4xx": 20, "5xx": 50}
    assert all(s.current_sessions == 0 for s in after.instances)


def test_runtime_api_over_tcp(haproxy: HaproxyServer, servers: list[Server]) -> None:
    router = HaproxyRouter(haproxy.admin_tcp, servers)
    observed = asyncio.run(router.set_weights({"legacy": 80, "new": 20}))
    assert observed["new"] == pytest.approx(20, abs=0.5)


def test_unknown_server_is_a_router_error_with_a_plain_message(haproxy: HaproxyServer) -> None:
    router = HaproxyRouter(
        str(haproxy.admin_socket), [Server("legacy", "legacy-1"), Server("new", "new-9")]
    )
    with pytest.raises(RouterError) as caught:
        asyncio.run(router.set_weights({"legacy": 90, "new": 10}))
    assert str(caught.value) == (
        f"HAProxy runtime API at {haproxy.admin_socket}: no such server app/new-9"
    )


def test_unknown_haproxy_backend_is_named(haproxy: HaproxyServer, servers: list[Server]) -> None:
    router = HaproxyRouter(str(haproxy.admin_socket), servers, proxy="shop")
    with pytest.raises(RouterError, match="no such backend shop"):
        asyncio.run(router.weights())


def test_refused_command_is_a_router_error(router: HaproxyRouter) -> None:
    with pytest.raises(RouterError, match="Absolute weight can only be between 0 and 256"):
        asyncio.run(router._run("set server app/new-1 weight 300"))
    with pytest.raises(RouterError, match="unknown command"):
        asyncio.run(router._run("frobnicate"))


def test_draining_an_unknown_instance_names_the_known_ones(router: HaproxyRouter) -> None:
    with pytest.raises(RouterError, match=r"new/new-7 is not a server .*new/new-1"):
        asyncio.run(router.drain("new", "new-7"))


def test_missing_socket_says_haproxy_is_not_reachable(
    tmp_path: Path, servers: list[Server]
) -> None:
    router = HaproxyRouter(str(tmp_path / "nowhere.sock"), servers)
    with pytest.raises(RouterError, match=r"nowhere\.sock: cannot connect .*level admin"):
        asyncio.run(router.weights())


def test_a_name_that_could_smuggle_a_command_is_refused(haproxy: HaproxyServer) -> None:
    with pytest.raises(RouterError, match="may only hold"):
        HaproxyRouter(str(haproxy.admin_socket), [Server("new", "new-1;shutdown sessions")])


def test_open_router_builds_the_haproxy_router_from_the_plan(
    haproxy: HaproxyServer, servers: list[Server]
) -> None:
    system = RouterSystem(type="haproxy", admin="${HAPROXY_ADMIN}")
    ctx = ProbeContext(environ={"HAPROXY_ADMIN": str(haproxy.admin_socket)})
    router = open_router(system, servers, ctx)
    assert isinstance(router, HaproxyRouter)
    observed = asyncio.run(router.set_weights({"legacy": 70, "new": 30}))
    assert observed["new"] == pytest.approx(30, abs=0.5)
