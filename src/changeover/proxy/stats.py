"""The proxy's statistics: per backend and instance, over sliding windows, as JSON and Prometheus.

``ProxyStats`` is the core's ``Observer``. The hot path only increments counters (by status class
and, for a few notable codes, by code), records one value into the HDR histogram of the current
one-second bucket of a 60-slot ring, and keeps each request's start time while it is in flight
(the age of the oldest tells of stuck requests); windows and totals are merged when someone asks.
A bucket leaving the ring is folded into the since-start totals, so no recorded count is dropped.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from changeover.proxy.http import Captured, RequestHead
from changeover.proxy.state import Instance, RoutingState

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # monotonic seconds
MirrorCallback = Callable[[RequestHead, Captured, Captured | None, str | None], None]

#: HDR range: 1 µs to 60 s with 3 significant digits (values are recorded in microseconds).
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_FIGURES = 3
#: The ring keeps this many one-second buckets: the longest sliding window.
RING_SECONDS = 60
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: Statuses also counted one by one (``changeover_proxy_responses_total{code}``): the ones the
#: rollout gates read (auth failures, rate limiting, timeouts, bad gateways). A fixed set keeps
#: the label bounded whatever an application answers.
NOTABLE_CODES = (401, 403, 408, 429, 502, 503, 504)
_NOTABLE_INDEX = {code: i for i, code in enumerate(NOTABLE_CODES)}
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
)
#: Fixed bucket bounds (seconds) of ``changeover_proxy_request_duration_seconds``, counted from
#: the HDR data (so a bound is exact to HDR's 0.1 % precision).
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Windows for which latency quantile gauges are exported.
EXPORTED_WINDOWS = (10, 60)
#: Error kinds are label values: free text from a caller is squeezed into a few of them.
MAX_ERROR_KINDS = 16
_KIND_CHARS = re.compile(r"[^a-z0-9_]+")


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES, word_size=8)


def _status_index(status: int) -> int:
    # Anything below 200 counts as 1xx and anything from 500 up as 5xx: a class is never lost.
    return min(max(status // 100, 1), 5) - 1


class _Bucket:
    """The counts of one second (or, for ``_Series.folded``, of everything that left the ring)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "codes",
        "errors",
        "latency",
        "latency_sum",
        "notable",
        "second",
        "unanswered",
    )

    def __init__(self, second: int | None) -> None:
        self.latency: HdrHistogram | None = None  # created at the first recorded value
        self.reset(second)

    def reset(self, second: int | None) -> None:
        """Empty the bucket for another second, keeping its histogram's memory.

        A new HdrHistogram every second per instance made RSS grow by ~20 MiB before it levelled
        off (the package does not give a dropped histogram's memory back); reusing the ring's
        histograms keeps it flat.
        """
        self.second = second
        self.codes = [0, 0, 0, 0, 0]
        self.notable = [0] * len(NOTABLE_CODES)  # answers of each NOTABLE_CODES status
        self.errors: dict[str, int] = {}
        self.unanswered = 0  # failures that never reached the upstream: no request_finished
        self.bytes_in = 0
        self.bytes_out = 0
        self.latency_sum = 0.0
        if self.latency is not None:
            self.latency.reset()

    def record(self, value_us: int) -> HdrHistogram:
        hist = self.latency
        if hist is None:
            # 8-byte counters like every sum built from it: the library adds histograms of one
            # word size in C, and of two sizes slot by slot in Python — 60× slower, which made
            # summing a minute of seconds cost 0.17 s and the stats reads saturate a core.
            hist = self.latency = _histogram()
        hist.record_value(value_us)
        return hist

    def add(self, other: _Bucket) -> None:
        for i, count in enumerate(other.codes):
            self.codes[i] += count
        for i, count in enumerate(other.notable):
            self.notable[i] += count
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.unanswered += other.unanswered
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.latency_sum += other.latency_sum
        if other.latency is not None and other.latency.get_total_count():
            if self.latency is None:
                self.latency = _histogram()
            self.latency.add(other.latency)


class _Series:
    """One instance: a ring of one-second buckets, the folded past, and requests in flight."""

    __slots__ = ("folded", "instance", "ring", "started")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.ring: list[_Bucket] = [_Bucket(None) for _ in range(RING_SECONDS)]
        self.folded = _Bucket(None)
        # Start times of the requests in flight, oldest first (the clock only moves forward).
        self.started: list[float] = []

    @property
    def in_flight(self) -> int:
        return len(self.started)

    def begin(self, now: float) -> None:
        self.started.append(now)

    def end(self, now: float, seconds: float) -> None:
        """Forget the start time of the request that took ``seconds``.

        The observer is not told which request ended, only how long it took: the start time
        nearest ``now - seconds`` is the one to drop (the core's clock and ours differ by the
        microseconds between two calls), so the oldest left is right to that precision.
        """
        started = self.started
        if not started:
            return
        at = bisect.bisect_left(started, now - seconds)
        if at == len(started) or (
            at > 0 and (now - seconds) - started[at - 1] <= started[at] - (now - seconds)
        ):
            at -= 1
        del started[at]

    def oldest_s(self, now: float) -> float:
        """Age of the oldest request in flight; 0 with none."""
        return max(now - self.started[0], 0.0) if self.started else 0.0

    def bucket(self, second: int) -> _Bucket:
        slot = self.ring[second % RING_SECONDS]
        if slot.second != second:
            if slot.second is not None:
                self.folded.add(slot)
            slot.reset(second)
        return slot

    def window(self, now_second: int, seconds: int | None) -> Iterator[_Bucket]:
        """The buckets of the last ``seconds`` (the current one included); None: since start."""
        if seconds is None:
            yield self.folded
            yield from (b for b in self.ring if b.second is not None)
            return
        oldest = now_second - seconds + 1
        yield from (
            b for b in self.ring if b.second is not None and oldest <= b.second <= now_second
        )


@dataclass(frozen=True)
class WindowStats:
    """What one instance (or a backend's instances together) did in a window."""

    requests: int  # answered by the upstream (any status)
    status: dict[str, int]  # "1xx".."5xx"
    errors: dict[str, int]  # upstream failures by kind (the proxy answered 502/504 or retried)
    unanswered: int  # attempts that never reached the upstream (not in ``requests``)
    in_flight: int
    oldest_in_flight_s: float  # age of the oldest request in flight now; 0 with none
    bytes_in: int  # request bytes received from clients
    bytes_out: int  # response bytes sent to clients
    covered_s: float  # how much time the window actually spans (shorter just after start)
    latency_s: dict[str, float | None]  # p50, p90, p95, p99, p999, max, mean
    latency_count: int
    latency_sum_s: float

    @property
    def failures(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        attempts = self.requests + self.unanswered
        return attempts / self.covered_s if self.covered_s > 0 else 0.0

    @property
    def error_rate(self) -> float | None:
        """Share of attempts that failed: a 5xx answer or no answer at all; None without any.

        An attempt that reached the upstream and failed is counted once, by its 502/504 in
        ``requests``; one that never reached it is in ``unanswered``.
        """
        attempts = self.requests + self.unanswered
        if attempts == 0:
            return None
        return (self.status["5xx"] + self.unanswered) / attempts

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_per_s": round(self.requests_per_s, 3),
            "status": dict(self.status),
            "upstream_errors": dict(self.errors),
            "error_rate": self.error_rate,
            "in_flight": self.in_flight,
            "oldest_in_flight_s": round(self.oldest_in_flight_s, 3),
            "bytes": {"in": self.bytes_in, "out": self.bytes_out},
            "latency_s": dict(self.latency_s),
        }


def _summarise(
    buckets: Iterable[_Bucket], in_flight: int, oldest_s: float, covered_s: float
) -> WindowStats:
    total = _Bucket(None)
    for bucket in buckets:
        total.add(bucket)
    hist = total.latency
    count = hist.get_total_count() if hist is not None else 0
    latency: dict[str, float | None]
    if hist is None or count == 0:
        latency = dict.fromkeys([*(name for name, _ in PERCENTILES), "max", "mean"])
    else:
        values = hist.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        latency = {name: values[p] / 1e6 for name, p in PERCENTILES}
        latency["max"] = hist.get_max_value() / 1e6
        latency["mean"] = total.latency_sum / count
    return WindowStats(
        requests=sum(total.codes),
        status=dict(zip(STATUS_CLASSES, total.codes, strict=True)),
        errors=dict(sorted(total.errors.items())),
        unanswered=total.unanswered,
        in_flight=in_flight,
        oldest_in_flight_s=oldest_s,
        bytes_in=total.bytes_in,
        bytes_out=total.bytes_out,
        covered_s=covered_s,
        latency_s=latency,
        latency_count=count,
        latency_sum_s=total.latency_sum,
    )


class ProxyStats:
    """Counters and latency histograms per instance; the core's ``Observer``.

    ``instances`` are known up front so that every series exists (at zero) from the start;
    an instance first seen in a call is added then. ``routing`` and ``held`` give the routing
    state and the number of held writes for the gauges; ``on_mirror`` receives every mirrored
    pair (the shadow comparison). Every observer method is cheap and never raises.
    """

    def __init__(
        self,
        instances: Iterable[Instance] = (),
        *,
        clock: Clock = time.monotonic,
        routing: Callable[[], RoutingState] | None = None,
        held: Callable[[], int] | None = None,
        on_mirror: MirrorCallback | None = None,
    ) -> None:
        self._clock = clock
        self._started = clock()
        self._routing = routing
        self._held = held
        self._on_mirror = on_mirror
        self._series: dict[str, _Series] = {}
        for instance in instances:
            self._add(instance)
        self.client_errors: dict[int, int] = {}  # status → count, answered by the proxy itself
        self.mirrored_total = 0
        self.mirror_errors = 0
        self._warned = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # --- the Observer protocol (hot path) ------------------------------------------------------

    def request_started(self, instance: Instance) -> None:
        try:
            self._get(instance).begin(self._clock())
        except Exception:  # an observer must never break a request
            self._complain()

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        try:
            series = self._get(instance)
            now = self._clock()
            series.end(now, seconds)
            bucket = series.bucket(int(now))
            bucket.codes[_status_index(status)] += 1
            notable = _NOTABLE_INDEX.get(status)
            if notable is not None:
                bucket.notable[notable] += 1
            bucket.bytes_in += bytes_in
            bucket.bytes_out += bytes_out
            bucket.latency_sum += seconds
            # Beyond 60 s the value is kept as 60 s (the histogram's top) rather than dropped.
            bucket.record(min(max(int(seconds * 1_000_000), 0), HIGHEST_US))
        except Exception:
            self._complain()

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None:
        # The core's contract: an attempt that got a connection always ends with
        # request_finished (502/504 included), so only an unreached attempt counts here.
        try:
            series = self._get(instance)
            bucket = series.bucket(int(self._clock()))
            if not reached_upstream:
                bucket.unanswered += 1
            errors = bucket.errors
            kind = _kind(error)
            if kind not in errors and len(errors) >= MAX_ERROR_KINDS:
                kind = "other"
            errors[kind] = errors.get(kind, 0) + 1
        except Exception:
            self._complain()

    def client_error(self, status: int, reason: str) -> None:
        self.client_errors[status] = self.client_errors.get(status, 0) + 1

    def mirrored(
        self, head: RequestHead, primary: Captured, shadow: Captured | None, error: str | None
    ) -> None:
        self.mirrored_total += 1
        if error is not None:
            self.mirror_errors += 1
        if self._on_mirror is not None:
            try:
                self._on_mirror(head, primary, shadow, error)
            except Exception:
                self._complain()

    # --- queries -----------------------------------------------------------------------------

    def instances(self) -> list[Instance]:
        return [s.instance for s in self._series.values()]

    def window(
        self, window_s: int | None, *, backend: str, instance: str | None = None
    ) -> WindowStats:
        """One backend's (or one of its instances') numbers over the last ``window_s`` seconds.

        ``window_s`` is 1..60, or None for everything since start. The current (partial)
        second is included, and the rate is divided by the time actually covered.
        """
        if window_s is not None and not 1 <= window_s <= RING_SECONDS:
            raise ValueError(f"window must be 1 to {RING_SECONDS} seconds (got {window_s})")
        now = self._clock()
        second = int(now)
        elapsed = max(now - self._started, 0.0)
        if window_s is None:
            covered = elapsed
        else:
            covered = min(window_s - 1 + (now - math.floor(now)), elapsed)
        chosen = [
            s
            for s in self._series.values()
            if s.instance.backend == backend and (instance is None or s.instance.name == instance)
        ]
        buckets = (b for s in chosen for b in s.window(second, window_s))
        oldest = max((s.oldest_s(now) for s in chosen), default=0.0)
        return _summarise(buckets, sum(s.in_flight for s in chosen), oldest, covered)

    def snapshot(self, window_s: int | None = 10) -> dict[str, Any]:
        """Every backend and instance over one window, as JSON-able data."""
        backends: dict[str, Any] = {}
        for name in self._backends():
            entry = self.window(window_s, backend=name).to_json()
            entry["instances"] = {
                s.instance.name: self.window(
                    window_s, backend=name, instance=s.instance.name
                ).to_json()
                for s in self._series.values()
                if s.instance.backend == name
            }
            backends[name] = entry
        return {
            "window_s": window_s,
            "uptime_s": round(max(self._clock() - self._started, 0.0), 3),
            "backends": backends,
            "client_errors": {str(k): v for k, v in sorted(self.client_errors.items())},
            "mirrored": {"total": self.mirrored_total, "errors": self.mirror_errors},
        }

    def render_prometheus(self) -> bytes:
        """The Prometheus text exposition of this proxy's statistics (only its own registry)."""
        return generate_latest(self.registry)

    # --- internals ---------------------------------------------------------------------------

    def _get(self, instance: Instance) -> _Series:
        series = self._series.get(instance.key)
        return series if series is not None else self._add(instance)

    def _add(self, instance: Instance) -> _Series:
        series = self._series[instance.key] = _Series(instance)
        return series

    def _backends(self) -> list[str]:
        names = dict.fromkeys(s.instance.backend for s in self._series.values())
        if self._routing is not None:
            names.update(dict.fromkeys(self._routing().weights))
        return list(names)

    def _complain(self) -> None:
        if not self._warned:  # once: a broken observer must not flood the log on every request
            self._warned = True
            log.exception("proxy statistics could not record a request; continuing without it")

    def _collect(self) -> Iterator[Metric]:
        yield from _export_counters(self)
        yield from _export_latency(self)
        yield from _export_routing(self)


def _kind(error: str) -> str:
    kind = _KIND_CHARS.sub("_", error.strip().lower()).strip("_")[:40]
    return kind or "unknown"


# --- Prometheus ------------------------------------------------------------------------------


class _Collector(Collector):
    """Builds the metric families from a ``ProxyStats`` at each scrape."""

    def __init__(self, stats: ProxyStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        return self._stats._collect()


def _export_counters(stats: ProxyStats) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "changeover_proxy_requests",
        "Requests answered by an upstream instance, by status class.",
        labels=["backend", "instance", "code_class"],
    )
    responses = CounterMetricFamily(
        "changeover_proxy_responses",
        f"Answers with a notable status ({' '.join(map(str, NOTABLE_CODES))}), by code; "
        "also counted in changeover_proxy_requests.",
        labels=["backend", "instance", "code"],
    )
    unanswered = CounterMetricFamily(
        "changeover_proxy_unanswered",
        "Attempts that never reached the upstream instance (connecting failed or timed out); "
        "not in changeover_proxy_requests.",
        labels=["backend", "instance"],
    )
    # For people: an attempt that reached the instance and failed is here and also in
    # changeover_proxy_requests as the 502/504 the proxy answered, so it is not a rate's input.
    errors = CounterMetricFamily(
        "changeover_proxy_upstream_errors",
        "Failed attempts by kind: unreached ones, and reached ones also counted as their "
        "502/504 in changeover_proxy_requests.",
        labels=["backend", "instance", "kind"],
    )
    moved = CounterMetricFamily(
        "changeover_proxy_bytes",
        "Body bytes: direction 'in' from clients (requests), 'out' to clients (responses).",
        labels=["backend", "instance", "direction"],
    )
    in_flight = GaugeMetricFamily(
        "changeover_proxy_in_flight",
        "Requests sent to the instance and not yet answered.",
        labels=["backend", "instance"],
    )
    oldest = GaugeMetricFamily(
        "changeover_proxy_oldest_in_flight_seconds",
        "Age of the oldest request sent to the instance and not yet answered (0 with none).",
        labels=["backend", "instance"],
    )
    duration = HistogramMetricFamily(
        "changeover_proxy_request_duration_seconds",
        "Time from choosing the instance to the end of the response, since start "
        "(bucket counts taken from HDR histograms: 1 us to 60 s, 3 significant digits).",
        labels=["backend", "instance"],
    )
    now = stats._clock()
    for series in stats._series.values():
        labels = [series.instance.backend, series.instance.name]
        total = _Bucket(None)
        for bucket in series.window(0, None):
            total.add(bucket)
        for code_class, count in zip(STATUS_CLASSES, total.codes, strict=True):
            requests.add_metric([*labels, code_class], count)
        for code, count in zip(NOTABLE_CODES, total.notable, strict=True):
            responses.add_metric([*labels, str(code)], count)
        unanswered.add_metric(labels, total.unanswered)
        for kind, count in sorted(total.errors.items()):
            errors.add_metric([*labels, kind], count)
        moved.add_metric([*labels, "in"], total.bytes_in)
        moved.add_metric([*labels, "out"], total.bytes_out)
        in_flight.add_metric(labels, series.in_flight)
        oldest.add_metric(labels, round(series.oldest_s(now), 3))
        duration.add_metric(labels, _cumulative_buckets(total.latency), total.latency_sum)
    client = CounterMetricFamily(
        "changeover_proxy_client_errors",
        "Requests the proxy answered itself with an error (bad framing, limits), by status.",
        labels=["code"],
    )
    for status, count in sorted(stats.client_errors.items()):
        client.add_metric([str(status)], count)
    mirrored = CounterMetricFamily(
        "changeover_proxy_mirrored",
        "Requests also sent to the other backend for comparison, by outcome.",
        labels=["result"],
    )
    mirrored.add_metric(["ok"], stats.mirrored_total - stats.mirror_errors)
    mirrored.add_metric(["error"], stats.mirror_errors)
    yield from (
        requests,
        responses,
        unanswered,
        errors,
        moved,
        in_flight,
        oldest,
        duration,
        client,
        mirrored,
    )


def _cumulative_buckets(hist: HdrHistogram | None) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if hist is None:
        return [*((repr(b), 0.0) for b in DURATION_BUCKETS), ("+Inf", 0.0)]
    # One pass over the raw counts (the library's value iterator costs ~0.3 s per scrape):
    # a bound's count is everything up to and including the HDR slot that holds the bound.
    counts = list(hist.counts)
    running = 0
    start = 0
    for bound in DURATION_BUCKETS:
        end = min(hist._counts_index_for(int(bound * 1_000_000)), len(counts) - 1) + 1
        running += sum(counts[start:end])
        start = end
        out.append((repr(bound), running))
    out.append(("+Inf", hist.get_total_count()))
    return out


def _export_latency(stats: ProxyStats) -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "changeover_proxy_latency_seconds",
        "Latency quantiles of each backend over a sliding window (NaN without requests).",
        labels=["backend", "quantile", "window"],
    )
    rate = GaugeMetricFamily(
        "changeover_proxy_requests_per_second",
        "Attempts per second of each backend over a sliding window.",
        labels=["backend", "window"],
    )
    error_rate = GaugeMetricFamily(
        "changeover_proxy_error_ratio",
        "Share of attempts answered 5xx or not answered, over a sliding window (NaN without any).",
        labels=["backend", "window"],
    )
    quantiles = {name: str(p / 100) for name, p in PERCENTILES} | {"max": "1"}
    for backend in stats._backends():
        for window in EXPORTED_WINDOWS:
            shown = f"{window}s"
            numbers = stats.window(window, backend=backend)
            for name, quantile in quantiles.items():
                value = numbers.latency_s[name]
                gauge.add_metric([backend, quantile, shown], math.nan if value is None else value)
            rate.add_metric([backend, shown], numbers.requests_per_s)
            ratio = numbers.error_rate
            error_rate.add_metric([backend, shown], math.nan if ratio is None else ratio)
    yield from (gauge, rate, error_rate)


def _export_routing(stats: ProxyStats) -> Iterator[Metric]:
    if stats._routing is None:
        return
    state = stats._routing()
    weights = GaugeMetricFamily(
        "changeover_proxy_weight_percent",
        "Share of reads sent to each backend.",
        labels=["backend"],
    )
    owner = GaugeMetricFamily(
        "changeover_proxy_write_owner",
        "1 for the backend that receives writes, 0 for the others.",
        labels=["backend"],
    )
    for backend, weight in state.weights.items():
        weights.add_metric([backend], weight)
        owner.add_metric([backend], 1.0 if backend == state.write_owner else 0.0)
    drained = GaugeMetricFamily(
        "changeover_proxy_instance_drained",
        "1 when the instance is drained (gets no new requests).",
        labels=["backend", "instance"],
    )
    for series in stats._series.values():
        is_drained = series.instance.key in state.drained
        drained.add_metric([series.instance.backend, series.instance.name], float(is_drained))
    yield from (weights, owner, drained)
    yield GaugeMetricFamily(
        "changeover_proxy_holding_writes", "1 while writes are held.", value=float(state.holding)
    )
    yield GaugeMetricFamily(
        "changeover_proxy_held_writes",
        "Writes waiting in the hold queue.",
        value=float(stats._held() if stats._held is not None else 0),
    )
    yield GaugeMetricFamily(
        "changeover_proxy_mirror_share",
        "Share of GET requests also sent to the other backend.",
        value=state.mirror_share,
    )
    yield GaugeMetricFamily(
        "changeover_proxy_routing_version",
        "Version of the routing state (incremented on every change).",
        value=float(state.version),
    )


__all__ = [
    "DURATION_BUCKETS",
    "HIGHEST_US",
    "LOWEST_US",
    "NOTABLE_CODES",
    "RING_SECONDS",
    "STATUS_CLASSES",
    "Clock",
    "MirrorCallback",
    "ProxyStats",
    "WindowStats",
]
