"""Each gate in the runbook: its condition in words, and how a person looks at the same metric.

A gate is a metric condition that ``changeover run`` watches during a traffic phase (phase gates
must hold; rollback triggers fire). ``condition`` says it the way an operator reads it —
``error_rate of new above 5%, sustained 30s`` — and ``gate_recipe`` adds where to look by hand:
the router's counters, a ``psql`` or ``redis-cli`` line, a migration verify, the gate's own
checks, or ``changeover signal`` for the signals raised by people.
"""

from __future__ import annotations

from changeover.documents.probes import probe_recipe
from changeover.documents.recipe import Recipe, code, shown
from changeover.documents.shellwords import PlanWords, command, masked
from changeover.metrics.signals import SIGNALLED
from changeover.plan.model import Gate
from changeover.plan.systems import PostgresSystem

_STABLE = frozenset({"memory_stable", "latency_stable"})

# Where a person looks for a metric the controller reads from the router or the apps.
_TRAFFIC = frozenset(
    {"error_rate", "timeout_rate", "rate_limited", "downtime", "requests", "in_flight"}
)
_PG_QUERIES = {
    "db_connections": "SELECT count(*) AS connections, current_setting('max_connections') AS max "
    "FROM pg_stat_activity",
    "db_latency_p95": "SELECT calls, round(mean_exec_time) AS mean_ms, left(query, 80) AS query "
    "FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 10",
    "db_queries_per_request": "SELECT sum(calls) FROM pg_stat_statements",
    "stuck_requests": "SELECT pid, now() - query_start AS running, left(query, 80) AS query "
    "FROM pg_stat_activity WHERE state = 'active' ORDER BY running DESC LIMIT 10",
    "database_errors": "SELECT datname, xact_rollback, deadlocks, conflicts FROM pg_stat_database",
}


def condition(gate: Gate, *, trigger: bool = False) -> str:
    """The gate's condition: what must hold (a phase gate) or what fires (a rollback trigger)."""
    subject = gate.metric + (f" of {gate.of}" if gate.of else "")
    if gate.source and gate.source != gate.of:
        subject += f" (from {gate.source})"
    during = f" for {shown(gate.sustained)}" if gate.sustained is not None else ""
    bounds = []
    if gate.below is not None:
        bounds.append(f"below {shown(gate.below)}")
    if gate.above is not None:
        bounds.append(f"above {shown(gate.above)}")
    if gate.ratio is not None:
        baseline = f"{gate.max_ratio_to}'s"
        if trigger:
            bounds.append(f"more than {gate.ratio:g}× {baseline}")
        else:
            bounds.append(f"at most {gate.ratio:g}× {baseline}")
        if gate.slack is not None:
            slack = f"{baseline} + {shown(gate.slack)}"
            bounds[-1] += f" and more than {slack}" if trigger else f" (or within {slack})"
    if bounds:
        text = f"{subject} is {' and '.join(bounds)}{during}"
    elif gate.checks:
        probes = ", ".join(code(name) for name in dict.fromkeys(c.probe for c in gate.checks))
        if not trigger:
            text = f"{subject}: its checks ({probes}) pass at every look"
        elif during:
            text = f"{subject}: its checks ({probes}) fail at every look{during}"
        else:
            text = f"{subject}: a run of its checks ({probes}) fails"
    elif gate.metric in _STABLE:
        text = f"{subject} is {'not stable' if trigger else 'stable'}{during}"
    elif trigger:
        text = f"{subject}: observed" + (f" at every look{during}" if during else "")
    else:
        text = f"{subject}: none observed{during}"
    if gate.target is not None:
        text += f" (target {shown(gate.target)})"
    return masked(text)


def gate_recipe(gate: Gate, words: PlanWords, step_id: str, *, trigger: bool = False) -> Recipe:
    """The condition as ``changeover run`` judges it, and where a person looks instead."""
    lines: list[str] = []
    notes: list[str] = []
    metric = gate.metric
    if gate.checks:
        for call in gate.checks:
            lines += probe_recipe(call, words, step_id).commands
    elif metric in SIGNALLED:
        lines.append(f'changeover signal {metric} --reason "what was seen" --by NAME')
        notes.append(
            "A person raises this signal (or a SIEM / support tool through its webhook): "
            "the running controller sees it within a second."
        )
    elif metric in ("data_corruption", "data_loss", "sync_lag"):
        lines += ["changeover migrate status", "changeover migrate verify"]
        lines.append("# expect: exit status 0 — no missing, extra or different rows")
    elif metric.startswith("cache_"):
        url = words.server_url("redis", gate.source)
        lines.append(command("redis-cli", "-u", url, "INFO", "stats"))
        lines.append("# read keyspace_hits/misses, rejected_connections, errorstat lines")
    elif metric in _PG_QUERIES and (
        gate.source is None or isinstance(words.plan.systems.get(gate.source), PostgresSystem)
    ):
        url = words.server_url("postgres", gate.source)
        lines.append(command("psql", url, "-c", _PG_QUERIES[metric]))
    elif metric in _TRAFFIC or metric.startswith("latency") or metric == "auth_failures":
        lines.append("changeover route show")
        notes.append(
            "Per-server requests and answers by class (2xx/4xx/5xx) are in "
            "`changeover route show`; latency and the gates' verdicts on the changeover "
            "dashboard."
        )
    elif metric.startswith("memory") or metric == "cpu":
        notes.append(
            "Each instance's memory (RSS) and CPU on the dashboard, or `top` on its host: "
            "memory should level off, not climb."
        )
    else:
        notes.append(f"{metric}: on the changeover dashboard and the Grafana board.")
    return Recipe(condition(gate, trigger=trigger), tuple(lines), tuple(notes))
