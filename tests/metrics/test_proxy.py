"""ProxySource against a real proxy process in front of real backend processes, and the pure
reading of its exposition (parse_exposition, observe) on hand-written and ProxyStats text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from changeover.metrics.base import Observation
from changeover.metrics.proxy import CODE_RATIOS, SERVED, ProxySource, observe, parse_exposition
from changeover.proxy.state import Instance
from changeover.proxy.stats import NOTABLE_CODES, ProxyStats
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


def read_now(proxy: RunningProxy, *reads: tuple[str, str]) -> list[Observation]:
    """The metrics from a fresh source (no cached scrape)."""
    return asyncio.run(read_all(ProxySource(proxy.admin, proxy.token), *reads))


def counted(before: Observation, after: Observation) -> tuple[int, int]:
    """(events, total) between two readings of a ratio."""
    assert before.events is not None and before.total is not None, before.unavailable
    assert after.events is not None and after.total is not None, after.unavailable
    return after.events - before.events, after.total - before.total


def test_error_rate_counts_the_5xx_answers_of_one_backend(proxy: RunningProxy) -> None:
    reads = (("error_rate", "new"), ("error_rate", "legacy"))
    before_new, before_legacy = read_now(proxy, *reads)
    send(proxy, ["/status/500"] * 3 + ["/echo"] * 7, "new")
    send(proxy, ["/echo"] * 4, "legacy")
    after_new, after_legacy = read_now(proxy, *reads)
    assert counted(before_new, after_new) == (3, 10)
    assert counted(before_legacy, after_legacy) == (0, 4)


def test_code_ratios_read_what_a_backend_answered(proxy: RunningProxy) -> None:
    reads = [(m, "new") for m in ("auth_failures", "rate_limited", "timeout_rate")]
    before = read_now(proxy, *reads)
    statuses = [401, 401, 403, 429, 429, 429, 408, 504, 504, 500]
    send(proxy, [f"/status/{s}" for s in statuses] + ["/echo"] * 10, "new")
    after = read_now(proxy, *reads)
    got = {a.metric: counted(b, a) for b, a in zip(before, after, strict=True)}
    assert got == {"auth_failures": (3, 20), "rate_limited": (3, 20), "timeout_rate": (3, 20)}


def test_a_reset_after_the_request_was_sent_is_one_failed_attempt(proxy: RunningProxy) -> None:
    (before,) = read_now(proxy, ("error_rate", "new"))
    send(proxy, ["/reset", "/echo", "/echo"], "new")  # the proxy answers the reset with 502
    (after,) = read_now(proxy, ("error_rate", "new"))
    assert counted(before, after) == (1, 3)


def test_connects_refused_by_an_instance_are_unanswered_attempts(
    tmp_path: Path,
) -> None:
    with start_backend("new-gone") as gone:
        pass  # stopped: its port now refuses connections
    # Active checks far apart, so only this test's request finds the instance down.
    with start_backend("legacy-1") as legacy:
        config = write_config(
            tmp_path, {"legacy": [legacy], "new": [gone]}, health={"interval": "60s"}
        )
        with run_proxy(config) as running:
            # Refused on new, retried on legacy: the client gets its 200 all the same.
            send(running, ["/echo"], "new")
            new, requests, legacy_errors = read_now(
                running, ("error_rate", "new"), ("requests", "new"), ("error_rate", "legacy")
            )
    assert (new.events, new.total) == (1, 1)
    assert requests.total == 1
    assert (legacy_errors.events, legacy_errors.total) == (0, 1)


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


def test_in_flight_counts_requests_sent_and_not_yet_answered(proxy: RunningProxy) -> None:
    async def scenario() -> float | None:
        source = ProxySource(proxy.admin, proxy.token)
        try:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                await asyncio.to_thread(
                    proxy.admin_call, "PUT", "/v1/weights", {"legacy": 100.0, "new": 0.0}
                )
                slow = [asyncio.create_task(client.get("/slow?ms=1500")) for _ in range(2)]
                await asyncio.sleep(0.5)
                obs = await source.read("in_flight", "legacy")
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
        "# TYPE changeover_proxy_responses counter\n"
        'changeover_proxy_responses_total{backend="new",instance="a",code="429"} 1\n'
        'changeover_proxy_responses_total{backend="new",instance="b",code="429"} 2\n'
        "# TYPE changeover_proxy_unanswered counter\n"
        'changeover_proxy_unanswered_total{backend="new",instance="a"} 0\n'
        'changeover_proxy_unanswered_total{backend="new",instance="b"} 1\n'
    )
    backend = parse_exposition(text)["new"]
    assert (backend.answered, backend.answered_5xx, backend.unanswered) == (7, 2, 1)
    assert backend.codes == {429: 3}
    assert backend.attempts == 8


def exposition(
    *, answered_2xx: int, answered_5xx: int, unanswered: int, upstream_errors: int, **codes: int
) -> str:
    """A one-instance exposition of backend 'new' as the proxy writes it (codes: c401=...)."""
    lines = [
        "# TYPE changeover_proxy_requests counter",
        f'changeover_proxy_requests_total{{backend="new",instance="a",code_class="2xx"}} '
        f"{answered_2xx}",
        f'changeover_proxy_requests_total{{backend="new",instance="a",code_class="5xx"}} '
        f"{answered_5xx}",
        "# TYPE changeover_proxy_responses counter",
        *(
            f'changeover_proxy_responses_total{{backend="new",instance="a",code="{code}"}} '
            f"{codes.get(f'c{code}', 0)}"
            for code in NOTABLE_CODES
        ),
        "# TYPE changeover_proxy_unanswered counter",
        f'changeover_proxy_unanswered_total{{backend="new",instance="a"}} {unanswered}',
        "# TYPE changeover_proxy_upstream_errors counter",
        f'changeover_proxy_upstream_errors_total{{backend="new",instance="a",kind="reset"}} '
        f"{upstream_errors}",
    ]
    return "\n".join(lines) + "\n"


def read(metric: str, text: str) -> Observation:
    return observe(metric, "new", 1.0, parse_exposition(text))


def test_a_502_from_a_reached_upstream_is_counted_once() -> None:
    # The upstream reset the connection after the request was sent: the proxy answered 502
    # (in requests, 5xx) and also counted an upstream error; nothing went unanswered.
    text = exposition(answered_2xx=9, answered_5xx=1, unanswered=0, upstream_errors=1, c502=1)
    obs = read("error_rate", text)
    assert (obs.events, obs.total) == (1, 10)
    assert obs.unit == "5xx or unanswered / requests"
    assert read("requests", text).total == 10


def test_error_rate_adds_the_attempts_that_never_reached_an_instance() -> None:
    # 2 refused connects (retried elsewhere or answered 502 by the proxy) and 1 reached 504.
    text = exposition(answered_2xx=7, answered_5xx=1, unanswered=2, upstream_errors=3, c504=1)
    obs = read("error_rate", text)
    assert (obs.events, obs.total) == (3, 10)
    assert read("requests", text).total == 10


def test_error_rate_of_the_exposition_equals_the_proxys_own_window_error_rate() -> None:
    new_a, new_b = Instance("new", "a", "127.0.0.1", 9001), Instance("new", "b", "127.0.0.1", 9002)
    stats = ProxyStats([new_a, new_b], clock=lambda: 1000.0)
    for instance, status in [(new_a, 200)] * 6 + [(new_b, 503), (new_a, 401)]:
        stats.request_finished(instance, status, 0.01, 0, 0)
    stats.upstream_failed(new_b, "connect refused", reached_upstream=False)
    stats.upstream_failed(new_a, "upstream closed the connection", reached_upstream=True)
    stats.request_finished(new_a, 502, 0.01, 0, 0)
    stats.upstream_failed(new_b, "no answer within 30s", reached_upstream=True)
    stats.request_finished(new_b, 504, 30.0, 0, 0)
    obs = read("error_rate", stats.render_prometheus().decode())
    window = stats.window(None, backend="new")
    assert obs.events is not None and obs.total is not None
    assert (obs.events, obs.total) == (4, 11)
    assert obs.events / obs.total == window.error_rate


def test_code_ratios_count_their_codes_out_of_all_attempts() -> None:
    text = exposition(
        answered_2xx=12,
        answered_5xx=3,
        unanswered=1,
        upstream_errors=1,
        c401=2,
        c403=1,
        c408=1,
        c429=4,
        c502=1,
        c503=1,
        c504=1,
    )
    got = {m: read(m, text) for m in ("auth_failures", "rate_limited", "timeout_rate")}
    assert {m: (o.events, o.total) for m, o in got.items()} == {
        "auth_failures": (3, 16),
        "rate_limited": (4, 16),
        "timeout_rate": (2, 16),
    }
    assert {m: o.unit for m, o in got.items()} == {
        "auth_failures": "401|403 / requests",
        "rate_limited": "429 / requests",
        "timeout_rate": "408|504 / requests",
    }


def test_every_code_a_ratio_needs_is_one_the_proxy_exports() -> None:
    assert {code for codes in CODE_RATIOS.values() for code in codes} <= set(NOTABLE_CODES)
    assert set(CODE_RATIOS) <= SERVED


def test_latency_stable_is_the_latency_histogram() -> None:
    stats = ProxyStats([Instance("new", "a", "127.0.0.1", 9001)], clock=lambda: 1000.0)
    for seconds in (0.003, 0.003, 0.2):
        stats.request_finished(Instance("new", "a", "127.0.0.1", 9001), 200, seconds, 0, 0)
    text = stats.render_prometheus().decode()
    stable, p95 = read("latency_stable", text), read("latency_p95", text)
    assert "latency_stable" in SERVED
    assert stable.histogram is not None and stable.histogram == p95.histogram
    bounds = dict(stable.histogram)
    assert (bounds[0.005], bounds[0.25], bounds[float("inf")]) == (2, 3, 3)
    assert stable.unit == "s"


def test_without_the_unanswered_counter_a_rate_is_unavailable_not_zero_failures() -> None:
    # An older proxy: its upstream_errors cannot be told apart, so no rate is better than a low one.
    text = (
        "# TYPE changeover_proxy_requests counter\n"
        'changeover_proxy_requests_total{backend="new",instance="a",code_class="2xx"} 5\n'
    )
    for metric in ("error_rate", "requests", "auth_failures"):
        obs = read(metric, text)
        assert (
            obs.unavailable is not None and "changeover_proxy_unanswered_total" in obs.unavailable
        )
        assert obs.events is None and obs.total is None


def test_a_code_ratio_whose_code_is_not_exported_is_unavailable() -> None:
    text = exposition(answered_2xx=5, answered_5xx=0, unanswered=0, upstream_errors=0).replace(
        'code="403"', 'code="418"'
    )
    obs = read("auth_failures", text)
    assert (
        obs.unavailable == "the proxy does not export changeover_proxy_responses_total for code 403"
    )
    assert read("rate_limited", text).events == 0


def test_a_metric_it_does_not_serve_is_unavailable() -> None:
    text = exposition(answered_2xx=1, answered_5xx=0, unanswered=0, upstream_errors=0)
    assert read("cache_hit_rate", text).unavailable == (
        "the proxy source does not serve 'cache_hit_rate'"
    )
