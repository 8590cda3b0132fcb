"""The demo's plan: the seed's day of cutover on this machine, with short demo bake times.

The same shape and thresholds as the default plan's phases — canary 10 % on one new instance,
staged 50 % on two, full 100 % on three with the write handoff; error rate < 1 %, latency
normal vs legacy, memory, cache hit rate, session continuity, p95 < 100 ms, the rollback
triggers — pointed at the embedded PostgreSQL and Redis, the sample apps and the built-in
proxy. Bake times are seconds instead of hours, and sustained times shortened to match, so the
whole night fits in a few minutes; every shortened value says so next to it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PROXY_TOKEN_ENV = "CHANGEOVER_DEMO_PROXY_TOKEN"
NEW_INSTANCES = ("new-1", "new-2", "new-3")


@dataclass(frozen=True)
class Ports:
    legacy: int
    new: tuple[int, int, int]
    proxy: int
    admin: int


@dataclass(frozen=True)
class Bakes:
    """Seconds of each phase's monitoring window (the seed: 30 min – 1 h, 1–2 h, 24 h)."""

    canary: tuple[int, int] = (30, 120)
    staged: tuple[int, int] = (15, 90)
    full: tuple[int, int] = (15, 90)


def _bake(window: tuple[int, int]) -> dict[str, str]:
    return {"min": f"{window[0]}s", "max": f"{window[1]}s"}


def demo_plan(workdir: Path, ports: Ports, bakes: Bakes = Bakes()) -> dict[str, Any]:
    """The plan as data, ready to be written as YAML next to the demo's journal."""
    secret_file = str(workdir / "session.secret")
    token_file = str(workdir / "admin.token")
    instances = []
    for name, port in zip(NEW_INSTANCES, ports.new, strict=True):
        argv = [
            sys.executable, "-m", "changeover.demo.apps.new",
            "--port", str(port), "--instance", name, "--schema", "public",
            "--secret-file", secret_file, "--admin-token-file", token_file,
            "--cache-ttl", "300",
        ]  # fmt: skip
        # A TTL longer than the demo's phases: the warmed hot set stays cached, so the cache
        # hit-rate gate sees the steady state (writes still invalidate what they change).
        instances.append(
            {
                "name": name,
                "url": f"http://127.0.0.1:{port}",
                "deploy": {
                    "process": argv,
                    "log": f"logs/{name}.log",
                    "ready_pattern": "listening on",
                },
            }
        )

    def gate(step_id: str, title: str, **gate: Any) -> dict[str, Any]:
        return {"id": step_id, "title": title, "gate": gate}

    def check(step_id: str, title: str, *calls: dict[str, Any]) -> dict[str, Any]:
        return {"id": step_id, "title": title, "check": list(calls)}

    def action(step_id: str, title: str, name: str, **params: Any) -> dict[str, Any]:
        return {"id": step_id, "title": title, "action": {name: params}}

    def healthy(instance: str) -> dict[str, Any]:
        return {"http": {"system": "new", "instance": instance, "path": "/healthz"}}

    return {
        "version": 1,
        "name": "changeover demo: legacy (Python/SQLite) → new (PostgreSQL + Redis)",
        "cutover_at": "2026-12-01T02:00:00Z",
        "contacts": [{"role": "deployment-lead", "title": "Deployment Lead", "name": "demo"}],
        "systems": {
            "postgres": {"kind": "postgres", "url": "${PG_URL}"},
            "redis": {"kind": "redis", "url": "${REDIS_URL}"},
            "legacy": {"kind": "app", "url": f"http://127.0.0.1:{ports.legacy}"},
            "new": {"kind": "app", "instances": instances},
            "public": {"kind": "http", "url": f"http://127.0.0.1:{ports.proxy}"},
            "proxy": {
                "kind": "router",
                "type": "builtin",
                "admin": f"http://127.0.0.1:{ports.admin}",
                "token": "${" + PROXY_TOKEN_ENV + "}",
            },
        },
        "migrate": {"source": "legacy.db", "target": "postgres"},
        "stages": [
            {
                "id": "pre-deployment",
                "title": "Pre-deployment checks",
                "sections": [
                    {
                        "title": "Systems ready",
                        "steps": [
                            check(
                                "systems-operational",
                                "All systems operational",
                                {"postgres.connect": {"system": "postgres", "min_version": 13}},
                                {"redis.ping": {"system": "redis"}},
                                {"http": {"system": "legacy", "path": "/healthz"}},
                                {"http": {"system": "public", "path": "/healthz"}},
                            ),
                            check(
                                "replica-streaming",
                                "Database replica streaming",
                                {
                                    "postgres.replication": {
                                        "system": "postgres",
                                        "min_replicas": 1,
                                        "max_lag": "1s",
                                    }
                                },
                            ),
                        ],
                    }
                ],
            },
            {
                "id": "canary",
                "title": "Cutover Phase 1: Canary (10% traffic)",
                "phase": {
                    "weight": 10,
                    "deploy": ["new-1"],
                    "bake": _bake(bakes.canary),  # the seed: 30 min – 1 h
                    "decision": {"title": "Proceed to 50% if all green", "mode": "auto"},
                },
                "sections": [
                    {
                        "title": "Data",
                        "steps": [
                            action(
                                "migrate-copy", "Bulk-copy SQLite into PostgreSQL", "migrate.copy"
                            ),
                            action(
                                "canary-db-replicated",
                                "Database replicated and healthy",
                                "migrate.sync",
                            ),
                        ],
                    },
                    {
                        "title": "Deployment",
                        "steps": [
                            action(
                                "canary-deploy",
                                "Deploy the new app to 1 of 3 instances",
                                "deploy",
                                instances=["new-1"],
                            ),
                            check(
                                "canary-connectivity",
                                "Verify database and cache connectivity",
                                healthy("new-1"),
                            ),
                            action(
                                "canary-cache-warmed",
                                "Cache warmed",
                                "cache.warm",
                                system="new",
                                instances=["new-1"],
                                paths=HOT_PATHS,
                            ),
                            action(
                                "canary-route-10",
                                "Load balancer: 10% to the new app",
                                "route",
                                weight=10,
                            ),
                        ],
                    },
                    {
                        "title": "Monitoring",
                        "steps": [
                            gate(
                                "canary-error-rate",
                                "Error rate < 1%",
                                metric="error_rate",
                                of="new",
                                below="1%",
                            ),
                            gate(
                                "canary-latency",
                                "Response latency normal",
                                metric="latency_p95",
                                of="new",
                                max_ratio_to="legacy",
                                ratio=1.2,
                                slack="5ms",
                            ),
                            gate(
                                "canary-memory-leaks",
                                "No memory leaks observed",
                                metric="memory_leak",
                                of="new",
                            ),
                            gate(
                                "canary-cache-hit-rate",
                                "Cache hit rate > 80%",
                                metric="cache_hit_rate",
                                source="redis",
                                above="80%",
                            ),
                            gate(
                                "canary-auth-failures",
                                "No authentication failures",
                                metric="auth_failures",
                                of="new",
                                max_ratio_to="legacy",
                                ratio=1.0,
                            ),
                        ],
                    },
                ],
            },
            {
                "id": "staged",
                "title": "Cutover Phase 2: Staged Rollout (50% traffic)",
                "phase": {
                    "weight": 50,
                    "deploy": ["new-2"],
                    "bake": _bake(bakes.staged),  # the seed: 1–2 h
                    "decision": {"title": "Proceed to full cutover if all green", "mode": "auto"},
                },
                "sections": [
                    {
                        "title": "Deployment",
                        "steps": [
                            action(
                                "staged-deploy",
                                "Deploy to the second instance",
                                "deploy",
                                instances=["new-2"],
                            ),
                            check(
                                "staged-connectivity",
                                "Verify startup and connectivity",
                                healthy("new-2"),
                            ),
                            action("staged-route-50", "Load balancer: 50/50", "route", weight=50),
                        ],
                    },
                    {
                        "title": "Monitoring",
                        "steps": [
                            gate(
                                "staged-error-rate",
                                "Error rate < 1%",
                                metric="error_rate",
                                of="new",
                                below="1%",
                            ),
                            gate(
                                "staged-latency-stable",
                                "Latency stable",
                                metric="latency_stable",
                                of="new",
                            ),
                            gate(
                                "staged-memory",
                                "No memory issues",
                                metric="memory_stable",
                                of="new",
                            ),
                            gate(
                                "staged-session-continuity",
                                "Session continuity verified",
                                metric="session_continuity",
                                of="new",
                                check={
                                    "http.session": {
                                        "login": {
                                            "system": "legacy",
                                            "path": "/api/v1/login",
                                            "json": {"email": "user1@example.com"},
                                        },
                                        "use": {
                                            "system": "new",
                                            "instance": "new-2",
                                            "path": "/api/v1/me",
                                        },
                                        "same_json_path": "user.id",
                                    }
                                },
                            ),
                        ],
                    },
                ],
            },
            {
                "id": "full",
                "title": "Cutover Phase 3: Full Deployment (100% traffic)",
                "phase": {
                    "weight": 100,
                    "deploy": ["new-3"],
                    "bake": _bake(bakes.full),  # the seed: the first 24 hours
                    "decision": {"title": "Cutover complete", "mode": "auto"},
                },
                "sections": [
                    {
                        "title": "Deployment",
                        "steps": [
                            action(
                                "full-deploy",
                                "Deploy to the third instance",
                                "deploy",
                                instances=["new-3"],
                            ),
                            action(
                                "full-route-100",
                                "Load balancer: 100% to the new app",
                                "route",
                                weight=100,
                            ),
                            action(
                                "migrate-handoff",
                                "Hand writes over to the new app",
                                "migrate.handoff",
                            ),
                            check(
                                "full-instances-healthy",
                                "Verify all new instances healthy",
                                *(healthy(name) for name in NEW_INSTANCES),
                            ),
                            check(
                                "full-legacy-accessible",
                                "Verify the legacy app accessibility (for rollback)",
                                {"http": {"system": "legacy", "path": "/healthz"}},
                            ),
                            action(
                                "full-legacy-readonly",
                                "Legacy app read-only",
                                "readonly",
                                system="legacy",
                            ),
                        ],
                    },
                    {
                        "title": "Intensive monitoring",
                        "steps": [
                            gate(
                                "full-error-rate",
                                "Error rate < 1% (target < 0.1%)",
                                metric="error_rate",
                                of="new",
                                below="1%",
                                target="0.1%",
                            ),
                            gate(
                                "full-latency-p95",
                                "Latency p95 < 100ms",
                                metric="latency_p95",
                                of="new",
                                below="100ms",
                            ),
                            gate(
                                "full-memory-stable",
                                "Memory stable",
                                metric="memory_stable",
                                of="new",
                            ),
                            gate(
                                "full-db-connections",
                                "Database connections normal",
                                metric="db_connections",
                                source="postgres",
                                below="80%",
                            ),
                            gate(
                                "full-stuck-requests",
                                "No stuck requests",
                                metric="stuck_requests",
                                source="postgres",
                            ),
                            gate(
                                "full-cache-hit-rate",
                                "Cache hit rates optimal",
                                metric="cache_hit_rate",
                                source="redis",
                                above="80%",
                                target="90%",
                            ),
                        ],
                    },
                ],
            },
            {
                "id": "post-cutover",
                "title": "Post-cutover checks",
                "sections": [
                    {
                        "title": "Stability",
                        "steps": [
                            check(
                                "all-features-working",
                                "All features working",
                                {"http": {"system": "public", "path": "/healthz"}},
                                {
                                    "http": {
                                        "system": "public",
                                        "path": "/api/v1/items?limit=1",
                                        "json_path": "items",
                                    }
                                },
                            ),
                        ],
                    }
                ],
            },
        ],
        "rollback": {
            "immediate": [
                # the seed: sustained 30 s; the demo's phases last seconds
                gate(
                    "rollback-error-rate",
                    "Error rate > 5% sustained",
                    metric="error_rate",
                    of="new",
                    above="5%",
                    sustained="3s",
                ),
                {
                    "id": "rollback-major-features",
                    "title": "Major features non-functional",
                    "gate": {
                        "metric": "features",
                        "of": "new",
                        # every look's checks failing for 5 s (the default plan: 1 min)
                        "sustained": "5s",
                        "check": [
                            {
                                "http": {
                                    "system": "new",
                                    "instance": "new-1",
                                    "path": "/api/v1/items?limit=1",
                                    "json_path": "items",
                                    "timeout": 2,
                                }
                            }
                        ],
                    },
                },
                gate(
                    "rollback-performance-degradation",
                    "Performance degradation > 50%",
                    metric="latency_p95",
                    of="new",
                    max_ratio_to="legacy",
                    ratio=1.5,
                    slack="10ms",
                    sustained="5s",
                ),
                gate(
                    "rollback-data-corruption",
                    "Data corruption detected",
                    metric="data_corruption",
                    of="new",
                ),
                gate(
                    "rollback-data-loss",
                    "Data loss confirmed",
                    metric="data_loss",
                    of="new",
                ),
                gate(
                    "rollback-security-breach",
                    "Security breach detected",
                    metric="security_breach",
                    of="new",
                ),
            ],
            "graceful": [
                gate(
                    "rollback-latency",
                    "Unacceptable latency (> 1 second)",
                    metric="latency_p95",
                    of="new",
                    above="1s",
                    sustained="5s",
                ),
                gate(
                    "rollback-memory-leak", "Memory leak detected", metric="memory_leak", of="new"
                ),
                gate(
                    "rollback-critical-bugs",
                    "Unexpected bugs in critical features",
                    metric="critical_features",
                    of="new",
                ),
            ],
        },
    }


#: What the load sends most and the cache keeps: a hot set of users and orders.
HOT_USERS = tuple(range(1, 41))
HOT_PATHS = [f"/api/v1/users/{u}" for u in HOT_USERS] + [f"/api/v1/orders/{u}" for u in HOT_USERS]


def write_demo_plan(workdir: Path, ports: Ports, bakes: Bakes = Bakes()) -> Path:
    path = workdir / "changeover.yaml"
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    with path.open("w", encoding="utf-8") as fp:
        fp.write("# Written by `changeover demo`: the seed's cutover on this machine.\n")
        yaml.dump(demo_plan(workdir, ports, bakes), fp)
    return path
