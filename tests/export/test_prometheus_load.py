"""The exported rules in a real Prometheus: every group loads and evaluates, and a trigger fires.

Two small exporters play the apps, scraped as jobs ``new`` and ``legacy`` every second: their
request counters grow with time (``new`` answering 30 % of requests with 500), so rates exist
from the second scrape on. Prometheus loads the default plan's rules and the demo plan's rules
(exported with a 5 s window; the demo's error-rate trigger is sustained 3 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from changeover.cli import main
from changeover.demo.plan import Ports, write_demo_plan
from support.prometheus import PrometheusServer, run_prometheus

pytestmark = pytest.mark.integration

REQUESTS_PER_S = 200.0


class Traffic(Collector):
    """An app's request metrics, as if it answered ``REQUESTS_PER_S`` since it started."""

    def __init__(self, error_share: float) -> None:
        self.error_share = error_share
        self.started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        answered = REQUESTS_PER_S * (time.monotonic() - self.started)
        requests = CounterMetricFamily("http_requests", "Requests.", labels=["code"])
        requests.add_metric(["200"], answered * (1 - self.error_share))
        requests.add_metric(["500"], answered * self.error_share)
        # every request within 5 ms: no latency alert has a reason to fire
        latency = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Latency.",
            buckets=[("0.005", answered), ("0.05", answered), ("+Inf", answered)],
            sum_value=answered * 0.002,
        )
        return [requests, latency]


def serve(traffic: Traffic) -> Iterator[str]:
    registry = CollectorRegistry()
    registry.register(traffic)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def export_rules(plan: Path, out: Path, *args: str) -> str:
    assert main(["export", "prometheus-rules", "--plan", str(plan), "-o", str(out), *args]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    plans = tmp_path_factory.mktemp("plans")
    assert main(["init", str(plans)]) == 0
    demo = plans / "demo"
    demo.mkdir()
    demo_plan = write_demo_plan(demo, Ports(18000, (18001, 18002, 18003), 18080, 19901))
    rules = {
        "default.yml": export_rules(plans / "changeover.yaml", plans / "default.yml"),
        "demo.yml": export_rules(demo_plan, plans / "demo.yml", "--window", "5s"),
    }
    new, legacy = serve(Traffic(error_share=0.3)), serve(Traffic(error_share=0.0))
    try:
        jobs = {"new": next(new), "legacy": next(legacy)}
        with run_prometheus(tmp_path_factory.mktemp("prom"), jobs, rules=rules) as server:
            yield server
    finally:
        new.close()
        legacy.close()


def groups(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
    assert body["status"] == "success"
    found: list[dict[str, Any]] = body["data"]["groups"]
    return found


def wait_until(check: Any, what: str, prometheus: PrometheusServer, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout:g}s\n{prometheus.log_tail()}")


def test_every_exported_group_loads_and_every_rule_evaluates(
    prometheus: PrometheusServer,
) -> None:
    expected = {
        "default.yml": {"changeover-canary", "changeover-staged", "changeover-full"},
        "demo.yml": {"changeover-canary", "changeover-rollback-triggers"},
    }

    def all_ok() -> list[dict[str, Any]] | None:
        loaded = groups(prometheus)
        rules = [rule for group in loaded for rule in group["rules"]]
        return loaded if rules and all(rule["health"] == "ok" for rule in rules) else None

    loaded = wait_until(all_ok, "every rule with health ok", prometheus)
    by_file: dict[str, set[str]] = {}
    for group in loaded:
        by_file.setdefault(Path(group["file"]).name, set()).add(group["name"])
    for file, names in expected.items():
        assert names <= by_file[file], by_file
    bad = [(g["name"], r["name"], r.get("lastError")) for g in loaded for r in g["rules"]]
    assert all(error in (None, "") for *_, error in bad), bad


def test_a_high_error_rate_fires_the_immediate_trigger_and_a_healthy_one_stays_quiet(
    prometheus: PrometheusServer,
) -> None:
    def demo_rule(name: str) -> dict[str, Any]:
        return next(
            rule
            for group in groups(prometheus)
            if Path(group["file"]).name == "demo.yml"
            for rule in group["rules"]
            if rule["name"] == name
        )

    started = time.monotonic()
    firing = wait_until(
        lambda: (rule := demo_rule("CutoverRollbackErrorRate"))["state"] == "firing" and rule,
        "the demo's error-rate trigger firing",
        prometheus,
    )
    assert time.monotonic() - started < 30
    (alert,) = firing["alerts"]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["page"] == "true"
    assert alert["labels"]["step"] == "rollback-error-rate"
    assert float(alert["value"]) == pytest.approx(0.3, abs=0.05)
    assert alert["annotations"]["action"].startswith("changeover rollback --immediate ")
    # 30 % errors break the phase gate too; the latency trigger has nothing to fire on
    assert demo_rule("CutoverCanaryErrorRate")["state"] == "firing"
    assert demo_rule("CutoverRollbackLatency")["state"] == "inactive"
