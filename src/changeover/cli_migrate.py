"""``changeover migrate …``: SQLite → PostgreSQL commands over ``changeover.migrate``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from changeover.migrate.handoff import WriteSwitch
    from changeover.migrate.schema import PgPlan

from changeover.cli_common import CONTEXT, _print_json, err, json_option, out, plan_option


@click.group(context_settings=CONTEXT)
def migrate() -> None:
    """SQLite → PostgreSQL: plan, copy, sync, verify, hand off writes and back, status."""


def endpoint_options(command: Callable[..., None]) -> Callable[..., None]:
    """--source, --target, --plan, --cast, --schema: where the migration reads and writes."""
    for option in reversed(
        [
            click.option("--source", help="SQLite file (sqlite:///path/app.db); default: plan's."),
            click.option(
                "--target", help="PostgreSQL URL as a reference ('${PG_URL}'); default: plan's."
            ),
            plan_option,
            click.option(
                "--cast", "casts", multiple=True, metavar="TABLE.COLUMN=RULE", help="Cast rule."
            ),
            click.option("--schema", "schema_name", default="public", show_default=True),
        ]
    ):
        command = option(command)
    return command


@migrate.command("plan")
@click.option(
    "--source", help="SQLite file (sqlite:///path/app.db or a path); default: the plan's."
)
@plan_option
@click.option(
    "--cast",
    "casts",
    multiple=True,
    metavar="TABLE.COLUMN=RULE",
    help="Cast rule, e.g. orders.created_at='timestamptz from epoch_ms' (repeatable).",
)
@json_option
def migrate_plan(source: str | None, plan: Path, casts: tuple[str, ...], json_: bool) -> None:
    """Print the PostgreSQL DDL for a SQLite file and audit its data for values that won't fit.

    Exit 1 when the audit finds errors (values that would be rejected without a cast rule).

    Example: changeover migrate plan --source sqlite:///srv/app/app.db
    """
    from changeover.migrate.audit import render_findings
    from changeover.migrate.planning import from_plan_file, make_plan

    rules: dict[str, str] = {}
    if source is None:
        source, rules, _ = from_plan_file(plan)
    rules.update(_cast_options(casts))
    result = make_plan(source, rules)
    if json_:
        _print_json(result.to_json())
    else:
        sys.stdout.write(result.ddl() + "\n")
        findings = render_findings(result.findings)
        out.print("-- type audit:", markup=False)
        out.print(findings or "-- nothing found", markup=False, highlight=False)
    sys.exit(1 if result.errors else 0)


def _cast_options(casts: tuple[str, ...]) -> dict[str, str]:
    from changeover.errors import UsageError

    rules: dict[str, str] = {}
    for item in casts:
        name, sep, rule = item.partition("=")
        if not sep or not rule.strip():
            raise UsageError(f"--cast needs TABLE.COLUMN=RULE, got {item!r}")
        rules[name.strip()] = rule.strip()
    return rules


@migrate.command("copy")
@endpoint_options
@click.option(
    "--on-error",
    type=click.Choice(["stop", "quarantine"]),
    default="stop",
    show_default=True,
    help="Stop at the first value that cannot be represented, or keep it in _changeover_rejects.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--capture",
    is_flag=True,
    help="Install change capture in the SQLite file before the snapshot (needed by migrate sync).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Copy into a scratch schema, verify every row, time it, drop it; changes nothing.",
)
@json_option
def migrate_copy(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    on_error: str,
    jobs: int,
    capture: bool,
    dry_run: bool,
    json_: bool,
) -> None:
    """Create the schema in PostgreSQL and bulk-load every table with COPY, then keys and indexes.

    Source rows = copied + rejected for every table, or the copy stops naming the row.

    Example: changeover migrate copy --on-error quarantine
    """
    from changeover.errors import UsageError
    from changeover.migrate.copy import copy_database, count_rows

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)

    meter = None if json_ else CopyMeter(count_rows(path, pg_plan))
    if dry_run:
        if capture:
            raise UsageError("--dry-run changes nothing, so it cannot install --capture")
        _dry_run(path, resolved, pg_plan, on_error, jobs, meter, json_)
        return
    summary = copy_database(
        path,
        resolved,
        pg_plan,
        schema=schema_name,
        on_error=on_error,  # type: ignore[arg-type]
        jobs=jobs,
        progress=meter.update if meter else None,
        capture=capture,
    )
    rows = [
        {
            "table": t.table,
            "source_rows": t.source_rows,
            "copied": t.copied,
            "rejected": t.rejected,
            "rows_per_second": round(t.rows_per_second),
        }
        for t in summary.tables
    ]
    if json_:
        _print_json(
            {
                "tables": rows,
                "copied": summary.copied,
                "rejected": summary.rejected,
                "seconds": round(summary.seconds, 2),
                "failed_statements": [list(f) for f in summary.failed_statements],
            }
        )
    else:
        for row in rows:
            out.print(
                f"{row['table']}: {row['source_rows']:,} = {row['copied']:,} copied"
                f" + {row['rejected']:,} rejected ({row['rows_per_second']:,} rows/s)",
                markup=False,
            )
        out.print(
            f"copied {summary.copied:,} rows, rejected {summary.rejected:,}, in "
            f"{summary.seconds:.1f}s ({summary.rows_per_second:,.0f} rows/s)"
        )
        for statement, reason in summary.failed_statements:
            err.print(f"not created: {statement}: {reason}", markup=False)
    sys.exit(1 if summary.rejected or summary.failed_statements else 0)


def _dry_run(
    path: Path,
    resolved: str,
    pg_plan: PgPlan,
    on_error: str,
    jobs: int,
    meter: CopyMeter | None,
    json_: bool,
) -> None:
    from changeover.migrate.dryrun import dry_run
    from changeover.migrate.verify import render

    result = dry_run(
        path,
        resolved,
        pg_plan,
        on_error=on_error,  # type: ignore[arg-type]
        jobs=jobs,
        progress=meter.update if meter else None,
    )
    if json_:
        _print_json(result.to_json())
    else:
        out.print(
            f"dry run: copied {result.copy.copied:,} rows ({result.copy.rejected:,} rejected) in "
            f"{result.copy_seconds:.1f}s, verified in {result.verify_seconds:.1f}s; "
            f"scratch schema {result.schema} dropped",
            markup=False,
        )
        out.print(render(result.verify), markup=False, highlight=False, soft_wrap=True)
        for statement, reason in result.copy.failed_statements:
            err.print(f"would not be created: {statement}: {reason}", markup=False)
    sys.exit(0 if result.ok else 1)


@migrate.command("sync")
@endpoint_options
@click.option("--once", is_flag=True, help="Apply until caught up, then exit.")
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve lag as Prometheus gauges here (loopback recommended), e.g. 127.0.0.1:9187.",
)
@json_option
def migrate_sync(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    once: bool,
    metrics: str | None,
    json_: bool,
) -> None:
    """Apply captured changes continuously: SQLite → PostgreSQL, and back after the handoff.

    Needs 'migrate copy --capture' first. Runs until Ctrl-C / SIGTERM; the lag (rows, seconds)
    is printed every few seconds and, with --metrics, served for Prometheus.

    Example: changeover migrate sync --metrics 127.0.0.1:9187
    """
    import signal
    import threading

    from changeover.migrate.follow import SyncStatus, follow

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)
    gauges = _sync_metrics(metrics) if metrics else None
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    last: list[SyncStatus] = []

    def report(status: SyncStatus) -> None:
        last[:] = [status]
        if gauges is not None:
            gauges(status)
        if not json_ and not once:
            lag = status.lag
            err.print(
                f"sync {status.direction}: lag {lag.rows:,} rows, {lag.seconds * 1000:.0f} ms; "
                f"applied {status.applied:,}",
                markup=False,
            )

    try:
        applied = follow(
            path,
            resolved,
            pg_plan,
            stop,
            schema=schema_name,
            report=report,
            once=once,
            report_every=0.0 if once else 5.0,
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status = last[0] if last else None
    summary = {
        "applied": applied,
        "direction": status.direction if status else None,
        "lag": status.lag.to_json() if status else None,
    }
    if json_:
        _print_json(summary)
    else:
        out.print(f"applied {applied:,} changes", markup=False)


def _sync_metrics(where: str) -> Callable[[object], None]:
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    from changeover.errors import UsageError
    from changeover.migrate.follow import SyncStatus

    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--metrics needs HOST:PORT, e.g. 127.0.0.1:9187, not {where!r}")
    registry = CollectorRegistry()
    rows = Gauge(
        "changeover_sync_lag_rows",
        "Changes captured, not applied",
        ["direction"],
        registry=registry,
    )
    seconds = Gauge(
        "changeover_sync_lag_seconds",
        "Age of the oldest change not applied",
        ["direction"],
        registry=registry,
    )
    applied = Counter(
        "changeover_sync_applied", "Changes applied", ["direction"], registry=registry
    )
    try:
        start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"--metrics {where}: cannot listen there: {exc}") from exc
    seen = {"n": 0}

    def update(status: object) -> None:
        assert isinstance(status, SyncStatus)
        rows.labels(status.direction).set(status.lag.rows)
        seconds.labels(status.direction).set(status.lag.seconds)
        applied.labels(status.direction).inc(max(0, status.applied - seen["n"]))
        seen["n"] = status.applied

    return update


@migrate.command("unsync")
@endpoint_options
@click.option("--force", is_flag=True, help="Remove capture even with changes not yet applied.")
@json_option
def migrate_unsync(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    force: bool,
    json_: bool,
) -> None:
    """Remove everything changeover added to the SQLite file (triggers, changelog, WAL switch).

    Refuses while captured changes are not applied yet, unless --force.

    Example: changeover migrate unsync
    """
    from changeover.errors import UsageError
    from changeover.migrate.apply import pending_forward
    from changeover.migrate.capture import remove_capture

    path, resolved, _ = resolve_endpoints(source, target, plan, casts)
    if not force:
        lag = pending_forward(path, resolved, schema_name)
        if lag is not None and lag.rows:
            raise UsageError(
                f"{lag.rows:,} captured changes are not in PostgreSQL yet; run "
                "'changeover migrate sync --once' first, or pass --force to drop them"
            )
    removed = remove_capture(path)
    if json_:
        _print_json({"removed": removed})
    else:
        out.print("\n".join(f"removed {r}" for r in removed) or "nothing to remove", markup=False)


@migrate.command("handoff")
@endpoint_options
@click.option("--back", is_flag=True, help="Hand writes back from new to legacy.")
@click.option(
    "--proxy", "proxy_admin", help="Built-in proxy admin API URL; default: plan's router."
)
@click.option("--proxy-token", help="Its admin token as a reference ('${PROXY_TOKEN}').")
@click.option(
    "--no-proxy",
    is_flag=True,
    help="No write hold: you have stopped writes yourself (HAProxy/nginx with a read-only hook).",
)
@click.option("--wait-writes", type=float, default=5.0, show_default=True, help="Seconds.")
@click.option("--drain-timeout", type=float, default=5.0, show_default=True, help="Seconds.")
@click.option(
    "--readonly-hook",
    help="Command that puts the legacy app in read-only mode after the flip (no shell).",
)
@json_option
def migrate_handoff(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    back: bool,
    proxy_admin: str | None,
    proxy_token: str | None,
    no_proxy: bool,
    wait_writes: float,
    drain_timeout: float,
    readonly_hook: str | None,
    json_: bool,
) -> None:
    """Switch the write owner without losing a write: hold, drain, verify, flip, release.

    Run it again after any interruption: it finishes the handoff it started.

    Example: changeover migrate handoff --proxy http://127.0.0.1:9901 --proxy-token '${TOKEN}'
    """
    import shlex

    from changeover.migrate.handoff import run_handoff

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)
    switch = _write_switch(plan, proxy_admin, proxy_token, no_proxy)

    def step(name: str, seconds: float) -> None:
        if not json_:
            err.print(f"  {name}: {seconds * 1000:.0f} ms", markup=False)

    result = run_handoff(
        path,
        resolved,
        pg_plan,
        switch,
        to="legacy" if back else "new",
        schema=schema_name,
        wait_writes=wait_writes,
        drain_timeout=drain_timeout,
        readonly_hook=shlex.split(readonly_hook) if readonly_hook else None,
        on_step=step,
    )
    if json_:
        _print_json(result.to_json())
    else:
        out.print(
            f"writes now go to {result.owner}; writes waited {result.pause_seconds * 1000:.0f} ms; "
            f"{result.drained:,} changes drained, {result.verified_keys:,} keys verified",
            markup=False,
        )
        for warning in result.warnings:
            err.print(f"warning: {warning}", markup=False)


def _write_switch(plan: Path, admin: str | None, token: str | None, no_proxy: bool) -> WriteSwitch:
    from changeover.errors import UsageError
    from changeover.migrate.handoff import NoSwitch
    from changeover.secrets import resolve
    from changeover.traffic.builtin import BuiltinRouter

    if no_proxy:
        return NoSwitch()
    if admin is not None:
        return BuiltinRouter(admin, resolve(token, what="--proxy-token") if token else None)
    from changeover.engine.runbook import Runbook
    from changeover.traffic.route import open_plan_router

    try:
        _, router = open_plan_router(Runbook.open(plan))
    except UsageError as exc:
        raise UsageError(
            f"{exc}; give --proxy URL (the built-in proxy's admin API) or --no-proxy"
        ) from exc
    if not isinstance(router, BuiltinRouter):
        raise UsageError(
            "the handoff needs the built-in proxy's write hold; with HAProxy or nginx, stop "
            "writes with the legacy app's read-only hook and run with --no-proxy"
        )
    return router


@migrate.command("status")
@endpoint_options
@json_option
def migrate_status(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    json_: bool,
) -> None:
    """Where the migration stands: copy, write owner, sync positions and lag, last verify.

    Example: changeover migrate status --json
    """
    from changeover.migrate.status import migration_status, render_status

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)
    status = migration_status(path, resolved, pg_plan, schema=schema_name)
    if json_:
        _print_json(status)
    else:
        out.print(render_status(status), markup=False)


def resolve_endpoints(
    source: str | None, target: str | None, plan: Path, casts: tuple[str, ...]
) -> tuple[Path, str, PgPlan]:
    """The SQLite file, the resolved PostgreSQL URL and the schema plan, from options or the plan.

    ``--target`` must be a reference (``'${PG_URL}'``): a literal password would end up in shell
    history and process lists. The plan's target comes resolved from its postgres system.
    """
    from changeover.errors import UsageError
    from changeover.migrate.planning import from_plan_file, sqlite_path
    from changeover.migrate.schema import plan_schema
    from changeover.migrate.sqlite import introspect
    from changeover.secrets import has_reference, mask_url, resolve

    rules: dict[str, str] = {}
    plan_target: str | None = None
    if source is None or target is None:
        plan_source, rules, plan_target = from_plan_file(plan, with_target=target is None)
        source = source or plan_source
    if target is not None and not has_reference(target) and mask_url(target) != target:
        raise UsageError(
            "--target holds a literal password (it would end up in shell history and process "
            "lists): export it, e.g. PG_URL=..., and pass --target '${PG_URL}'"
        )
    resolved = resolve(target, what="--target") if target is not None else plan_target
    if resolved is None:
        raise UsageError("no migration target: give --target '${PG_URL}'")
    if not resolved.startswith(("postgresql://", "postgres://")):
        raise UsageError("--target must be a postgresql:// URL (as a reference: '${PG_URL}')")
    rules.update(_cast_options(casts))
    path = sqlite_path(source)
    return path, resolved, plan_schema(introspect(path), rules)


class CopyMeter:
    """Live copy progress on stderr: rows done of the total, MB/s, ETA; a line every 2 s."""

    def __init__(self, totals: dict[str, int], every: float = 2.0) -> None:
        import time

        self.clock = time.monotonic
        self.total = max(1, sum(totals.values()))
        self.rows: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.started = self.last = self.clock()
        self.every = every

    def update(self, table: str, rows: int, size: int) -> None:
        self.rows[table], self.bytes[table] = rows, size
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        done = sum(self.rows.values())
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0.0
        err.print(
            f"copy: {done:,}/{self.total:,} rows ({100 * done / self.total:.0f}%), "
            f"{sum(self.bytes.values()) / elapsed / 1e6:.1f} MB/s, {rate:,.0f} rows/s, "
            f"ETA {eta:.0f}s",
            markup=False,
        )


@migrate.command("verify")
@endpoint_options
@click.option("--table", "tables", multiple=True, help="Check only this table (repeatable).")
@click.option(
    "--sample", type=click.IntRange(min=1), help="Check N random keys per table, not every row."
)
@click.option(
    "--max-diffs",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Differences listed per table (the counts are always exact).",
)
@click.option("--jobs", type=click.IntRange(min=1), help="Worker processes (default: by size).")
@click.option(
    "--changed",
    is_flag=True,
    help="Only the keys the live sync changed since the last verify (needs copy --capture).",
)
@json_option
def migrate_verify(
    source: str | None,
    target: str | None,
    plan: Path,
    casts: tuple[str, ...],
    schema_name: str,
    tables: tuple[str, ...],
    sample: int | None,
    max_diffs: int,
    jobs: int | None,
    changed: bool,
    json_: bool,
) -> None:
    """Compare every row in PostgreSQL with SQLite: missing, extra and different rows by key.

    Use the same cast rules as the copy. Exit 0 when equal (quarantined rows are named, not
    counted against it), 1 when any row differs.

    Example: changeover migrate verify --source sqlite:///srv/app/app.db --target '${PG_URL}'
    """
    from changeover.migrate.verify import render, verify_database

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)
    if changed:
        from changeover.migrate.incremental import verify_changed

        count, checked = verify_changed(path, resolved, pg_plan, schema=schema_name)
        if checked is None:
            out.print(f"no key changed since the last verify ({count} checked)", markup=False)
            sys.exit(0)
        report = checked
    else:
        report = verify_database(
            path,
            resolved,
            pg_plan,
            schema=schema_name,
            tables=list(tables) or None,
            sample=sample,
            max_diffs=max_diffs,
            jobs=jobs,
        )
    if json_:
        _print_json(report.to_json())
    else:
        out.print(render(report), markup=False, highlight=False, soft_wrap=True)
    sys.exit(0 if report.equal else 1)
