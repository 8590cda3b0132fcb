"""Every gate of the default plan can be observed: some metric source serves its metric, or it
runs its own synthetic checks. A gate nothing can read would stay undecided all night."""

from __future__ import annotations

from changeover.metrics import postgres, process, proxy, redis, sync
from changeover.metrics.prometheus import DEFAULT_QUERIES
from changeover.metrics.signals import SIGNALLED
from changeover.plan.default import default_plan

SERVED = (
    proxy.SERVED
    | postgres.SERVED
    | redis.SERVED
    | process.SERVED
    | sync.SERVED
    | SIGNALLED
    | set(DEFAULT_QUERIES)
)
# Read by later capabilities, not by the rollout controller: the report measures downtime from
# the journal and the proxy's history; the post-cutover N+1 detector counts queries per request.
LATER = {"downtime", "db_queries_per_request"}


def test_every_gate_of_the_default_plan_has_a_source_or_its_own_checks() -> None:
    plan = default_plan()
    unserved = [
        f"{step.id}: {gate.metric}"
        for step in plan.all_steps()
        for gate in step.gates
        if gate.check is None and gate.metric not in SERVED | LATER
    ]
    assert not unserved, unserved


def test_the_synthetic_gates_of_the_default_plan_run_probes_it_knows() -> None:
    plan = default_plan()
    synthetic = {
        step.id: [c.probe for c in gate.checks]
        for step in plan.all_steps()
        for gate in step.gates
        if gate.check is not None
    }
    assert synthetic["staged-session-continuity"] == ["http.session"]
    assert synthetic["full-background-jobs"] == ["postgres.heartbeat"]
    assert "http" in synthetic["rollback-major-features"]
    assert "postgres.connect" in synthetic["rollback-db-connection-failures"]
