"""The plan's ``advise`` step: the advice on one topic, journaled with the step's outcome.

``{advise: {topic: indexes}}`` reads the plan's PostgreSQL (or ``system``), ``cache-ttl`` its
Redis, ``logs`` the ``files`` given; ``pool-size`` takes the busiest ``rollout.sample`` of the
journal for Little's law and ``instances`` (default 1). Advice never fails the step; an
unreachable system does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from changeover.advise.gather import (
    SAMPLE_EVENT,
    TOPICS,
    gather_advice,
    system_of_kind,
    topic_detail,
    traffic_from_samples,
)
from changeover.probes.base import ProbeContext

if TYPE_CHECKING:
    from changeover.engine.runbook import Runbook

_POSTGRES_TOPICS = ("slow-queries", "bottlenecks", "indexes", "pool-size")


async def advise_step(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    from changeover.rollout.actions import ActionFailed

    topic = params.get("topic")
    if topic not in TOPICS:
        raise ActionFailed(f"advise: topic must be one of {', '.join(TOPICS)}, not {topic!r}")
    systems = runbook.plan.systems
    wanted = params.get("system")
    name = str(wanted) if wanted is not None else None
    postgres = redis = None
    if topic in _POSTGRES_TOPICS:
        postgres = system_of_kind(systems, "postgres", name)
        if postgres is None:
            raise ActionFailed(f"advise {topic}: the plan has no postgres system")
    if topic == "cache-ttl":
        redis = system_of_kind(systems, "redis", name)
        if redis is None:
            raise ActionFailed("advise cache-ttl: the plan has no redis system")
    ctx = ProbeContext(systems, base_dir=runbook.loaded.base_dir)
    files = params.get("files") or []
    if topic == "logs" and (isinstance(files, str) or not files):
        raise ActionFailed("advise logs: list the log files, e.g. {files: [logs/app.log]}")
    instances = params.get("instances", 1)
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ActionFailed(f"advise: instances must be a whole number ≥ 1, not {instances!r}")
    traffic = None
    if topic in ("pool-size", "bottlenecks"):
        events = runbook.journal.events(kinds=[SAMPLE_EVENT])
        traffic = traffic_from_samples(event.payload for event in events)
    advice = await gather_advice(
        ctx,
        postgres=postgres,
        redis=redis,
        logs=[ctx.path(str(f)) for f in files] if topic == "logs" else [],
        traffic=traffic,
        instances=instances,
    )
    return {"topic": topic, **topic_detail(str(topic), advice)}
