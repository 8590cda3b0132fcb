"""Metrics of the built-in proxy, read from its admin API's Prometheus exposition (``/metrics``).

One scrape holds every backend's counters and is kept for ``cache_s`` (0.5 s) to serve all the
metrics read in that time. Counters are since the proxy started (the controller takes differences);
rates are out of attempts: answered plus never reached. ``parse_exposition`` and ``observe`` are
pure; ``ProxySource.read`` does the I/O.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from changeover.metrics._common import Failed, get, missing, wall_clock
from changeover.metrics.base import Observation
from changeover.secrets import REDACTOR

#: metric → the notable statuses it counts as events, out of all attempts (the proxy exports
#: ``changeover_proxy_responses_total`` for a fixed set of codes: stats.NOTABLE_CODES)
CODE_RATIOS: Mapping[str, tuple[int, ...]] = {
    "auth_failures": (401, 403),
    "rate_limited": (429,),
    "timeout_rate": (408, 504),
}
#: metrics read from the latency histogram: all three are the same since-start histogram
HISTOGRAMS = frozenset({"latency", "latency_p95", "latency_stable"})
# "in_flight" is not a sign of stuck requests: at any rate some requests are always in flight.
# The age of the oldest one is: "oldest_in_flight_s" (PostgreSQL's stuck_requests are queries).
SERVED = frozenset(
    {"error_rate", "requests", "in_flight", "oldest_in_flight_s", *CODE_RATIOS, *HISTOGRAMS}
)

_REQUESTS = "changeover_proxy_requests_total"
_RESPONSES = "changeover_proxy_responses_total"
_UNANSWERED = "changeover_proxy_unanswered_total"
_IN_FLIGHT = "changeover_proxy_in_flight"
_OLDEST = "changeover_proxy_oldest_in_flight_seconds"
_BUCKET = "changeover_proxy_request_duration_seconds_bucket"
_SAMPLES = frozenset({_REQUESTS, _RESPONSES, _UNANSWERED, _IN_FLIGHT, _OLDEST, _BUCKET})


@dataclass
class Backend:
    """One backend's numbers from a scrape, summed over its instances."""

    answered: int = 0  # answered by an instance, any status (the proxy's own 502/504 included)
    answered_5xx: int = 0
    # attempts that never reached an instance; None when the exposition has no such counter
    # (a proxy older than this reader), which must not read as "no failures"
    unanswered: int | None = None
    codes: dict[int, int] = field(default_factory=dict)  # notable status → answers
    in_flight: int = 0
    # the oldest of its instances' requests in flight; None from a proxy without the gauge
    oldest_in_flight_s: float | None = None
    buckets: dict[float, int] = field(default_factory=dict)  # upper bound → cumulative count

    @property
    def attempts(self) -> int:
        return self.answered + (self.unanswered or 0)


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
            elif sample.name == _RESPONSES:
                code = int(sample.labels["code"])
                entry.codes[code] = entry.codes.get(code, 0) + count
            elif sample.name == _UNANSWERED:
                entry.unanswered = (entry.unanswered or 0) + count
            elif sample.name == _IN_FLIGHT:
                entry.in_flight += count
            elif sample.name == _OLDEST:
                entry.oldest_in_flight_s = max(entry.oldest_in_flight_s or 0.0, sample.value)
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
    if metric == "in_flight":
        return Observation(metric, of, at, value=float(entry.in_flight), unit="requests")
    if metric == "oldest_in_flight_s":
        if entry.oldest_in_flight_s is None:
            return Observation.missing(
                metric, of, at, f"the proxy does not export {_OLDEST} (an older changeover?)"
            )
        return Observation(
            metric,
            of,
            at,
            value=entry.oldest_in_flight_s,
            unit="s",
            detail=f"requests in flight to {of}: {entry.in_flight}",
        )
    if metric in HISTOGRAMS:
        histogram = tuple(sorted(entry.buckets.items()))
        if not histogram or not math.isinf(histogram[-1][0]):
            return Observation.missing(metric, of, at, "the proxy exported no latency histogram")
        return Observation(metric, of, at, histogram=histogram, unit="s")
    if metric not in SERVED:
        return Observation.missing(metric, of, at, f"the proxy source does not serve {metric!r}")
    if entry.unanswered is None:
        return Observation.missing(
            metric,
            of,
            at,
            f"the proxy does not export {_UNANSWERED}, so failed attempts cannot be counted "
            "(a proxy from an older changeover?)",
        )
    if metric == "requests":
        return Observation(metric, of, at, total=entry.attempts, unit="requests")
    if metric == "error_rate":
        # A failure after reaching the instance is already in `answered` as the 502/504 the
        # proxy answered, so only the unreached attempts are added: each attempt counts once.
        return Observation(
            metric,
            of,
            at,
            events=entry.answered_5xx + entry.unanswered,
            total=entry.attempts,
            unit="5xx or unanswered / requests",
        )
    codes = CODE_RATIOS[metric]
    absent = [code for code in codes if code not in entry.codes]
    if absent:
        shown = ", ".join(map(str, absent))
        return Observation.missing(
            metric, of, at, f"the proxy does not export {_RESPONSES} for code {shown}"
        )
    return Observation(
        metric,
        of,
        at,
        events=sum(entry.codes[code] for code in codes),
        total=entry.attempts,
        unit="|".join(map(str, codes)) + " / requests",
    )


class ProxySource:
    """The built-in proxy's admin API: the metrics in ``SERVED``, for one backend each.

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
