"""The metric sources a plan's systems give the controller, in order of preference.

The built-in proxy (when it is the router) first — it sees every request of both apps — then
each PostgreSQL, Redis and Prometheus system under its own name (a gate's ``source:`` picks
one), then the migration's sync lag, then signals raised with ``changeover signal``. A system
whose secret cannot be resolved is left out with a warning; gates that need it stay undecided
and say "no source serves …". Gates with their own ``check:`` are read by the controller's
``ChecksSource`` instead.
"""

from __future__ import annotations

import logging

from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.metrics.base import MetricSource
from changeover.metrics.registry import Metrics
from changeover.plan.systems import PostgresSystem, PrometheusSystem, RedisSystem
from changeover.probes.base import ProbeContext
from changeover.traffic.router import Router

log = logging.getLogger(__name__)


def metrics_for(runbook: Runbook, router: Router) -> Metrics:
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
    for name, system in plan.systems.items():
        try:
            if isinstance(system, PostgresSystem):
                url = ctx.secret(system.url, what=f"systems.{name}.url")
                sources.append(PostgresSource(url, name=name))
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
    return Metrics(sources)
