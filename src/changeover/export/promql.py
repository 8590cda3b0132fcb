"""PromQL for a metric of one system: rates, ratios and quantiles over a window (pure).

The controller's Prometheus source reads cumulative totals with the templates of
``metrics.prometheus.DEFAULT_QUERIES`` (``{of}`` = the ``job`` label) and takes differences
itself; an alert or a graph needs the same series as ``rate(...[window])``. ``app_series`` turns
those templates into ``Series`` (a counter template must be a plain ``sum(selector)``, a
histogram ``sum by (le) (selector)``); ``proxy_series`` gives the built-in proxy's
``changeover_proxy_*`` series (``backend`` label) for the metrics the proxy serves, counted the
way ``metrics.proxy`` counts them: attempts are answers plus attempts that never reached an
instance, and an unreached attempt is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from changeover.metrics._common import Failed
from changeover.metrics.prometheus import DEFAULT_QUERIES, Kind, PromQuery, render
from changeover.metrics.proxy import CODE_RATIOS, HISTOGRAMS
from changeover.units import format_duration

SeriesChoice = Literal["app", "proxy"]

#: Each latency gate is judged on the 95th percentile (``analysis.latency``'s default quantile).
QUANTILE = 0.95

_SELECTOR = r"(?P<selector>[A-Za-z_:][A-Za-z0-9_:]*\{[^{}]*\})"
_SUM = re.compile(rf"^\s*sum\s*\(\s*{_SELECTOR}\s*\)\s*$")
_SUM_BY_LE = re.compile(rf"^\s*sum\s+by\s*\(\s*le\s*\)\s*\(\s*{_SELECTOR}\s*\)\s*$")

_PROXY_REQUESTS = "changeover_proxy_requests_total"
_PROXY_RESPONSES = "changeover_proxy_responses_total"
_PROXY_UNANSWERED = "changeover_proxy_unanswered_total"
_PROXY_BUCKETS = "changeover_proxy_request_duration_seconds_bucket"
_PROXY_IN_FLIGHT = "changeover_proxy_in_flight"
_PROXY_OLDEST = "changeover_proxy_oldest_in_flight_seconds"


class NoPromQL(Exception):
    """This metric cannot be written as PromQL; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Series:
    """One metric of one system as Prometheus has it.

    ``gauge``: ``expr`` is the value. ``counter``: ``total`` are selectors summed (a count).
    ``ratio``: ``bad`` out of ``total`` (selectors summed on each side). ``histogram``:
    ``buckets`` is the ``_bucket`` selector.
    """

    kind: Kind
    unit: str | None
    expr: str = ""
    bad: tuple[str, ...] = ()
    total: tuple[str, ...] = ()
    buckets: str = ""


def duration(value: timedelta) -> str:
    """A PromQL duration (``5m``, ``30s``, ``1500ms``); ``ValueError`` below a millisecond."""
    if value < timedelta(milliseconds=1):
        raise ValueError(f"a PromQL window is at least 1ms (got {value.total_seconds():g}s)")
    return format_duration(value)


def per_second(selectors: tuple[str, ...], window: timedelta, *, absent_is_zero: bool) -> str:
    """The summed per-second rate of ``selectors``.

    A sum over no series is no value at all, not 0: every term but the first of a total, and
    every term of a count of bad events, falls back to ``vector(0)`` — no 5xx series yet means
    no 5xx, and an error ratio must still be a number then.
    """
    w = duration(window)
    terms = []
    for i, selector in enumerate(selectors):
        term = f"sum(rate({selector}[{w}]))"
        terms.append(f"({term} or vector(0))" if absent_is_zero or i > 0 else term)
    return " + ".join(terms)


def value(series: Series, window: timedelta, quantile: float = QUANTILE) -> str:
    """What the series reads as one number: a gauge's value, a count's rate per second, the
    share of bad events, or a latency quantile in seconds."""
    if series.kind == "gauge":
        return series.expr
    if series.kind == "counter":
        return per_second(series.total, window, absent_is_zero=False)
    if series.kind == "histogram":
        return (
            f"histogram_quantile({quantile:g}, "
            f"sum by (le) (rate({series.buckets}[{duration(window)}])))"
        )
    bad = per_second(series.bad, window, absent_is_zero=True)
    total = per_second(series.total, window, absent_is_zero=False)
    return f"{group(bad)} / {group(total)}"


def group(expr: str) -> str:
    """``expr`` in parentheses unless it already is one term (``(...)`` or ``f(...)``)."""
    opened = expr.find("(")
    if opened < 0 or not (opened == 0 or re.fullmatch(r"[A-Za-z_]\w*", expr[:opened])):
        return f"({expr})"
    depth, quoted, escaped = 0, False, False
    for i, char in enumerate(expr[opened:], start=opened):
        if quoted:  # a label value may hold parentheses: "(4|5).."
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        quoted = char == '"'
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return expr if i == len(expr) - 1 else f"({expr})"
    return f"({expr})"


def app_series(metric: str, of: str | None) -> Series:
    """``metric`` of system ``of`` from the applications' own series (the controller's
    Prometheus templates); ``NoPromQL`` when there is no template or it cannot be a rate."""
    spec = DEFAULT_QUERIES.get(metric)
    if spec is None:
        raise NoPromQL(f"no PromQL template for {metric!r}")
    return _from_template(metric, spec, of)


def proxy_series(metric: str, of: str | None) -> Series:
    """``metric`` of backend ``of`` from the built-in proxy's series; the metrics the proxy does
    not serve (memory, cpu, ...) come from the applications' series, as the controller reads
    them from the next source."""
    if metric not in CODE_RATIOS and metric not in HISTOGRAMS | {"error_rate", "requests"}:
        if metric == "in_flight":
            return Series("gauge", "requests", expr=f"sum({_proxy(_PROXY_IN_FLIGHT, of)})")
        if metric == "oldest_in_flight_s":  # the oldest of the backend's instances
            return Series("gauge", "s", expr=f"max({_proxy(_PROXY_OLDEST, of)})")
        return app_series(metric, of)
    attempts = (_proxy(_PROXY_REQUESTS, of), _proxy(_PROXY_UNANSWERED, of))
    if metric in HISTOGRAMS:
        return Series("histogram", "s", buckets=_proxy(_PROXY_BUCKETS, of))
    if metric == "requests":
        return Series("counter", "requests", total=attempts)
    if metric == "error_rate":
        failed = (_proxy(_PROXY_REQUESTS, of, 'code_class="5xx"'), attempts[1])
        return Series("ratio", "5xx or unanswered / requests", bad=failed, total=attempts)
    codes = "|".join(map(str, CODE_RATIOS[metric]))
    answered = (_proxy(_PROXY_RESPONSES, of, f'code=~"{codes}"'),)
    return Series("ratio", f"{codes} / requests", bad=answered, total=attempts)


def series_for(choice: SeriesChoice, metric: str, of: str | None) -> Series:
    return proxy_series(metric, of) if choice == "proxy" else app_series(metric, of)


def _proxy(name: str, of: str | None, matcher: str = "") -> str:
    backend = _render('"{of}"', of)
    return f"{name}{{backend={backend}{',' + matcher if matcher else ''}}}"


def _render(template: str, of: str | None) -> str:
    try:
        return render(template, of)
    except Failed as exc:
        raise NoPromQL(exc.reason) from exc


def _from_template(metric: str, spec: PromQuery, of: str | None) -> Series:
    query = _render(spec.query, of)
    if spec.kind == "gauge":
        return Series("gauge", spec.unit, expr=query)
    if spec.kind == "histogram":
        match = _SUM_BY_LE.match(query)
        if match is None:
            raise NoPromQL(f"the {metric} template is not 'sum by (le) (selector)': {query}")
        return Series("histogram", spec.unit, buckets=match["selector"])
    selector = _summed(metric, query)
    if spec.kind == "counter":
        return Series("counter", spec.unit, total=(selector,))
    assert spec.total is not None  # PromQuery checks that a ratio has its total
    total = _summed(metric, _render(spec.total, of))
    return Series("ratio", spec.unit, bad=(selector,), total=(total,))


def _summed(metric: str, query: str) -> str:
    # A cumulative count becomes a rate only selector by selector: rate(sum(x)) is not PromQL.
    match = _SUM.match(query)
    if match is None:
        raise NoPromQL(f"the {metric} template is not 'sum(selector)', so not a rate: {query}")
    return match["selector"]
