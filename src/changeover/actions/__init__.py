"""Actions: the changes changeover makes (deploy, route, migrate, notify, ...).

This issue declares the action names the plan may use, so that a plan is complete from day one;
the capability that implements each one is named, and ``check`` reports such steps as "later"
until it lands. Actions record intent before and outcome after in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionKind:
    name: str
    summary: str
    capability: str  # which part of changeover runs it


ACTIONS: dict[str, ActionKind] = {
    a.name: a
    for a in (
        ActionKind("deploy", "start a new-app instance and verify its startup", "rollout"),
        ActionKind("route", "set the router's weights between legacy and new", "traffic"),
        ActionKind("readonly", "put the legacy app in read-only mode", "migrate"),
        ActionKind("notify", "send a message to the plan's notification channels", "notify"),
        ActionKind("cache.warm", "GET the step's paths on each instance to warm it", "rollout"),
        ActionKind("migrate.dry-run", "full migration into a scratch schema, verified", "migrate"),
        ActionKind("migrate.copy", "bulk-copy SQLite into PostgreSQL", "migrate"),
        ActionKind("migrate.sync", "forward capture SQLite → PostgreSQL", "migrate"),
        ActionKind("migrate.verify", "prove source and target hold the same data", "migrate"),
        ActionKind("migrate.handoff", "move the write owner with zero loss", "migrate"),
        ActionKind("loadtest", "open-model load test against a target rate", "loadgen"),
        ActionKind(
            "drill.failover",
            "stop a new-app instance under load (ejected, errors within budget), then promote "
            "the PostgreSQL replica and see the app write again",
            "drills",
        ),
        ActionKind(
            "drill.rollback",
            "cut over under load, roll back, verify every row and acknowledged write",
            "drills",
        ),
        ActionKind("watch", "post-cutover checks on the seed's schedule", "watch"),
        ActionKind("advise", "slow queries, indexes, pool size, TTL advice", "watch"),
        ActionKind("report", "write the cutover report", "report"),
        ActionKind("runbook", "generate the runbook document from the plan", "report"),
        ActionKind("export.grafana", "export the Grafana dashboard JSON", "report"),
        ActionKind("export.prometheus-rules", "export Prometheus alert rules", "report"),
        ActionKind("archive.logs", "archive journal, reports and logs with a manifest", "cleanup"),
        ActionKind("archive.sqlite", "archive SQLite backups, verified by restoring", "cleanup"),
        ActionKind("revoke-write", "remove the legacy app's write access", "cleanup"),
        ActionKind("decommission", "schedule the legacy app's decommissioning (.ics)", "cleanup"),
    )
}
