"""Metrics read from a Prometheus server with PromQL instant queries, one template per metric.

A template's ``{of}`` is replaced by the system the gate is about (the ``job`` label by default).
``kind`` says how to read the answer: ``gauge`` (one number), ``counter`` (a cumulative total),
``ratio`` (two cumulative counters: bad events out of a total) or ``histogram`` (cumulative
``le`` buckets). Counters summed over instances drop when one restarts; the controller sees that
as a negative difference. ``interpret_vector`` is pure; ``PrometheusSource.read`` does the I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from changeover.metrics._common import Failed, get, missing, wall_clock
from changeover.metrics.base import Observation

Kind = Literal["gauge", "counter", "ratio", "histogram"]

# ``of`` goes into a label matcher: a quote or brace in it would change the query.
_SAFE_OF = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


@dataclass(frozen=True)
class PromQuery:
    """How one metric is read: ``query`` (for ratio: the bad events), ``total`` for ratio."""

    kind: Kind
    query: str
    total: str | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == "ratio") != (self.total is not None):
            raise ValueError("a ratio query needs 'total', and only a ratio query has one")


def _requests(matcher: str) -> str:
    return f'sum(http_requests_total{{job="{{of}}"{matcher}}})'


_ALL = _requests("")
_BUCKETS = 'sum by (le) (http_request_duration_seconds_bucket{job="{of}"})'
_RSS_MB = 'sum(process_resident_memory_bytes{job="{of}"}) / 1048576'

#: Conventional client-library names (Go's promhttp / prometheus_client) scraped as job ``of``.
DEFAULT_QUERIES: Mapping[str, PromQuery] = {
    "error_rate": PromQuery("ratio", _requests(',code=~"5.."'), _ALL, "5xx / requests"),
    "auth_failures": PromQuery("ratio", _requests(',code=~"401|403"'), _ALL, "401|403 / requests"),
    "rate_limited": PromQuery("ratio", _requests(',code="429"'), _ALL, "429 / requests"),
    "timeout_rate": PromQuery("ratio", _requests(',code=~"408|504"'), _ALL, "408|504 / requests"),
    "requests": PromQuery("counter", _ALL, unit="requests"),
    "latency": PromQuery("histogram", _BUCKETS, unit="s"),
    "latency_p95": PromQuery("histogram", _BUCKETS, unit="s"),
    "latency_stable": PromQuery("histogram", _BUCKETS, unit="s"),
    "memory": PromQuery("gauge", _RSS_MB, unit="MB"),
    "memory_leak": PromQuery("gauge", _RSS_MB, unit="MB"),
    "memory_stable": PromQuery("gauge", _RSS_MB, unit="MB"),
    # 100 % is one core busy, as top shows it.
    "cpu": PromQuery(
        "gauge", '100 * sum(rate(process_cpu_seconds_total{job="{of}"}[1m]))', unit="%"
    ),
    "goroutines": PromQuery("gauge", 'sum(go_goroutines{job="{of}"})', unit="goroutines"),
}


def render(template: str, of: str | None) -> str:
    """The template with ``{of}`` filled in; ``Failed`` when ``of`` is needed and unusable."""
    if "{of}" not in template:
        return template
    if of is None:
        raise Failed("this query needs to know which system (of: ...)")
    if not _SAFE_OF.match(of):
        raise Failed(f"{of[:40]!r} cannot go into a PromQL label (letters, digits, _ . : - only)")
    return template.replace("{of}", of)


def interpret_vector(data: Any) -> list[tuple[dict[str, str], float]]:
    """The (labels, value) pairs of an instant query's ``data``; ``Failed`` on any other shape."""
    try:
        kind = data["resultType"]
        result = data["result"]
        if kind == "scalar":
            return [({}, float(result[1]))]
        if kind != "vector":
            raise Failed(f"the query gave a {kind}, not an instant vector")
        return [(dict(item.get("metric", {})), float(item["value"][1])) for item in result]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise Failed("Prometheus answered a query result of an unknown shape") from exc


def one_number(series: list[tuple[dict[str, str], float]], query: str) -> float:
    """The single value of a query; ``Failed`` when there are none or several."""
    if not series:
        raise Failed(f"no series for {query} (is the job scraped, is the name right?)")
    if len(series) > 1:
        raise Failed(f"{query} gave {len(series)} series; aggregate it to one (sum, avg, max)")
    value = series[0][1]
    if math.isnan(value):
        raise Failed(f"{query} is NaN (no samples in its window)")
    return value


def cumulative_buckets(series: list[tuple[dict[str, str], float]]) -> tuple[tuple[float, int], ...]:
    """Series labelled ``le`` as sorted (bound, cumulative count); ``Failed`` without +Inf."""
    buckets: dict[float, int] = {}
    for labels, value in series:
        if "le" not in labels:
            raise Failed("a histogram query must keep the 'le' label: sum by (le) (...)")
        if not math.isnan(value):
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0) + int(value)
    ordered = tuple(sorted(buckets.items()))
    if not ordered or not math.isinf(ordered[-1][0]):
        raise Failed('no histogram buckets (or no le="+Inf" bucket) in the answer')
    return ordered


class PrometheusSource:
    """Instant PromQL queries per metric: ``queries`` extend and override ``DEFAULT_QUERIES``."""

    def __init__(
        self,
        url: str,
        queries: Mapping[str, PromQuery] | None = None,
        *,
        name: str = "prometheus",
        headers: Mapping[str, str] | None = None,
        timeout: float = 2.0,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._api = url.rstrip("/") + "/api/v1/query"
        self.queries = {**DEFAULT_QUERIES, **(queries or {})}
        self._headers = dict(headers or {})
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    def serves(self, metric: str) -> bool:
        return metric in self.queries

    async def read(self, metric: str, of: str | None) -> Observation:
        spec = self.queries.get(metric)
        if spec is None:
            return missing(metric, of, f"no PromQL query is configured for {metric!r}")
        at = wall_clock()
        try:
            series = await self._query(render(spec.query, of))
            if spec.kind == "gauge":
                value = one_number(series, render(spec.query, of))
                return Observation(metric, of, at, value=value, unit=spec.unit)
            if spec.kind == "counter":
                total = one_number(series, render(spec.query, of))
                return Observation(metric, of, at, total=int(total), unit=spec.unit)
            if spec.kind == "histogram":
                buckets = cumulative_buckets(series)
                return Observation(metric, of, at, histogram=buckets, unit=spec.unit)
            assert spec.total is not None
            total = one_number(await self._query(render(spec.total, of)), spec.total)
            # No series of bad events while the total exists: none happened (yet).
            events = one_number(series, spec.query) if series else 0.0
            return Observation(metric, of, at, events=int(events), total=int(total), unit=spec.unit)
        except Failed as exc:
            return missing(metric, of, exc.reason)

    async def _query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        # 400 and 422 carry Prometheus' own words about the query (a parse error, say).
        response = await get(
            self._client,
            "Prometheus",
            self._api,
            params={"query": promql},
            headers=self._headers,
            accept=(200, 400, 422),
        )
        body = _json(response)
        if body.get("status") != "success":
            reason = f"{body.get('errorType', 'error')}: {body.get('error', 'no reason given')}"
            raise Failed(f"Prometheus refused {promql}: {reason}")
        return interpret_vector(body.get("data"))

    async def close(self) -> None:
        await self._client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Failed("Prometheus answered something that is not JSON") from exc
    if not isinstance(body, dict):
        raise Failed("Prometheus answered JSON that is not an object")
    return body
