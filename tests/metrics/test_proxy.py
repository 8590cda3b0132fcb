"""ProxySource against a real proxy process in front of real backend processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from changeover.metrics.base import Observation
from changeover.metrics.proxy import ProxySource, parse_exposition
from support.backends import free_port, start_backend
from support.proxy_process import RunningProxy, run_proxy, write_config


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    directory = tmp_path_factory.mktemp("proxy")
    with start_backend("legacy-1") as legacy, start_backend("new-1") as new:
        config = write_config(directory, {"legacy": [legacy], "new": [new]})
        with run_proxy(config) as running:
            yield running


def send(proxy: RunningProxy, paths: list[str], backend: str) -> None:
    """Send every path to one backend (weights 100 % there), keep-alive."""
    weights = {"legacy": 0.0, "new": 0.0, backend: 100.0}
    proxy.admin_call("PUT", "/v1/weights", weights)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for path in paths:
            client.get(path)


async def read_all(source: ProxySource, *reads: tuple[str, str]) -> list[Observation]:
    try:
        return list(await asyncio.gather(*(source.read(m, of) for m, of in reads)))
    finally:
        await source.close()


def test_error_rate_counts_the_5xx_answers_of_one_backend(proxy: RunningProxy) -> None:
    before_new, before_legacy = asyncio.run(
        read_all(
            ProxySource(proxy.admin, proxy.token), ("error_rate", "new"), ("error_rate", "legacy")
        )
    )
    send(proxy, ["/status/500"] * 3 + ["/echo"] * 7, "new")
    send(proxy, ["/echo"] * 4, "legacy")
    after_new, after_legacy = asyncio.run(
        read_all(
            ProxySource(proxy.admin, proxy.token), ("error_rate", "new"), ("error_rate", "legacy")
        )
    )
    assert after_new.events - before_new.events == 3
    assert after_new.total - before_new.total == 10
    assert after_legacy.events == before_legacy.events
    assert after_legacy.total - before_legacy.total == 4


def test_latency_histogram_sees_slow_requests(proxy: RunningProxy) -> None:
    send(proxy, ["/slow?ms=300"] * 2, "legacy")
    (obs,) = asyncio.run(read_all(ProxySource(proxy.admin, proxy.token), ("latency_p95", "legacy")))
    assert obs.unavailable is None and obs.histogram is not None
    bounds = dict(obs.histogram)
    assert bounds[float("inf")] - bounds[0.25] >= 2  # both slow ones lie above 250 ms
    assert obs.unit == "s"


def test_one_scrape_serves_several_metrics_within_the_cache_time(proxy: RunningProxy) -> None:
    async def scenario() -> tuple[Observation, Observation]:
        source = ProxySource(proxy.admin, proxy.token, cache_s=60)
        try:
            first = await source.read("requests", "new")
            await asyncio.to_thread(send, proxy, ["/echo"] * 3, "new")
            second = await source.read("requests", "new")
            return first, second
        finally:
            await source.close()

    first, second = asyncio.run(scenario())
    assert first.total == second.total
    assert first.at == second.at


def test_stuck_requests_counts_requests_in_flight(proxy: RunningProxy) -> None:
    async def scenario() -> float | None:
        source = ProxySource(proxy.admin, proxy.token)
        try:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                await asyncio.to_thread(
                    proxy.admin_call, "PUT", "/v1/weights", {"legacy": 100.0, "new": 0.0}
                )
                slow = [asyncio.create_task(client.get("/slow?ms=1500")) for _ in range(2)]
                await asyncio.sleep(0.5)
                obs = await source.read("stuck_requests", "legacy")
                await asyncio.gather(*slow)
                return obs.value
        finally:
            await source.close()

    assert asyncio.run(scenario()) == 2


def test_a_wrong_token_is_a_plain_reason_without_the_token(proxy: RunningProxy) -> None:
    (obs,) = asyncio.run(
        read_all(ProxySource(proxy.admin, "not-the-token-xyz"), ("error_rate", "new"))
    )
    assert obs.unavailable is not None
    assert "refused the credentials" in obs.unavailable
    assert "not-the-token-xyz" not in obs.unavailable


def test_an_unknown_backend_names_the_known_ones(proxy: RunningProxy) -> None:
    (obs,) = asyncio.run(read_all(ProxySource(proxy.admin, proxy.token), ("error_rate", "green")))
    assert obs.unavailable == "the proxy has no backend 'green' (backends: legacy, new)"


def test_an_unreachable_proxy_is_unavailable_not_an_exception() -> None:
    source = ProxySource(f"http://127.0.0.1:{free_port()}", "token-1234")
    (obs,) = asyncio.run(read_all(source, ("error_rate", "new")))
    assert obs.unavailable is not None and "connection refused" in obs.unavailable


def test_parse_exposition_refuses_text_without_proxy_metrics() -> None:
    with pytest.raises(ValueError):
        parse_exposition("# HELP other_total x\n# TYPE other_total counter\nother_total 1\n")


def test_parse_exposition_sums_instances_of_a_backend() -> None:
    text = (
        "# TYPE changeover_proxy_requests counter\n"
        'changeover_proxy_requests_total{backend="new",instance="a",code_class="2xx"} 5\n'
        'changeover_proxy_requests_total{backend="new",instance="b",code_class="5xx"} 2\n'
        "# TYPE changeover_proxy_upstream_errors counter\n"
        'changeover_proxy_upstream_errors_total{backend="new",instance="b",kind="refused"} 1\n'
    )
    backend = parse_exposition(text)["new"]
    assert (backend.answered, backend.answered_5xx, backend.upstream_errors) == (7, 2, 1)
