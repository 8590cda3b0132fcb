"""Terminal rendering (rich) shared by the CLI and the demo: check tables, live progress, status.

Only presentation lives here; the data comes from ``engine`` (outcomes, projections).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from changeover.engine.check import Progress, StepOutcome
from changeover.engine.state import RunbookState, State, Timing
from changeover.probes.base import Status

STATUS_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "red",
    Status.ERROR: "magenta",
}
STATE_STYLE = {
    State.DONE: "green",
    State.FAILED: "red",
    State.PENDING: "yellow",
    State.LATER: "dim",
}


def check_table(outcomes: list[StepOutcome], *, title: str | None = None) -> Table:
    """One row per step: stage, id, status, the plain reason, and how long it took."""
    table = Table(title=title, show_lines=False, expand=False)
    several_stages = len({o.stage_id for o in outcomes}) > 1
    if several_stages:
        table.add_column("stage", style="dim", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason / evidence", overflow="fold", ratio=1)
    table.add_column("ms", justify="right", no_wrap=True)
    for outcome in outcomes:
        status = outcome.status
        missed = any(not p.result.status.ok for p in outcome.probes)
        label = status.value.upper() + (" (optional)" if missed and status == Status.WARN else "")
        slowest = (
            max((p.result.duration_ms or 0.0) for p in outcome.probes) if outcome.probes else 0
        )
        cells: list[str | Text] = [
            outcome.step.id,
            Text(label, style=STATUS_STYLE[status]),
            Text(outcome.reason),
            f"{slowest:.0f}",
        ]
        table.add_row(*([outcome.stage_id or ""] if several_stages else []), *cells)
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in Status}
    table.caption = "  ".join(f"{s.value}: {n}" for s, n in counts.items() if n) or "no checks"
    return table


@contextmanager
def live_progress(console: Console, *, enabled: bool) -> Iterator[Progress | None]:
    """A live line per running step while probes run (only on a terminal)."""
    if not enabled:
        yield None
        return
    running: dict[str, None] = {}
    done: list[StepOutcome] = []

    def render() -> Group:
        names = ", ".join(list(running)[:6]) + (" …" if len(running) > 6 else "")
        failed = sum(1 for o in done if not o.status.ok)
        spinner = Spinner("dots", text=f" {len(done)} done ({failed} failed), running: {names}")
        return Group(spinner)

    with Live(render(), console=console, refresh_per_second=8, transient=True) as live:

        def progress(event: str, step_id: str, outcome: StepOutcome | None) -> None:
            if event == "start":
                running[step_id] = None
            else:
                running.pop(step_id, None)
                if outcome is not None:
                    done.append(outcome)
            live.update(render())

        yield progress


def status_view(console: Console, state: RunbookState, *, show_all: bool) -> None:
    summary = state.summary()
    console.print(
        f"[bold]{state.plan.name}[/] — cutover at {state.plan.cutover_at.isoformat()}"
        f" (now {state.now.isoformat(timespec='minutes')})"
    )
    console.print(
        f"{summary['total']} items: [green]{summary['done']} done[/], "
        f"[red]{summary['failed']} failed[/], [yellow]{summary['pending']} pending[/], "
        f"[dim]{summary['later']} automated later[/]; "
        f"[bold]{summary['due']} due now[/], [bold red]{summary['overdue']} overdue[/]"
    )
    console.print(_stage_table(state))
    upcoming = state.next_opening()
    if upcoming is not None:
        stage, opens_at = upcoming
        console.print(f"next: {stage.title} opens {opens_at.isoformat(timespec='minutes')}")

    table = Table(expand=False)
    table.add_column("stage", style="dim", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("title", overflow="fold")
    table.add_column("how", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("when", no_wrap=True)
    shown = 0
    for item in state.steps:
        interesting = item.timing in (Timing.DUE, Timing.OVERDUE) or item.state == State.FAILED
        if not (show_all or interesting):
            continue
        shown += 1
        when = item.timing.value
        if item.due_at is not None and item.timing in (Timing.DUE, Timing.OVERDUE):
            when += f" (due {item.due_at.isoformat(timespec='minutes')})"
        table.add_row(
            item.stage.id if item.stage else "",
            item.step.id,
            item.step.title,
            item.automation,
            Text(item.state.value, style=STATE_STYLE[item.state]),
            Text(when, style="bold red" if item.timing == Timing.OVERDUE else ""),
        )
    if shown:
        console.print(table)
    else:
        console.print("nothing due, overdue or failed (use --all to list every item)")


def _stage_table(state: RunbookState) -> Table:
    table = Table(expand=False)
    for column in ("stage", "window", "opens", "due", "done", "failed", "later", "overdue"):
        table.add_column(column, no_wrap=True)
    for row in state.stage_summaries():
        table.add_row(
            row["stage"],
            Text(row["window"], style="bold" if row["window"] == "open" else ""),
            (row["opens_at"] or "")[:16],
            (row["due_at"] or "")[:16],
            f"{row['done']}/{row['total']}",
            Text(str(row["failed"]), style="red" if row["failed"] else ""),
            str(row["later"]),
            Text(str(row["overdue"]), style="bold red" if row["overdue"] else ""),
        )
    return table


def probe_table(probes: Sequence[Any]) -> Table:
    table = Table(expand=False)
    table.add_column("probe", no_wrap=True)
    table.add_column("system kind", no_wrap=True)
    table.add_column("checks", overflow="fold")
    for probe in probes:
        table.add_row(probe.name, " or ".join(probe.system_kinds), probe.summary)
    return table


def probe_view(console: Console, probe: Any) -> None:
    """One probe: what it checks and each parameter with its type, default and meaning."""
    console.print(f"[bold]{probe.name}[/] — {probe.summary}")
    console.print((probe.__doc__ or "").strip())
    table = Table(expand=False)
    table.add_column("parameter", no_wrap=True)
    table.add_column("default", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for name, field in probe.Params.model_fields.items():
        default = "(required)" if field.is_required() else _show_default(field.get_default())
        table.add_row(name, default, field.description or "")
    console.print(table)


def _show_default(value: Any) -> str:
    from datetime import timedelta

    from changeover.units import format_duration

    return format_duration(value) if isinstance(value, timedelta) else repr(value)


def route_table(stats: Any) -> Table:
    """Per-server counters of a router (``RouterStats``)."""
    table = Table(expand=False)
    for column in ("backend", "server", "status", "weight", "requests", "2xx", "4xx", "5xx"):
        table.add_column(column, no_wrap=True)
    for item in stats.instances:
        table.add_row(
            item.backend,
            item.instance,
            item.status,
            "" if item.weight is None else str(item.weight),
            str(item.requests),
            str(item.responses.get("2xx", 0)),
            str(item.responses.get("4xx", 0)),
            str(item.responses.get("5xx", 0)),
        )
    return table


def traffic_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The demo's traffic shift: weight set, read back, and the share counted at the client."""
    table = Table(title="traffic through the built-in proxy", expand=False)
    for column in ("new weight", "router reads back", "requests", "reached new", "errors"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("proxy p95 (10 s)", justify="right", no_wrap=True)
    for row in rows:
        p95 = row["proxy_p95_ms"]
        table.add_row(
            f"{row['weight_new']}%",
            f"{row['router_reads_back']:g}%",
            str(row["requests"]),
            f"{row['measured_new']:g}%",
            str(row["errors"]),
            "—" if p95 is None else f"{p95:g} ms",
        )
    return table


def data_table(data: dict[str, Any]) -> Table:
    """The demo's data step: copy, live sync, verify, handoff and reverse sync, in numbers."""
    table = Table(title="legacy SQLite → PostgreSQL, live", expand=False, show_header=False)
    table.add_column("step", no_wrap=True)
    table.add_column("result")
    table.add_row(
        "copy (with capture)",
        f"{data['copied']:,} of {data['legacy_rows']:,} rows in {data['copy_seconds']:g} s "
        f"({data['copy_rows_per_second']:,} rows/s)",
    )
    table.add_row(
        "sync under legacy writes",
        f"{data['legacy_writes_during_sync']:,} writes, lag p95 {data['sync_lag_p95_ms']:g} ms",
    )
    table.add_row("verify every row", "equal" if data["verify_equal"] else "DIFFERENT")
    table.add_row("handoff to new", f"writes paused {data['handoff_pause_ms']:g} ms")
    table.add_row("reverse sync", f"{data['written_back']} change(s) written back to SQLite")
    table.add_row("verify again", "equal" if data["final_verify_equal"] else "DIFFERENT")
    return table
