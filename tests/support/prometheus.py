"""Run a real Prometheus (Debian package ``prometheus``) and a small exporter for tests.

``start_exporter()`` serves a ``prometheus_client`` registry with a few demo metrics on a free
loopback port; ``run_prometheus(workdir, exporter_url)`` writes a ``prometheus.yml`` (1 s scrape
and evaluation), a rules file, starts ``/usr/bin/prometheus`` on a free port, waits until it is
ready and has scraped every job once, and stops it on exit; ``rules`` may be several files
(name → text). Both are context managers, so a test module wraps them in a module-scoped
fixture (one Prometheus per module, xdist-safe).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from support.binaries import require_binary
from support.process import free_port, log_tail, stop

#: alert rules loaded by default: one that holds (error ratio is low), one per demo gauge
DEFAULT_RULES = """\
groups:
  - name: demo
    rules:
      - alert: HighErrorRate
        expr: demo_error_ratio > 0.01
        for: 1m
        labels: {severity: page}
        annotations: {summary: "error ratio above 1%"}
      - alert: DemoDown
        expr: demo_up == 0
        for: 30s
      - record: demo:requests:rate1m
        expr: rate(demo_requests_total[1m])
"""


@dataclass
class Exporter:
    """A ``/metrics`` endpoint with demo metrics; set gauges to change what Prometheus sees."""

    url: str
    address: str  # host:port, as a scrape target
    registry: CollectorRegistry
    error_ratio: Gauge
    up: Gauge
    requests: Counter


@contextlib.contextmanager
def start_exporter() -> Iterator[Exporter]:
    """Serve ``demo_error_ratio 0.002``, ``demo_up 1`` and ``demo_requests_total``."""
    registry = CollectorRegistry()
    error_ratio = Gauge("demo_error_ratio", "Share of requests that failed.", registry=registry)
    up = Gauge("demo_up", "1 when the demo app is serving.", registry=registry)
    requests = Counter("demo_requests", "Requests served.", ["code"], registry=registry)
    error_ratio.set(0.002)
    up.set(1)
    requests.labels(code="200").inc(998)
    requests.labels(code="500").inc(2)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_port
        yield Exporter(
            url=f"http://127.0.0.1:{port}/metrics",
            address=f"127.0.0.1:{port}",
            registry=registry,
            error_ratio=error_ratio,
            up=up,
            requests=requests,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class PrometheusServer:
    """A running Prometheus: its base URL and the scrape targets it was configured with."""

    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    jobs: dict[str, str] = field(default_factory=dict)  # job name → target host:port

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-vector result of ``promql`` (empty on error, for polling)."""
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return []
        if body.get("status") != "success":
            return []
        result = body["data"]["result"]
        return result if isinstance(result, list) else []

    def wait_for(self, promql: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns at least one series; fail loudly after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{promql!r} returned nothing within {timeout:g}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.workdir / "prometheus.log", lines)


def _config(jobs: dict[str, str], rule_files: list[Path]) -> str:
    scrape = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in jobs.items()
    )
    return (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n"
        + "".join(f"  - {path}\n" for path in rule_files)
        + f"scrape_configs:\n{scrape}"
    )


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    jobs: dict[str, str],
    *,
    rules: str | Mapping[str, str] = DEFAULT_RULES,
    start_timeout: float = 30.0,
) -> Iterator[PrometheusServer]:
    """Start Prometheus scraping ``jobs`` (name → host:port) and yield it once every job was
    scraped at least once (``up{job=...}`` exists); stop it (SIGTERM, then SIGKILL) on exit.

    Skips (or fails under CHANGEOVER_REQUIRE_ALL=1) when the binary is not installed.
    """
    binary = require_binary("prometheus", "prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    files = {"rules.yml": rules} if isinstance(rules, str) else dict(rules)
    rule_files = []
    for name, text in files.items():
        rule_files.append(workdir / name)
        rule_files[-1].write_text(text)
    config = workdir / "prometheus.yml"
    config.write_text(_config(jobs, rule_files))

    server = None
    for _attempt in range(3):  # the free port may be taken between choosing and binding it
        server = _start(binary, workdir, config, start_timeout)
        if server is not None:
            break
    if server is None:
        raise RuntimeError(f"Prometheus did not start:\n{log_tail(workdir / 'prometheus.log')}")
    server.jobs = dict(jobs)
    try:
        for job in jobs:
            server.wait_for(f'up{{job="{job}"}}', timeout=start_timeout)
        yield server
    finally:
        stop(server.process)


def _start(binary: str, workdir: Path, config: Path, timeout: float) -> PrometheusServer | None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    with open(workdir / "prometheus.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a Ctrl-C of pytest stops it cleanly
            env={**os.environ, "GOMAXPROCS": "1"},
        )
    server = PrometheusServer(url, workdir, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # exited: most likely the port was taken; the log says why
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"Prometheus not ready within {timeout:g}s:\n{server.log_tail()}")
