"""The metric sources a plan's systems give the controller, in order of preference.

The built-in proxy (when it is the router) first — it sees every request of both apps — then
the memory and CPU of app instances on this machine (``process``, found by listening port), then
each PostgreSQL, Redis and Prometheus system under its own name (a gate's ``source:`` picks
one), then the migration's sync lag, then signals raised with ``changeover signal``. A system
whose secret cannot be resolved is left out with a warning; gates that need it stay undecided
and say "no source serves …". Gates with their own ``check:`` are read by the controller's
``ChecksSource`` instead. Outside a traffic phase (``changeover check`` on a gate step) there
is no open router: the plan's built-in proxy router system, if it has one, serves the proxy's
metrics. PostgreSQL's statements per request count the HTTP requests the sources before it read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.metrics.base import MetricSource, Observation
from changeover.metrics.process import ProcessMatch, ProcessSource
from changeover.metrics.registry import Metrics
from changeover.plan.systems import (
    AppSystem,
    PostgresSystem,
    PrometheusSystem,
    RedisSystem,
    RouterSystem,
    System,
)
from changeover.probes.base import ProbeContext
from changeover.traffic.router import Router

log = logging.getLogger(__name__)


def metrics_for(runbook: Runbook, router: Router | None = None) -> Metrics:
    """The plan's metric sources; ``router`` is the open router of a rollout (None outside)."""
    from changeover.metrics.postgres import PostgresSource
    from changeover.metrics.prometheus import PrometheusSource
    from changeover.metrics.proxy import ProxySource
    from changeover.metrics.redis import RedisSource
    from changeover.metrics.signals import SignalSource
    from changeover.traffic.builtin import BuiltinRouter

    plan = runbook.plan
    ctx = ProbeContext(plan.systems, base_dir=runbook.loaded.base_dir)
    sources: list[MetricSource] = []
    if isinstance(router, BuiltinRouter):
        sources.append(ProxySource(router.admin, router.token))
    elif router is None:
        proxy = _builtin_proxy(ctx, plan.systems)
        if proxy is not None:
            sources.append(proxy)

    async def requests(of: str | None) -> Observation:
        # ``metrics`` is bound below, before any read can happen
        return await metrics.read("requests", of)

    process = process_source(ctx, plan.systems)
    if process is not None:
        sources.append(process)
    for name, system in plan.systems.items():
        try:
            if isinstance(system, PostgresSystem):
                url = ctx.secret(system.url, what=f"systems.{name}.url")
                sources.append(PostgresSource(url, name=name, requests=requests))
            elif isinstance(system, RedisSystem):
                url = ctx.secret(system.url, what=f"systems.{name}.url")
                sources.append(RedisSource(url, name=name))
            elif isinstance(system, PrometheusSystem):
                url = ctx.secret(system.url, what=f"systems.{name}.url")
                headers = {
                    key: ctx.secret(value, what=f"systems.{name}.headers.{key}")
                    for key, value in system.headers.items()
                }
                sources.append(PrometheusSource(url, name=name, headers=headers))
        except ChangeoverError as exc:
            log.warning("metrics from systems.%s are not available: %s", name, exc)
    if plan.migrate is not None:
        try:
            from changeover.metrics.sync import SyncLagSource
            from changeover.rollout.actions import migration_endpoints

            source, url, _ = migration_endpoints(runbook)
            sources.append(SyncLagSource(source, url))
        except ChangeoverError as exc:
            log.warning("the migration's sync lag is not available: %s", exc)
    sources.append(SignalSource(runbook.journal))
    metrics = Metrics(sources)
    return metrics


def _builtin_proxy(ctx: ProbeContext, systems: Mapping[str, System]) -> MetricSource | None:
    """The proxy source of the plan's built-in proxy router, when it has exactly one."""
    from changeover.metrics.proxy import ProxySource

    routers = [
        (name, system)
        for name, system in systems.items()
        if isinstance(system, RouterSystem) and system.type == "builtin"
    ]
    if len(routers) != 1:
        return None
    name, system = routers[0]
    if system.admin is None:
        return None
    try:
        admin = ctx.secret(system.admin, what=f"systems.{name}.admin")
        token = ctx.secret(system.token, what=f"systems.{name}.token") if system.token else None
    except ChangeoverError as exc:
        log.warning("metrics from the proxy systems.%s are not available: %s", name, exc)
        return None
    return ProxySource(admin, token)


def process_source(ctx: ProbeContext, systems: Mapping[str, System]) -> ProcessSource | None:
    """Memory and CPU of every app's instances on this machine, found by listening port.

    An app with no instance here is a target with no match (reading it points to Prometheus).
    Left out when no app runs here and a Prometheus system can serve memory and cpu instead:
    the first source that serves a metric is the one read.
    """
    prometheus = next((n for n, s in systems.items() if isinstance(s, PrometheusSystem)), None)
    targets: dict[str, list[ProcessMatch]] = {}
    for name, system in systems.items():
        if not isinstance(system, AppSystem):
            continue
        try:
            targets[name] = _local_instances(ctx, name, system)
        except ChangeoverError as exc:
            log.warning("memory and cpu of systems.%s are not available: %s", name, exc)
    if not targets or (prometheus is not None and not any(targets.values())):
        return None
    taken = set(systems)
    source_name = next(n for n in ("process", "local-process", "local-processes") if n not in taken)
    return ProcessSource(targets, name=source_name, prometheus=prometheus)


def _local_instances(ctx: ProbeContext, name: str, system: AppSystem) -> list[ProcessMatch]:
    """A port match for each of the app's instances (its url without any) on loopback."""
    if system.instances:
        urls = [
            (f"instance {i.name}", ctx.secret(i.url, what=f"systems.{name}.instances.{i.name}.url"))
            for i in system.instances
        ]
    else:
        urls = [("url", ctx.secret(system.url, what=f"systems.{name}.url"))]
    local, elsewhere = [], []
    for label, url in urls:
        port = _loopback_port(url)
        if port is None:
            elsewhere.append(label)
        else:
            local.append(ProcessMatch(port=port))
    if local and elsewhere:
        log.warning(
            "memory and cpu of systems.%s from this machine leave out %s (not on loopback); "
            "read them from Prometheus (source: prometheus) for the whole system",
            name,
            ", ".join(elsewhere),
        )
    return local


def _loopback_port(url: str) -> int | None:
    """The TCP port of an http(s) URL whose host is this machine's loopback, else None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:  # a host name: it may resolve anywhere
            return None
    try:
        port = parts.port
    except ValueError:  # out of range or not a number: the plan's probes report that
        return None
    if port is not None:
        return port
    return {"http": 80, "https": 443}.get(parts.scheme.lower())
