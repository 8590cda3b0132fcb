"""``changeover advise``: what to tune after the cutover, read from the plan's systems.

A thin adapter over ``changeover.advise``: the plan's PostgreSQL and Redis systems (or the ones
named), the journal's busiest traffic sample for the pool size, and any ``--log`` files. Advice
is printed (or ``--json``) and exits 0; an unreachable system is a plain error, exit 3.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from changeover.cli_common import CONTEXT, json_option, out, plan_option, print_json


@click.command(context_settings=CONTEXT)
@plan_option
@json_option
@click.option(
    "--log",
    "logs",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A log file to summarise (repeatable).",
)
@click.option("--postgres", help="The PostgreSQL system (default: the plan's first).")
@click.option("--redis", help="The Redis system (default: the plan's first).")
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="New-app instances sharing the database (for the pool size).",
)
@click.option(
    "--rps",
    type=click.FloatRange(min=0, min_open=True),
    help="Peak requests/s (default: the journal's busiest sample).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Latency at that peak, ms (with --rps).",
)
@click.option(
    "--sample-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="How long to sample pg_stat_activity for the peak of active connections.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Slow statements listed per ranking.",
)
def advise(
    plan: Path,
    json_: bool,
    logs: tuple[Path, ...],
    postgres: str | None,
    redis: str | None,
    instances: int,
    rps: float | None,
    latency_ms: float | None,
    sample_seconds: float,
    top: int,
) -> None:
    """Advice after the cutover: slow queries, missing and unused indexes, pool size, cache
    TTLs, and an error-log summary. Reads only; changes nothing.

    Example: changeover advise --log /var/log/app/error.log --instances 3
    """
    from changeover.advise.gather import SAMPLE_EVENT, gather_advice, system_of_kind
    from changeover.advise.pool import Traffic, busiest_sample
    from changeover.engine.runbook import Runbook
    from changeover.errors import UsageError
    from changeover.probes.base import ProbeContext

    if (rps is None) != (latency_ms is None):
        raise UsageError("--rps and --latency-ms go together (Little's law needs both)")
    with Runbook.open(plan) as runbook:
        systems = runbook.plan.systems
        pg = system_of_kind(systems, "postgres", postgres)
        cache = system_of_kind(systems, "redis", redis)
        if rps is not None and latency_ms is not None:
            traffic: Traffic | None = Traffic(rps, latency_ms / 1000, "--rps and --latency-ms")
        else:
            events = runbook.journal.events(kinds=[SAMPLE_EVENT])
            traffic = busiest_sample(event.payload for event in events)
        ctx = ProbeContext(systems, base_dir=runbook.loaded.base_dir)
        advice = asyncio.run(
            gather_advice(
                ctx,
                postgres=pg,
                redis=cache,
                logs=list(logs),
                traffic=traffic,
                instances=instances,
                sample_seconds=sample_seconds,
                top=top,
            )
        )
    if json_:
        print_json(advice.to_json())
        return
    for line in render(advice.to_json()):
        out.print(line, markup=False, highlight=False)


def render(data: dict[str, Any]) -> list[str]:
    """The advice as plain text lines, a heading per part."""
    lines: list[str] = []
    pg = data["postgres"]
    if pg is not None:
        lines.append(f"PostgreSQL (database {pg['database']})")
        for title, key, unit in (
            ("slowest by total time", "by_total", "total_ms"),
            ("slowest by mean time", "by_mean", "mean_ms"),
        ):
            if pg[key]:
                lines.append(f"  {title}:")
                lines += [
                    f"    {q[unit]:>12,.1f} ms  {q['calls']:>8,} calls  {q['query']}"
                    for q in pg[key]
                ]
        lines += [f"  seq scans: {t['advice']}" for t in pg["seq_scan_tables"]]
        lines += [f"  unused index: {i['advice']}" for i in pg["unused_indexes"]]
        if not pg["seq_scan_tables"] and not pg["unused_indexes"]:
            lines.append("  indexes: no table read mostly by sequential scans, no unused index")
        lines += [f"  note: {note}" for note in pg["notes"]]
    pool = data["pool"]
    if pool is not None:
        lines += [f"Pool size: {pool['advice']}", f"  {pool['formula']}"]
    cache = data["redis"]
    if cache is not None:
        buckets = ", ".join(f"{k}: {v}" for k, v in cache["ttl_buckets"].items())
        rate = "n/a" if cache["hit_rate"] is None else f"{cache['hit_rate']:.1%}"
        lines += [
            f"Redis ({cache['keys_sampled']} keys sampled; policy {cache['maxmemory_policy']})",
            f"  TTLs: {buckets}",
            f"  hit rate {rate}, expired {cache['expired_keys']:,}, "
            f"evicted {cache['evicted_keys']:,}",
        ]
        lines += [f"  {finding}" for finding in cache["findings"]]
    for summary in data["logs"]:
        lines.append(
            f"Log {summary['source']}: {summary['error_lines']:,} error lines of "
            f"{summary['lines']:,}"
        )
        lines += [f"  {m['count']:>6,} × {m['message']}" for m in summary["top"]]
    return lines or ["nothing to advise on: the plan has no postgres or redis system, no --log"]
