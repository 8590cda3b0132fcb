"""``changeover migrate …``: SQLite → PostgreSQL commands over ``changeover.migrate``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from changeover.migrate.schema import PgPlan

from changeover.cli_common import CONTEXT, _print_json, err, json_option, out, plan_option


@click.group(context_settings=CONTEXT)
def migrate() -> None:
    """SQLite → PostgreSQL: plan the schema and audit the data (copy, sync, verify come next)."""


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
@click.option("--source", help="SQLite file (sqlite:///path/app.db or a path); default: plan's.")
@click.option("--target", help="PostgreSQL URL as a reference, e.g. '${PG_URL}'; default: plan's.")
@plan_option
@click.option("--cast", "casts", multiple=True, metavar="TABLE.COLUMN=RULE", help="Cast rule.")
@click.option("--schema", "schema_name", default="public", show_default=True)
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
    json_: bool,
) -> None:
    """Create the schema in PostgreSQL and bulk-load every table with COPY, then keys and indexes.

    Source rows = copied + rejected for every table, or the copy stops naming the row.

    Example: changeover migrate copy --on-error quarantine
    """
    from changeover.migrate.copy import copy_database, count_rows

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)

    meter = None if json_ else CopyMeter(count_rows(path, pg_plan))
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
@click.option("--source", help="SQLite file (sqlite:///path/app.db or a path); default: plan's.")
@click.option("--target", help="PostgreSQL URL as a reference, e.g. '${PG_URL}'; default: plan's.")
@plan_option
@click.option("--cast", "casts", multiple=True, metavar="TABLE.COLUMN=RULE", help="Cast rule.")
@click.option("--schema", "schema_name", default="public", show_default=True)
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
    json_: bool,
) -> None:
    """Compare every row in PostgreSQL with SQLite: missing, extra and different rows by key.

    Use the same cast rules as the copy. Exit 0 when equal (quarantined rows are named, not
    counted against it), 1 when any row differs.

    Example: changeover migrate verify --source sqlite:///srv/app/app.db --target '${PG_URL}'
    """
    from changeover.migrate.verify import render, verify_database

    path, resolved, pg_plan = resolve_endpoints(source, target, plan, casts)
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
