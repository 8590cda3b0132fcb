"""``changeover loadtest``: the open-model load generator (``changeover.loadgen``) as a command.

Parses the options into the library's types, runs ``loadgen.workers.run`` with a live line on
stderr once a second, prints the summary (a table, or one JSON object with ``--json``) and
exits 0 when every SLO held, 1 when one failed or sends were late or missed, 2 on bad input,
3 when the target cannot be reached, 130 when interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from changeover.cli_common import _print_json, err, out, positive_seconds
from changeover.errors import UsageError


@click.command()
@click.argument("url")
@click.option("--rate", type=float, required=True, help="Requests per second to offer.")
@click.option("--duration", default="10s", show_default=True, help="How long: 30s, 5m, …")
@click.option("--mix", type=click.Path(path_type=Path, dir_okay=False), help="Request mix file.")
@click.option(
    "--access-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Replay the requests of a common/combined access log, weighted by frequency.",
)
@click.option(
    "--log-methods",
    default="GET,HEAD",
    show_default=True,
    help="Methods replayed from --access-log (a log has no bodies to replay writes with).",
)
@click.option("--slo", help="e.g. 'p95<100ms,p99<250ms,errors<1%,rate>4900'; exit 1 if one fails.")
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Most keep-alive connections open at once (all processes together).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Generator processes (default: 1 below 3,000 requests/s, else one per core).",
)
@click.option("--timeout", default="10s", show_default=True, help="Wait this long per answer.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the mix's order.")
@click.option(
    "--record",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON lines of every write (non-GET/HEAD/OPTIONS) with its status and answer.",
)
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not on loopback.")
@click.option("--json", "json_", is_flag=True, help="Print one JSON object (progress as JSON).")
def loadtest(
    url: str,
    rate: float,
    duration: str,
    mix: Path | None,
    access_log: Path | None,
    log_methods: str,
    slo: str | None,
    connections: int,
    processes: int | None,
    timeout: str,
    seed: int,
    record: Path | None,
    allow_remote: bool,
    json_: bool,
) -> None:
    """Send load at a fixed rate (open model) and judge it against SLOs.

    Request i leaves at start + i/rate whether or not earlier ones were answered; latency is
    measured from that scheduled time, so a stall shows as latency (no coordinated omission).
    Requests sent more than 10 ms late or never sent are counted and fail the run. Errors are
    5xx answers and requests without an answer. Only loopback targets unless --allow-remote.
    Exit 0 when every SLO held, 1 when one failed or sends were late/missed, 2 bad input,
    3 target unreachable, 130 interrupted.

    Example: changeover loadtest http://127.0.0.1:8080/ --rate 5000 --slo 'p95<100ms'
    """
    from changeover.loadgen import mix as mixes
    from changeover.loadgen.result import judge, parse_slos
    from changeover.loadgen.schedule import Schedule, default_processes
    from changeover.loadgen.target import parse_target
    from changeover.loadgen.workers import run

    slos = parse_slos(slo) if slo is not None else []
    schedule = Schedule(rate, positive_seconds("--duration", duration))
    if mix is not None and access_log is not None:
        raise UsageError("give --mix or --access-log, not both")
    target = parse_target(url, allow_remote=allow_remote)
    if mix is not None:
        requests = mixes.load_mix(mix)
    elif access_log is not None:
        methods = [m.strip() for m in log_methods.split(",") if m.strip()]
        requests = mixes.load_access_log(access_log, methods)
    else:
        requests = mixes.single(target.path)
    if processes is None:
        processes = default_processes(rate, _cores())

    def show(progress: Any) -> None:
        if json_:
            sys.stderr.write(json.dumps({"progress": progress.to_json()}) + "\n")
            sys.stderr.flush()
        else:
            err.print(_progress_line(progress), markup=False)

    for note in requests.notes:
        err.print(f"note: {note}", markup=False)
    result = run(
        target,
        schedule,
        requests,
        processes=processes,
        connections=connections,
        timeout=positive_seconds("--timeout", timeout),
        seed=seed,
        record=record,
        progress_to=show,
    )
    verdict = judge(result, slos)
    if json_:
        _print_json(
            result.summary()
            | {
                "slo": [v.to_json() for v in verdict.slos],
                "passed": verdict.passed,
                "reasons": verdict.reasons,
            }
        )
    else:
        out.print(_summary_table(result, verdict))
        for reason in verdict.reasons:
            err.print(f"FAILED: {reason}", markup=False)
        if verdict.passed and not result.interrupted:
            out.print("PASSED" + (": every SLO held" if slos else ": the load was offered on time"))
    if result.interrupted:
        err.print("interrupted: the numbers above cover the run until the stop")
        sys.exit(130)
    sys.exit(0 if verdict.passed else 1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _progress_line(progress: Any) -> str:
    lat = progress.latency_ms
    return (
        f"{progress.elapsed:6.1f}s  {progress.rate:9,.0f} req/s  p50 {_ms(lat['p50'])} ms  "
        f"p95 {_ms(lat['p95'])} ms  p99 {_ms(lat['p99'])} ms  errors {progress.errors}  "
        f"late {progress.late}  missed {progress.missed}"
    )


def _summary_table(result: Any, verdict: Any) -> Table:
    summary = result.summary()
    table = Table(title=f"loadtest {result.url}", show_header=False, expand=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    lat, lag = summary["latency_ms"], summary["send_lag_ms"]
    statuses = ", ".join(f"{s} × {n:,}" for s, n in summary["statuses"].items()) or "none"
    error_rate = summary["error_rate"]
    errors = f"{summary['errors']:,}" + (f" ({error_rate:.3%})" if error_rate is not None else "")
    failures = ", ".join(f"{reason} × {n:,}" for reason, n in summary["failures"].items())
    rows = [
        ("mix", summary["mix"]),
        ("rate", f"{summary['rate']:,.0f} asked, {summary['achieved_rate']:,.1f} achieved req/s"),
        ("duration", f"{summary['duration_s']:g} s (window {summary['window_s']:g} s)"),
        ("processes", f"{summary['processes']}, {summary['connections']:,} connections opened"),
        (
            "requests",
            f"{summary['scheduled']:,} due, {summary['sent']:,} sent, "
            f"{summary['answered']:,} answered",
        ),
        ("statuses", statuses),
        ("errors", errors + (f": {failures}" if failures else "")),
        ("late / missed", f"{summary['late']:,} / {summary['missed']:,}" + _late(summary)),
        (
            "latency ms",
            "  ".join(f"{k} {_ms(lat[k])}" for k in ("p50", "p90", "p95", "p99", "p999", "max")),
        ),
        ("send lag ms", "  ".join(f"{k} {_ms(lag[k])}" for k in ("p50", "p99", "max"))),
    ]
    rows += [
        (f"SLO {v.slo.text}", ("pass" if v.passed else "FAIL") + f" ({_actual(v)})")
        for v in verdict.slos
    ]
    for what, value in rows:
        table.add_row(what, value)
    table.caption = "latency from each request's scheduled time (no coordinated omission)"
    return table


def _late(summary: dict[str, Any]) -> str:
    if not summary["late"]:
        return ""
    return (
        f" ({summary['late_at_cap']:,} with every connection busy; the generator waited "
        f"{summary['cpu_wait_s']:.2f} s for a CPU)"
    )


def _actual(verdict: Any) -> str:
    if verdict.actual is None:
        return "nothing measured"
    metric = verdict.slo.metric
    if metric == "errors":
        return f"{verdict.actual:.3g}%"
    if metric == "rate":
        return f"{verdict.actual:,.1f} req/s"
    return f"{verdict.actual:,.2f} ms"
