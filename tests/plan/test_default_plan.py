"""The packaged default plan: it validates against the real probe registry, its ids are stable,
its references hold, ``write_default_plan`` never overwrites by accident, and its database and
cache checks pass against a correctly prepared PostgreSQL (+ replica) and Redis.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from changeover.actions import ACTIONS
from changeover.engine.check import StepOutcome, run_checks, select_steps
from changeover.errors import UsageError
from changeover.plan.default import (
    PLAN_FILENAME,
    TOTAL,
    coverage_table,
    default_plan,
    default_plan_text,
    write_default_plan,
)
from changeover.plan.load import LoadedPlan, load_plan
from changeover.plan.model import Plan
from changeover.plan.systems import AppSystem, RouterSystem
from changeover.probes.base import ProbeContext, Status, load_all
from changeover.secrets import has_reference
from changeover.services import PostgresServer
from changeover.units import parse_duration

# Renaming a step id breaks sign-offs and journals that refer to it: this list makes it a
# deliberate act. In plan order: stages, then rollback triggers, then success criteria.
STEP_IDS = [
    # pre-deployment
    "pg-provisioned",
    "pg-backups-configured",
    "pg-replication-setup",
    "redis-deployed",
    "network-verified",
    "tls-installed",
    "dns-updated",
    "load-balancer-configured",
    "reverse-proxy-configured",
    "firewall-updated",
    "branches-merged",
    "rc-tagged",
    "go-build-tested",
    "docker-images-pushed",
    "ci-passing",
    "security-scan",
    "code-review-approved",
    "docs-updated",
    "pg-schema-created",
    "pg-indexes-created",
    "pg-pool-configured",
    "pg-replication-configured",
    "pg-backup-jobs",
    "pg-monitoring-setup",
    "pg-slow-query-log",
    "prometheus-running",
    "grafana-dashboards",
    "alert-rules",
    "pagerduty-on-call",
    "logging-configured",
    "log-aggregation",
    "metrics-collection",
    "health-endpoints-tested",
    "integration-tests-staging",
    "load-test",
    "failover-test",
    "rollback-test",
    "auth-verified",
    "cors-validated",
    "api-validation",
    "migration-dry-run",
    "runbook-reviewed",
    "rollback-documented",
    "emergency-contacts",
    "escalation-procedures",
    "dashboard-urls-documented",
    "credential-plan",
    "communication-plan",
    # t-minus-24h
    "systems-healthy",
    "backups-recent",
    "network-confirmed",
    "lb-health-checks",
    "staging-mirrors-production",
    "team-available",
    "channels-open",
    "war-room",
    "db-connectivity-test",
    "app-startup-test",
    "api-endpoint-test",
    "cache-connectivity-test",
    "logging-test",
    "metrics-collection-test",
    "health-endpoints-verified",
    "team-notified",
    "stakeholders-notified",
    "maintenance-announced",
    "support-briefed",
    "escalation-confirmed",
    # t-minus-2h
    "war-room-established",
    "participants-ready",
    "channels-verified",
    "dashboards-open",
    "logs-metrics-streaming",
    "runbook-walkthrough",
    "backup-systems-verified",
    "network-double-checked",
    # canary
    "canary-systems-operational",
    "migrate-copy",
    "canary-db-replicated",
    "canary-cache-warmed",
    "canary-monitoring-watching",
    "canary-deploy",
    "canary-startup-logs",
    "canary-db-connectivity",
    "canary-cache-connectivity",
    "canary-route-10",
    "canary-start-monitoring",
    "canary-error-rate",
    "canary-latency",
    "canary-db-errors",
    "canary-memory-leaks",
    "canary-cache-hit-rate",
    "canary-auth-failures",
    "canary-user-complaints",
    # staged
    "staged-canary-approved",
    "staged-team-confident",
    "staged-monitoring-focused",
    "staged-deploy",
    "staged-startup-connectivity",
    "staged-route-50",
    "staged-bake",
    "staged-error-rate",
    "staged-latency-stable",
    "staged-db-performance",
    "staged-memory",
    "staged-cache",
    "staged-session-continuity",
    # full
    "full-staged-stable",
    "full-no-critical-issues",
    "full-team-ready",
    "full-deploy",
    "full-route-100",
    "migrate-handoff",
    "full-instances-healthy",
    "full-legacy-accessible",
    "full-legacy-readonly",
    "full-error-rate",
    "full-latency-p95",
    "full-cpu",
    "full-memory-stable",
    "full-db-connections",
    "full-memory-leaks",
    "full-stuck-requests",
    "full-background-jobs",
    "full-cache-hit-rate",
    "full-replication-lag",
    # post-cutover-24h
    "on-call-available",
    "dba-available",
    "backend-lead-available",
    "qa-monitoring",
    "watch-every-30m",
    "watch-every-1h",
    "watch-every-4h",
    "daily-review",
    "pagerduty-alerting",
    "slack-notifications",
    "email-alerts",
    "escalation-rules",
    "watch-n-plus-one",
    "watch-pool-exhaustion",
    "watch-goroutine-leaks",
    "watch-cache-invalidation",
    "watch-auth-tokens",
    "watch-rate-limiting",
    "watch-timeouts",
    # post-cutover-72h
    "uptime-99",
    "stable-error-rate",
    "latency-sla",
    "stable-db-performance",
    "no-customer-complaints",
    "no-data-corruption",
    "all-features-working",
    "performance-improved",
    "review-slow-queries",
    "identify-bottlenecks",
    "optimize-indexes",
    "tune-cache-ttls",
    "adjust-pool-size",
    "review-log-errors",
    "archive-cutover-logs",
    "document-issues",
    "update-runbooks",
    "revoke-legacy-writes",
    "schedule-decommission",
    "schedule-sqlite-archive",
    # rollback
    "rollback-error-rate",
    "rollback-db-connection-failures",
    "rollback-data-corruption",
    "rollback-major-features",
    "rollback-performance-degradation",
    "rollback-security-breach",
    "rollback-data-loss",
    "rollback-latency",
    "rollback-memory-leak",
    "rollback-cache-issues",
    "rollback-critical-bugs",
    # success criteria
    "success-data-migration-verified",
    "success-zero-downtime",
    "success-availability",
    "success-error-rate",
    "success-latency-p95",
    "success-db-performance",
    "success-cache",
    "success-endpoints",
    "success-no-data-loss",
    "success-team-confident",
    "success-performance-improvement",
    "success-documentation",
    "success-monitoring-active",
]

STAGES = [
    # id, title, part, window (opens, due)
    ("pre-deployment", "Pre-Deployment (72 hours before cutover)", None, ("-72h", "-24h")),
    ("t-minus-24h", "24 Hours Before Cutover", None, ("-24h", "-2h")),
    ("t-minus-2h", "2 Hours Before (Pre-cutover preparation)", "Day of Cutover", ("-2h", "0h")),
    ("canary", "Cutover Phase 1: Canary (10% traffic)", "Day of Cutover", None),
    ("staged", "Cutover Phase 2: Staged Rollout (50% traffic)", "Day of Cutover", None),
    ("full", "Cutover Phase 3: Full Deployment (100% traffic)", "Day of Cutover", None),
    ("post-cutover-24h", "Post-Cutover (First 24 Hours)", "Day of Cutover", ("0h", "24h")),
    ("post-cutover-72h", "Post-Cutover (48-72 hours)", None, ("48h", "72h")),
]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return default_plan()


# --- validation ------------------------------------------------------------------------------


def test_packaged_plan_validates_with_every_probe_module(plan: Plan) -> None:
    registry = load_all()
    for module in ("postgres", "redis", "http", "tls", "dns", "tcp", "command", "prometheus"):
        assert any(name.split(".")[0] == module for name in registry), module
    calls = [call for step in plan.all_steps() for call in step.checks]
    assert calls
    for call in calls:
        assert call.probe in registry
        assert isinstance(call.typed, registry[call.probe].Params)


def test_written_plan_loads_with_file_positions(tmp_path: Path) -> None:
    path = write_default_plan(tmp_path)
    assert path == tmp_path / PLAN_FILENAME
    assert path.read_text(encoding="utf-8") == default_plan_text()
    loaded = load_plan(path)
    assert [s.id for s in loaded.plan.all_steps()] == STEP_IDS


def test_step_ids_are_unique_and_match_the_snapshot(plan: Plan) -> None:
    ids = [step.id for step in plan.all_steps()]
    assert len(ids) == len(set(ids))
    assert ids == STEP_IDS


def test_stages_have_the_seeds_structure_and_windows(plan: Plan) -> None:
    shape = []
    for stage in plan.stages:
        window = None
        if stage.window is not None:
            assert stage.window.due is not None
            window = (stage.window.opens, stage.window.due)
        shape.append((stage.id, stage.title, stage.part, window))
    expected = [
        (i, t, p, None if w is None else (parse_duration(w[0]), parse_duration(w[1])))
        for i, t, p, w in STAGES
    ]
    assert shape == expected


def test_phases_deploy_one_instance_each_and_bake(plan: Plan) -> None:
    phases = {s.id: s.phase for s in plan.stages if s.phase is not None}
    assert list(phases) == ["canary", "staged", "full"]
    summary = {
        stage_id: (p.weight, p.deploy, p.bake and (p.bake.min, p.bake.max))
        for stage_id, p in phases.items()
    }
    assert summary == {
        "canary": (10, ["go-1"], (parse_duration("30m"), parse_duration("1h"))),
        "staged": (50, ["go-2"], (parse_duration("1h"), parse_duration("2h"))),
        "full": (100, ["go-3"], (parse_duration("24h"), parse_duration("24h"))),
    }
    for stage_id in ("canary", "staged"):
        decision = phases[stage_id].decision
        assert decision is not None
        assert (decision.mode, decision.role) == ("manual", "deployment-lead")


def test_every_manual_role_and_decision_role_is_a_contact(plan: Plan) -> None:
    roles = {c.role for c in plan.contacts}
    manual_roles = {s.manual.role for s in plan.all_steps() if s.manual is not None}
    assert manual_roles <= roles
    assert {"deployment-lead", "dba", "backend-lead", "qa-lead", "on-call"} <= manual_roles
    for stage in plan.stages:
        if stage.phase and stage.phase.decision and stage.phase.decision.role:
            assert stage.phase.decision.role in roles


def test_every_manual_step_says_how(plan: Plan) -> None:
    missing = [s.id for s in plan.all_steps() if s.manual is not None and not s.manual.how]
    assert missing == []


def test_every_action_is_declared(plan: Plan) -> None:
    used = {s.action.action for s in plan.all_steps() if s.action is not None}
    assert used <= set(ACTIONS)
    # each traffic phase routes its weight and deploys its instance
    routes = [s.action.params for s in plan.all_steps() if s.action and s.action.action == "route"]
    assert routes == [{"weight": 10}, {"weight": 50}, {"weight": 100}]


def test_gates_and_rollback_triggers_carry_the_seeds_thresholds(plan: Plan) -> None:
    gate = plan.step("rollback-error-rate").gates[0]
    assert (gate.metric, gate.above, gate.sustained) == ("error_rate", "5%", parse_duration("30s"))
    gate = plan.step("rollback-latency").gates[0]
    assert (gate.metric, gate.above, gate.sustained) == ("latency_p95", "1s", parse_duration("2m"))
    gate = plan.step("rollback-performance-degradation").gates[0]
    assert (gate.max_ratio_to, gate.ratio) == ("legacy", 1.5)
    assert plan.step("canary-error-rate").gates[0].below == "1%"
    assert plan.step("canary-cache-hit-rate").gates[0].above == "80%"
    assert plan.step("full-cpu").gates[0].below == "60%"
    assert all(s.gate is not None for s in [*plan.rollback.immediate, *plan.rollback.graceful])


# --- systems and secrets ---------------------------------------------------------------------


def test_urls_are_references_and_credentials_have_no_defaults(plan: Plan) -> None:
    systems = plan.systems
    # Database and cache URLs carry passwords: no default, the operator must export them.
    assert {
        n: getattr(systems[n], "url", None) for n in ("postgres", "postgres-replica", "redis")
    } == {
        "postgres": "${PG_URL}",
        "postgres-replica": "${PG_REPLICA_URL}",
        "redis": "${REDIS_URL}",
    }
    for name, system in systems.items():
        for field in ("url", "admin", "token"):
            value = getattr(system, field, None)
            if value is not None:
                assert isinstance(value, str) and has_reference(value), f"{name}.{field}"
    assert [str(n) for n in plan.notify] == ["${SLACK_URL}", "${PAGERDUTY_URL}", "${EMAIL_URL}"]


def test_new_app_has_three_loopback_instances_started_by_argv(plan: Plan) -> None:
    new = plan.systems["new"]
    assert isinstance(new, AppSystem)
    assert [(i.name, i.url) for i in new.instances] == [
        (f"go-{n}", f"${{GO_{n}_URL:-http://127.0.0.1:810{n}}}") for n in (1, 2, 3)
    ]
    for n, instance in enumerate(new.instances, start=1):
        assert instance.deploy is not None
        assert instance.deploy.command == ["systemctl", "start", f"api@{n}"]
    router = plan.systems["router"]
    assert isinstance(router, RouterSystem) and router.type == "builtin"


def test_command_checks_are_argv_lists(plan: Plan) -> None:
    commands = [c for s in plan.all_steps() for c in s.checks if c.probe == "command"]
    assert commands
    for call in commands:
        argv = call.params["argv"]
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert " " not in argv[0]


def test_coverage_table_counts_every_step_once(plan: Plan) -> None:
    rows = coverage_table(plan)
    assert [r.group for r in rows] == [
        *(s.id for s in plan.stages),
        "rollback",
        "success-criteria",
        TOTAL,
    ]
    body, total = rows[:-1], rows[-1]
    assert total.total == sum(r.total for r in body) == len(STEP_IDS)
    assert total.automated == total.total - total.manual
    canary = rows[3]
    assert canary.to_json() == {
        "group": "canary",
        "probe": 7,
        "action": 5,
        "gate": 6,
        "manual": 0,
        "total": 18,
    }


# --- writing ---------------------------------------------------------------------------------


def test_write_refuses_to_overwrite_an_existing_plan(tmp_path: Path) -> None:
    path = write_default_plan(tmp_path)
    path.write_text("# my edited plan\n", encoding="utf-8")
    with pytest.raises(UsageError, match="already exists"):
        write_default_plan(tmp_path)
    assert path.read_text(encoding="utf-8") == "# my edited plan\n"


def test_write_with_force_replaces_the_plan(tmp_path: Path) -> None:
    path = write_default_plan(tmp_path)
    path.write_text("# my edited plan\n", encoding="utf-8")
    assert write_default_plan(tmp_path, force=True) == path
    assert path.read_text(encoding="utf-8") == default_plan_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [PLAN_FILENAME]  # no temporary left


def test_write_creates_a_missing_directory(tmp_path: Path) -> None:
    path = write_default_plan(tmp_path / "cutover" / "night")
    assert path.read_text(encoding="utf-8") == default_plan_text()


def test_write_into_a_file_is_a_plain_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="not a directory"):
        write_default_plan(blocker)


def test_write_over_a_directory_named_like_the_plan_is_refused(tmp_path: Path) -> None:
    (tmp_path / PLAN_FILENAME).mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        write_default_plan(tmp_path, force=True)


# --- the database and cache checks against real servers --------------------------------------

DATABASE_STEPS = [
    "pg-provisioned",
    "pg-schema-created",
    "pg-indexes-created",
    "pg-pool-configured",
    "pg-replication-configured",
    "db-connectivity-test",
    "cache-connectivity-test",
]

_SCHEMA = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE sessions (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users);
CREATE INDEX orders_user_id ON orders (user_id);
"""


def _check(
    loaded: LoadedPlan, step_ids: list[str], environ: dict[str, str]
) -> dict[str, StepOutcome]:
    selection = select_steps(loaded, step_ids=step_ids)
    ctx = ProbeContext(loaded.plan.systems, base_dir=loaded.base_dir, environ=environ)
    outcomes = asyncio.run(run_checks(loaded, selection, None, context=ctx))
    return {o.step.id: o for o in outcomes}


@pytest.mark.integration
def test_database_checks_pass_on_a_prepared_postgres_and_redis(
    tmp_path: Path, pg_url: str, pg_replica: PostgresServer, redis_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(_SCHEMA)
    environ = {
        "PG_URL": pg_url,
        "PG_REPLICA_URL": pg_replica.url,
        "REDIS_URL": redis_url,
    }
    loaded = load_plan(write_default_plan(tmp_path))
    # Replication lag right after the schema was written can exceed 100 ms on a busy machine:
    # the replica catches up within a few tries.
    deadline = time.monotonic() + 20
    while True:
        outcomes = _check(loaded, DATABASE_STEPS, environ)
        failed = {i: o.reason for i, o in outcomes.items() if o.status != Status.PASS}
        if not failed or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert failed == {}
    assert list(outcomes) == DATABASE_STEPS


@pytest.mark.integration
def test_schema_check_names_the_missing_tables_on_an_empty_database(
    tmp_path: Path, pg_url: str
) -> None:
    loaded = load_plan(write_default_plan(tmp_path))
    outcome = _check(loaded, ["pg-schema-created"], {"PG_URL": pg_url})["pg-schema-created"]
    assert outcome.status == Status.FAIL
    for table in ("users", "sessions", "orders"):
        assert table in outcome.reason
