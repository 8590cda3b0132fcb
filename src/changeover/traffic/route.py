"""``changeover route``: the plan's router, its servers, and journaled weight changes.

The backends are the plan's ``app`` systems (``legacy``, ``new``); their instances are the
router's servers (an app with only a ``url`` is one server named after the system). A weight
change is journaled before (``action.intent``) and after (``action.outcome``, with the weights
read back from the router), so a restarted controller knows what the router was told.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.journal import ACTION_INTENT, ACTION_OUTCOME
from changeover.plan.model import Plan, suggest
from changeover.plan.systems import RouterSystem
from changeover.probes.base import ProbeContext
from changeover.traffic.router import Router, Server, Weights, open_router


def plan_servers(plan: Plan, ctx: ProbeContext) -> list[Server]:
    """Every app system's instances as router servers (backend = the system's name)."""
    servers: list[Server] = []
    for name, system in plan.systems.items():
        if system.kind != "app":
            continue
        members: list[tuple[str, Any]] = [(i.name, i.url) for i in system.instances]
        if not members and system.url is not None:
            members = [(name, system.url)]
        for server_name, url in members:
            address = urlsplit(ctx.secret(url, what=f"systems.{name}.url"))
            servers.append(
                Server(name, server_name, address.hostname or "127.0.0.1", address.port or 80)
            )
    return servers


def router_name(plan: Plan, wanted: str | None = None) -> str:
    routers = [name for name, system in plan.systems.items() if system.kind == "router"]
    if wanted is not None:
        if wanted not in routers:
            raise UsageError(f"no router system {wanted!r}{suggest(wanted, routers)}")
        return wanted
    if len(routers) != 1:
        listed = ", ".join(routers) or "none"
        raise UsageError(f"the plan must name one router system (found: {listed}); use --router")
    return routers[0]


def open_plan_router(runbook: Runbook, wanted: str | None = None) -> tuple[str, Router]:
    plan = runbook.plan
    ctx = ProbeContext(plan.systems, base_dir=runbook.loaded.base_dir)
    name = router_name(plan, wanted)
    system = plan.systems[name]
    assert isinstance(system, RouterSystem)  # router_name only returns routers
    return name, open_router(system, plan_servers(plan, ctx), ctx, name=name)


def parse_weights(pairs: Sequence[str], backends: Sequence[str]) -> dict[str, float]:
    """``["legacy=90", "new=10"]`` → ``{"legacy": 90.0, "new": 10.0}`` (must sum to 100)."""
    weights: dict[str, float] = {}
    for pair in pairs:
        match = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\s*=\s*(\d+(?:\.\d+)?)\s*%?\s*", pair)
        if match is None:
            raise UsageError(f"expected BACKEND=PERCENT like new=10, got {pair!r}")
        backend, share = match.group(1), float(match.group(2))
        if backend not in backends:
            raise UsageError(
                f"unknown backend {backend!r}{suggest(backend, backends)} "
                f"(backends: {', '.join(backends)})"
            )
        weights[backend] = share
    total = sum(weights.values())
    if abs(total - 100) > 0.01:
        raise UsageError(f"weights must add up to 100, these add up to {total:g}")
    return {b: weights.get(b, 0.0) for b in backends}


async def set_route(
    runbook: Runbook, router: Router, router_system: str, weights: Mapping[str, float]
) -> Weights:
    """Apply weights through the router, journaled before and after (with the read-back)."""
    intent = {"action": "route", "router": router_system, "weights": dict(weights)}
    runbook.journal.append(ACTION_INTENT, intent)
    try:
        observed = await router.set_weights(weights)
    except Exception as exc:
        runbook.journal.append(ACTION_OUTCOME, {**intent, "ok": False, "error": str(exc)})
        raise
    outcome: dict[str, Any] = {**intent, "ok": True, "observed": dict(observed.percent)}
    runbook.journal.append(ACTION_OUTCOME, outcome)
    return observed
