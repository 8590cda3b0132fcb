"""Prometheus metrics of the sample apps, in a registry of their own (not the process default).

Both apps count ``http_requests_total{method,route,code}`` and time
``http_request_duration_seconds{route}``, where ``route`` is the route's template
(``/api/v1/orders/{id}``, or ``unmatched``) so one series stands for one endpoint, whatever ids
the load sends; the process collector adds memory and CPU (the leak fault shows there). The new
app adds its cache and pool metrics to ``registry``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Finer than the client's defaults at the low end: a healthy sample app answers in a millisecond.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AppMetrics:
    """One app's registry with the request metrics; ``exposition()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "code"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from reading a request to its answer, by route template.",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # Unknown methods share one label: a scanner's verbs must not grow the series count.
        label = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(label, route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
