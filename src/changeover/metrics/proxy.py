"""Metrics of the built-in proxy, read from its admin API's Prometheus exposition (``/metrics``).

One scrape holds every backend's counters, so it is kept for ``cache_s`` (0.5 s) and serves all
the metrics read in that time. Counters are since the proxy started; the controller takes
differences. ``parse_exposition`` and ``observe`` are pure; ``ProxySource.read`` does the I/O.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from changeover.metrics._common import Failed, get, missing, wall_clock
from changeover.metrics.base import Observation
from changeover.secrets import REDACTOR

#: metric → what it is read from; latency and latency_p95 are the same histogram
SERVED = frozenset({"error_rate", "latency", "latency_p95", "requests", "stuck_requests"})

_REQUESTS = "changeover_proxy_requests_total"
_ERRORS = "changeover_proxy_upstream_errors_total"
_IN_FLIGHT = "changeover_proxy_in_flight"
_BUCKET = "changeover_proxy_request_duration_seconds_bucket"
_SAMPLES = frozenset({_REQUESTS, _ERRORS, _IN_FLIGHT, _BUCKET})


@dataclass
class Backend:
    """One backend's numbers from a scrape, summed over its instances."""

    answered: int = 0  # answered by an instance, any status
    answered_5xx: int = 0
    upstream_errors: int = 0  # attempts that failed on the way to or from an instance
    in_flight: int = 0
    buckets: dict[float, int] = field(default_factory=dict)  # upper bound → cumulative count


def parse_exposition(text: str) -> dict[str, Backend]:
    """The proxy's exposition as numbers per backend; ``ValueError`` when it is not one."""
    backends: dict[str, Backend] = {}
    seen = False
    # Matched by sample name: the family name depends on how the TYPE line spells it.
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in _SAMPLES:
                continue
            seen = True
            name = sample.labels.get("backend")
            if name is None:
                continue
            entry = backends.setdefault(name, Backend())
            count = int(sample.value)
            if sample.name == _REQUESTS:
                entry.answered += count
                if sample.labels.get("code_class") == "5xx":
                    entry.answered_5xx += count
            elif sample.name == _ERRORS:
                entry.upstream_errors += count
            elif sample.name == _IN_FLIGHT:
                entry.in_flight += count
            else:
                bound = float(sample.labels["le"])
                entry.buckets[bound] = entry.buckets.get(bound, 0) + count
    if not seen:
        raise ValueError("no changeover_proxy_* metrics in the answer")
    return backends


def observe(metric: str, of: str | None, at: float, backends: dict[str, Backend]) -> Observation:
    """``metric`` of backend ``of`` from a parsed scrape (pure)."""
    if of is None:
        return Observation.missing(metric, of, at, "say which backend (of: legacy or new)")
    entry = backends.get(of)
    if entry is None:
        known = ", ".join(sorted(backends)) or "none"
        return Observation.missing(
            metric, of, at, f"the proxy has no backend {of!r} (backends: {known})"
        )
    if metric == "error_rate":
        # An attempt that failed after reaching the instance is counted both as its 502/504
        # and as an upstream error (the exposition does not tell them apart), so the rate
        # leans high rather than hiding a failure.
        total = entry.answered + entry.upstream_errors
        return Observation(
            metric,
            of,
            at,
            events=entry.answered_5xx + entry.upstream_errors,
            total=total,
            unit="5xx or failed attempts / attempts",
        )
    if metric == "requests":
        return Observation(metric, of, at, total=entry.answered + entry.upstream_errors)
    if metric == "stuck_requests":
        return Observation(metric, of, at, value=float(entry.in_flight), unit="requests")
    histogram = tuple(sorted(entry.buckets.items()))
    if not histogram or not math.isinf(histogram[-1][0]):
        return Observation.missing(metric, of, at, "the proxy exported no latency histogram")
    return Observation(metric, of, at, histogram=histogram, unit="s")


class ProxySource:
    """The built-in proxy's admin API: error_rate, latency(_p95), requests, stuck_requests.

    ``token`` is the admin bearer token (reads may be open on loopback, then None is enough).
    """

    def __init__(
        self,
        admin_url: str,
        token: str | None = None,
        *,
        name: str = "proxy",
        timeout: float = 2.0,
        cache_s: float = 0.5,
        verify: bool = True,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._url = admin_url.rstrip("/") + "/metrics"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            REDACTOR.register(token)
        self._cache_s = cache_s
        self._clock = clock
        self._scrape: tuple[float, float, dict[str, Backend]] | None = None  # (mono, wall, data)
        self._fetching = asyncio.Lock()  # metrics read together share one fetch
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    def serves(self, metric: str) -> bool:
        return metric in SERVED

    async def read(self, metric: str, of: str | None) -> Observation:
        if metric not in SERVED:
            return missing(metric, of, f"the proxy source does not serve {metric!r}")
        try:
            at, backends = await self._backends()
        except Failed as exc:
            return missing(metric, of, exc.reason)
        return observe(metric, of, at, backends)

    async def _backends(self) -> tuple[float, dict[str, Backend]]:
        async with self._fetching:
            cached = self._scrape
            if cached is not None and self._clock() - cached[0] < self._cache_s:
                return cached[1], cached[2]
            return await self._fetch()

    async def _fetch(self) -> tuple[float, dict[str, Backend]]:
        response = await get(self._client, "the proxy admin API", self._url, headers=self._headers)
        try:
            backends = parse_exposition(response.text)
        except ValueError as exc:  # the parser's own errors are ValueError too
            raise Failed(f"the proxy's /metrics answer is not its exposition: {exc}") from exc
        self._scrape = (self._clock(), wall_clock(), backends)
        return self._scrape[1], backends

    async def close(self) -> None:
        await self._client.aclose()
