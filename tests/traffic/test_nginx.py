"""The nginx router against a real nginx and real backend processes.

One nginx per module; its ``http {}`` block includes the upstream file the router renders
(``hash $cookie_co_session consistent``), and the router confirms every reload through the
status server the include defines. Every test sets the weights it needs first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence

import httpx
import pytest

from changeover.plan.systems import RouterSystem
from changeover.probes.base import ProbeContext
from changeover.traffic import RouterError, RouterStats, Server, WeightMismatch, open_router
from changeover.traffic.nginx import (
    NginxRouter,
    RenderSettings,
    UpstreamState,
    parse_include,
    render_upstream,
)
from support.nginx import NginxServer, run_nginx
from traffic.conftest import send, share, stickiness

REQUESTS = 2000


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, servers: list[Server]) -> Iterator[NginxServer]:
    workdir = tmp_path_factory.mktemp("nginx")

    def initial(status_port: int) -> str:  # all to legacy, as before a cutover
        state = UpstreamState(0, {"legacy": 100.0, "new": 0.0}, {"legacy-1": 1, "legacy-2": 1})
        settings = RenderSettings(
            access_log=workdir / "changeover-access.log",
            status_listen=f"127.0.0.1:{status_port}",
        )
        return render_upstream(state, servers, settings)

    with run_nginx(workdir, initial) as server:
        yield server


def make_router(nginx: NginxServer, servers: Sequence[Server], **kwargs: object) -> NginxRouter:
    return NginxRouter(
        nginx.config,
        servers,
        include=nginx.include,
        status_url=nginx.status_url,
        prefix=nginx.prefix,
        nginx=nginx.binary,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def router(nginx: NginxServer, servers: list[Server]) -> NginxRouter:
    return make_router(nginx, servers)


def test_shifts_10_50_100_0_confirmed_by_counts(nginx: NginxServer, router: NginxRouter) -> None:
    async def main() -> list[tuple[int, float, float, float, RouterStats, RouterStats]]:
        measured = []
        for percent in (10, 50, 100, 0):
            observed = await router.set_weights({"legacy": 100 - percent, "new": percent})
            assert observed["new"] == pytest.approx(percent, abs=0.5)
            assert (await router.weights()).percent == observed.percent
            before = await router.stats()
            anonymous = await send(nginx.url, REQUESTS)
            fresh_sessions = [uuid.uuid4().hex for _ in range(REQUESTS)]
            with_cookie = await send(nginx.url, REQUESTS, sessions=fresh_sessions)
            after = await router.stats()
            measured.append(
                (percent, observed["new"], share(anonymous), share(with_cookie), before, after)
            )
        return measured

    for percent, observed, anonymous, sessions, before, after in asyncio.run(main()):
        print(
            f"nginx new={percent}%: router shows {observed:.2f}%, answered "
            f"{anonymous:.2f}% of requests without cookie, {sessions:.2f}% of new sessions"
        )
        assert anonymous == pytest.approx(percent, abs=3), (percent, anonymous)
        assert sessions == pytest.approx(percent, abs=3), (percent, sessions)
        # stats() (the access log) counted every request, on the right backend
        counted_new = after.requests("new") - before.requests("new")
        counted = counted_new + after.requests("legacy") - before.requests("legacy")
        assert counted == 2 * REQUESTS
        expected_new = (anonymous + sessions) / 100 * REQUESTS
        assert counted_new == pytest.approx(expected_new, abs=1)


def test_0_percent_renders_down_and_100_percent_sends_nothing_elsewhere(
    nginx: NginxServer, router: NginxRouter
) -> None:
    async def main() -> tuple[Counter[str], Counter[str]]:
        await router.set_weights({"new": 100})
        all_new = Counter(name for _s, name in await send(nginx.url, 300))
        await router.set_weights({"legacy": 100})
        all_legacy = Counter(name for _s, name in await send(nginx.url, 300))
        return all_new, all_legacy

    all_new, all_legacy = asyncio.run(main())
    assert set(all_new) == {"new-1"}
    assert set(all_legacy) == {"legacy-1", "legacy-2"}
    _state, lines = parse_include(nginx.include.read_text())
    new_1 = next(s for s in router._servers if s.name == "new-1")
    assert lines[new_1.address] is None  # nginx refuses weight=0: rendered as 'down'


def test_weights_reads_back_the_rendered_file(nginx: NginxServer, router: NginxRouter) -> None:
    async def main() -> tuple[dict[str, int], dict[str, float], int]:
        await router.set_weights({"legacy": 90, "new": 10})
        fresh = make_router(nginx, router._servers)  # another process reading
        seen = await fresh.weights()
        async with httpx.AsyncClient(trust_env=False) as client:
            status = (await client.get(nginx.status_url)).json()
        return dict(seen.servers), dict(seen.percent), status["version"]

    servers, percent, loaded_version = asyncio.run(main())
    assert servers == {"legacy-1": 252, "legacy-2": 252, "new-1": 56}
    assert percent["new"] == pytest.approx(10.0)
    state, _lines = parse_include(nginx.include.read_text())
    assert state is not None and loaded_version == state.version  # the workers run this file


def test_session_cookie_keeps_its_server_while_weights_are_unchanged(
    nginx: NginxServer, router: NginxRouter
) -> None:
    sessions = [uuid.uuid4().hex for _ in range(200)]

    async def main() -> list[tuple[str, str]]:
        await router.set_weights({"legacy": 50, "new": 50})
        return await send(nginx.url, 4000, sessions=sessions)

    results = asyncio.run(main())
    assert stickiness(results) >= 0.999
    assert 30 <= share(results) <= 70


def test_rollback_to_0_moves_sticky_sessions_off_the_new_app(
    nginx: NginxServer, router: NginxRouter
) -> None:
    sessions = [uuid.uuid4().hex for _ in range(200)]

    async def main() -> tuple[float, float]:
        await router.set_weights({"legacy": 50, "new": 50})
        before = await send(nginx.url, 400, sessions=sessions)
        await router.set_weights({"legacy": 100, "new": 0})
        after = await send(nginx.url, 400, sessions=sessions)
        return share(before), share(after)

    before, after = asyncio.run(main())
    assert before > 20
    assert after == 0


def test_drain_stops_traffic_to_an_instance_and_keeps_the_backend_share(
    nginx: NginxServer, router: NginxRouter
) -> None:
    async def main() -> tuple[Counter[str], float, RouterStats, Counter[str]]:
        await router.set_weights({"legacy": 50, "new": 50})
        await router.drain("legacy", "legacy-1")
        drained = await send(nginx.url, 1000)
        stats = await router.stats()
        await router.ready("legacy", "legacy-1")
        back = Counter(name for _s, name in await send(nginx.url, 600))
        return Counter(name for _s, name in drained), share(drained), stats, back

    drained, new_share, stats, back = asyncio.run(main())
    assert drained["legacy-1"] == 0
    assert new_share == pytest.approx(50, abs=3)
    status = {s.instance: s.status for s in stats.instances}
    assert status == {"legacy-1": "DRAIN", "legacy-2": "UP", "new-1": "UP"}
    assert back["legacy-1"] > 0


def test_stats_count_responses_by_class(nginx: NginxServer, router: NginxRouter) -> None:
    async def main() -> tuple[RouterStats, RouterStats]:
        await router.set_weights({"legacy": 100, "new": 0})
        before = await router.stats()
        await send(nginx.url, 300, path="/status/200")
        await send(nginx.url, 50, path="/status/503")
        await send(nginx.url, 20, path="/status/404")
        return before, await router.stats()

    before, after = asyncio.run(main())
    grown = {
        klass: after.responses("legacy")[klass] - before.responses("legacy")[klass]
        for klass in ("2xx", "4xx", "5xx")
    }
    assert grown == {"2xx": 300, "4xx": 20, "5xx": 50}
    assert after.requests("new") == before.requests("new")


def test_rejected_config_is_a_router_error_and_the_old_config_keeps_serving(
    nginx: NginxServer, servers: list[Server]
) -> None:
    def broken(state: UpstreamState, members: Sequence[Server], settings: RenderSettings) -> str:
        return render_upstream(state, members, settings) + "no_such_directive on;\n"

    good = make_router(nginx, servers)
    bad = make_router(nginx, servers, render=broken)

    async def main() -> tuple[str, str, float]:
        await good.set_weights({"legacy": 100, "new": 0})
        kept = nginx.include.read_text()
        with pytest.raises(RouterError) as caught:
            await bad.set_weights({"legacy": 50, "new": 50})
        served = await send(nginx.url, 300)
        return str(caught.value), kept, share(served)

    message, kept, new_share = asyncio.run(main())
    assert message.startswith("nginx -t rejected the new upstream config; the previous config")
    assert 'unknown directive "no_such_directive"' in message
    assert nginx.include.read_text() == kept  # rolled back
    assert new_share == 0  # still the old weights


def test_a_file_that_does_not_read_back_as_written_is_a_weight_mismatch(
    nginx: NginxServer, servers: list[Server]
) -> None:
    def equal_weights(
        state: UpstreamState, members: Sequence[Server], settings: RenderSettings
    ) -> str:
        flat = UpstreamState(state.version, state.percent, dict.fromkeys(state.weights, 1))
        return render_upstream(flat, members, settings)

    good = make_router(nginx, servers)
    wrong = make_router(nginx, servers, render=equal_weights)

    async def main() -> str:
        await good.set_weights({"legacy": 100, "new": 0})
        kept = nginx.include.read_text()
        with pytest.raises(
            WeightMismatch,
            match=r"legacy-1 \(127\.0\.0\.1:\d+\) is weight=1 after writing weight=252",
        ):
            await wrong.set_weights({"legacy": 90, "new": 10})
        return kept

    kept = asyncio.run(main())
    assert nginx.include.read_text() == kept  # rolled back before nginx saw it
    assert share(asyncio.run(send(nginx.url, 200))) == 0


def test_unknown_instance_and_bad_weights_are_router_errors(router: NginxRouter) -> None:
    with pytest.raises(RouterError, match=r"new/new-7 is not a server .*new/new-1"):
        asyncio.run(router.drain("new", "new-7"))
    with pytest.raises(RouterError, match="must add up to 100"):
        asyncio.run(router.set_weights({"legacy": 60, "new": 60}))
    with pytest.raises(RouterError, match="unknown backend canary"):
        asyncio.run(router.set_weights({"canary": 100}))


def test_open_router_builds_the_nginx_router_from_the_plan(
    nginx: NginxServer, servers: list[Server]
) -> None:
    system = RouterSystem(type="nginx", config=str(nginx.config), admin=nginx.status_url)
    router = open_router(system, servers, ProbeContext())
    assert isinstance(router, NginxRouter)
    assert router.include == nginx.include  # changeover-upstream.conf beside nginx.conf
