"""Data migration benchmarks 1–4 of issue 4: copy, full verify, sync lag, handoff write pause.

Benchmark 1 (``--only copy``): our bulk copy against pgloader and ``psql \\copy``.

One SQLite file (the app corpus of ``tests/migrate/corpus.py``) into one throwaway PostgreSQL, in
one run: ``copy_database(jobs=2)``, pgloader (Debian package) and the ceiling, ``psql \\copy`` of
the same rows pre-exported to COPY text files. Each contender gets a fresh database per round;
afterwards every table is compared with SQLite (rows, non-NULL counts, sums, text lengths).
``--write`` replaces the "Data migration" section of BENCHMARKS.md with the measured tables.
Benchmark 2 (``--only verify``): full ``verify_database`` (jobs=1 and 2) against reading both
sides once, on the same corpus; its block goes right after the copy section. Benchmark 3
(``--only sync``): lag p50/p95/p99 of ``migrate sync`` at 1,000 legacy writes/s and the capture
triggers' cost on the legacy write rate. Benchmark 4 (``--only handoff``): the write
pause of handoffs there and back at 200 writes/s through the built-in proxy, and lost or
duplicated writes. Each writes its own block after the copy section (and verify's).

    python benchmarks/migrate_bench.py --write     # 1.05M rows, 3 rounds, a few minutes
    python benchmarks/migrate_bench.py --smoke     # seconds; what CI runs (numbers meaningless)
    python benchmarks/migrate_bench.py --only sync,handoff --write   # benchmarks 3 and 4 only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' corpus generator
sys.path.insert(0, str(ROOT / "benchmarks"))  # report.py, also when imported

from report import cpu_model, write_section  # noqa: E402

import changeover  # noqa: E402
from changeover.migrate.copy import copy_database  # noqa: E402
from changeover.migrate.schema import PgPlan, plan_schema, quote  # noqa: E402
from changeover.migrate.sqlite import introspect  # noqa: E402
from changeover.secrets import REDACTOR  # noqa: E402
from changeover.services import PostgresServer, start_postgres  # noqa: E402
from migrate.corpus import make_app_db  # noqa: E402

BEGIN = "<!-- migrate-bench:begin (written by benchmarks/migrate_bench.py --write) -->"
END = "<!-- migrate-bench:end -->"
GOAL_VS_PGLOADER, GOAL_VS_CEILING = 2.0, 0.7
JOBS = 2  # tables in parallel: our copy's worker processes, and the ceiling's psql processes
ROWS_PER_SCALE = 7  # make_app_db(rows=N) writes 7N rows: N per table, 2N order items

# pgloader cannot create the corpus's ``orders`` table as is (it turns SQLite's default
# ``(datetime('now'))`` into a timestamptz literal): the smallest rule that lets it load anything.
PGLOADER_WORKAROUND = "CAST column orders.placed_at to timestamptz drop default"

LABELS = {
    "ours": "changeover copy_database (jobs=2)",
    "pgloader": "pgloader (with the CAST workaround)",
    "ceiling": "ceiling: psql \\copy of pre-made files (2 processes)",
}


@dataclass(frozen=True)
class Settings:
    scale: int = 150_000  # make_app_db rows: 7 × scale rows in all
    repeats: int = 3


SMOKE = Settings(scale=3_000, repeats=1)


# --- checking a loaded database against SQLite ------------------------------------------------

NUMERIC_TYPES = {"smallint", "integer", "bigint", "real", "double precision", "numeric"}
TEXT_TYPES = {"text", "character varying", "character"}


@dataclass
class Fidelity:
    """What a contender left in PostgreSQL, compared with the SQLite file."""

    rows: int = 0
    missing_tables: list[str] = field(default_factory=list)
    row_mismatches: list[str] = field(default_factory=list)  # "table: sqlite N, pg M"
    value_mismatches: list[str] = field(default_factory=list)  # "table.column: what differs"
    no_primary_key: list[str] = field(default_factory=list)
    keys_without_sequence: list[str] = field(default_factory=list)  # integer keys, no default
    indexes: int = 0  # excluding primary keys
    foreign_keys: int = 0


def sqlite_counts(path: Path, tables: list[str]) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {quote(t)}").fetchone()[0]) for t in tables
        }


def check_database(conn: psycopg.Connection[tuple[object, ...]], db: Path) -> Fidelity:
    """Per table and column: rows, non-NULL counts, numeric sums and text lengths vs SQLite."""
    result = Fidelity()
    source = sqlite3.connect(db)
    try:
        tables = [
            r[0]
            for r in source.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        for table in tables:
            columns = conn.execute(
                "SELECT column_name, data_type, column_default, is_identity FROM "
                "information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
                (table,),
            ).fetchall()
            if not columns:
                result.missing_tables.append(table)
                continue
            types = {str(c[0]): str(c[1]) for c in columns}
            source_columns = [r[1] for r in source.execute(f"PRAGMA table_info({quote(table)})")]
            checked = [c for c in source_columns if c in types]
            sq_parts, pg_parts, what = ["count(*)"], ["count(*)"], ["rows"]
            for column in checked:
                name, pg_type = quote(column), types[column]
                sq_parts.append(f"count({name})")
                pg_parts.append(f"count({name})")
                what.append(f"{column} ({pg_type}): non-NULL count")
                if pg_type in NUMERIC_TYPES:
                    sq_parts.append(f"total({name})")
                    pg_parts.append(f"coalesce(sum({name}::float8), 0)")
                    what.append(f"{column} ({pg_type}): sum")
                elif pg_type in TEXT_TYPES:
                    sq_parts.append(f"total(length({name}))")
                    pg_parts.append(f"coalesce(sum(length({name})), 0)")
                    what.append(f"{column} ({pg_type}): total text length")
            sq = source.execute(f"SELECT {', '.join(sq_parts)} FROM {quote(table)}").fetchone()
            pg = conn.execute(f"SELECT {', '.join(pg_parts)} FROM {quote(table)}").fetchone()
            assert pg is not None
            result.rows += int(str(pg[0]))
            if sq[0] != pg[0]:
                result.row_mismatches.append(f"{table}: SQLite {sq[0]:,}, PostgreSQL {pg[0]:,}")
            for label, a, b in zip(what[1:], sq[1:], pg[1:], strict=True):
                if abs(float(a) - float(str(b))) > 1e-9 * max(abs(float(a)), 1.0):
                    result.value_mismatches.append(f"{table}.{label}: SQLite {a:.12g}, PG {b:.12g}")
            key = conn.execute(
                "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (quote(table),),
            ).fetchone()
            found = key[0] if key else None
            key_columns = [str(k) for k in found] if isinstance(found, list) else []
            if not key_columns:
                result.no_primary_key.append(table)
            for column_name, column_type, default, identity in columns:
                if (
                    key_columns == [column_name]
                    and column_type in ("integer", "bigint")
                    and default is None
                    and identity != "YES"
                ):
                    result.keys_without_sequence.append(f"{table}.{column_name}")
    finally:
        source.close()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND NOT i.indisprimary), "
        "(SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
        "AND connamespace = 'public'::regnamespace)"
    ).fetchone()
    assert counts is not None
    result.indexes, result.foreign_keys = int(str(counts[0])), int(str(counts[1]))
    return result


# --- contenders -------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    fidelity: Fidelity
    notes: list[str] = field(default_factory=list)  # errors the contender reported


def _checkpoint(server: PostgresServer) -> None:
    """Every contender starts with the previous one's dirty pages written out."""
    with server.connect() as conn:
        conn.execute("CHECKPOINT")


def run_ours(server: PostgresServer, database: str, db: Path) -> Run:
    url = server.url_for(database)
    _checkpoint(server)
    started = time.perf_counter()
    plan = plan_schema(introspect(db))
    summary = copy_database(db, url, plan, jobs=JOBS)
    seconds = time.perf_counter() - started
    notes = [f"refused: {stmt} ({why})" for stmt, why in summary.failed_statements]
    if summary.rejected:
        notes.append(f"{summary.rejected} rows rejected")
    with server.connect(database) as conn:
        return Run(seconds, check_database(conn, db), notes)


_PGLOADER_LINE = re.compile(r"^\S+Z (ERROR|FATAL|WARNING) (.*)$")


def pgloader_command(db: Path, server: PostgresServer, database: str, *, workaround: bool) -> str:
    # The password comes from PGPASSWORD in pgloader's environment, never from this file.
    lines = [
        "LOAD DATABASE",
        f"  FROM sqlite://{db}",
        f"  INTO postgresql://{server.user}@{server.host}:{server.port}/{database}",
        "  WITH include drop, create tables, create indexes, reset sequences",
    ]
    if workaround:
        lines.append(f"  {PGLOADER_WORKAROUND}")
    return "\n".join(lines) + ";\n"


def run_pgloader(
    server: PostgresServer, database: str, db: Path, workdir: Path, *, workaround: bool = True
) -> tuple[Run, int, str]:
    """pgloader on its load file; its exit code and log come back with the run."""
    command = workdir / f"{database}.load"
    command.write_text(pgloader_command(db, server, database, workaround=workaround))
    argv = ["pgloader", "--root-dir", str(workdir / f"{database}-pgloader"), str(command)]
    env = {**os.environ, "PGPASSWORD": server.password}
    _checkpoint(server)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    log = REDACTOR.scrub(done.stdout + done.stderr)
    notes: list[str] = []
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("QUERY:") and notes:  # the statement an ERROR line was about
            notes[-1] += f" — {line}"
        elif match := _PGLOADER_LINE.match(line):
            notes.append(f"{match.group(1)} {match.group(2)}")
    # pgloader names indexes idx_<oid>_<name>: the same failure in every round reads the same.
    notes = list(dict.fromkeys(re.sub(r"\bidx_\d+_", "idx_<oid>_", n) for n in notes))
    if done.returncode == 0 and notes:
        notes.append("(pgloader exited with code 0 all the same)")
    elif done.returncode != 0:
        notes.append(f"(pgloader exited with code {done.returncode})")
    with server.connect(database) as conn:
        return Run(seconds, check_database(conn, db), notes), done.returncode, log


def export_ceiling_files(server: PostgresServer, source_db: str, plan: PgPlan, out: Path) -> None:
    """The rows as COPY text files, exported from a finished copy (not timed)."""
    out.mkdir(parents=True, exist_ok=True)
    with server.connect(source_db) as conn, conn.cursor() as cur:
        for i, table in enumerate(plan.tables):
            names = ", ".join(quote(c.name) for c in table.columns)
            statement = f"COPY {quote(table.name)} ({names}) TO STDOUT"
            with open(out / f"t{i}.copy", "wb") as f, cur.copy(statement) as copy:
                for chunk in copy:
                    f.write(chunk)


def run_ceiling(server: PostgresServer, database: str, db: Path, plan: PgPlan, files: Path) -> Run:
    """Pre-created tables (not timed); timed: ``psql \\copy`` per table, JOBS at a time, then
    the same indexes, constraints, foreign keys and identity resets as our copy."""
    with server.connect(database) as conn:
        for table in plan.tables:
            conn.execute(table.create_sql)
    psql = str(server.bin_dir / "psql")
    env = {**os.environ, "PGPASSWORD": server.password}

    def load(i: int) -> None:
        table = plan.tables[i]
        names = ", ".join(quote(c.name) for c in table.columns)
        meta = f"\\copy {quote(table.name)} ({names}) FROM '{files / f't{i}.copy'}'"
        argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p"]
        argv += [str(server.port), "-U", server.user, "-d", database, "-c", meta]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"psql \\copy {table.name} failed: {done.stderr.strip()}")

    _checkpoint(server)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        list(pool.map(load, range(len(plan.tables))))  # plan order, as our copy submits them
    with server.connect(database) as conn:
        for statement in (
            *plan.indexes,
            *plan.unique_constraints,
            *plan.foreign_keys,
            *plan.sequence_resets,
        ):
            conn.execute(statement)
    seconds = time.perf_counter() - started
    with server.connect(database) as conn:
        return Run(seconds, check_database(conn, db))


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Report:
    settings: Settings
    started: datetime.datetime
    machine: dict[str, str]
    command: str
    source_rows: int
    source_mb: float
    runs: dict[str, list[Run]]
    as_briefed: tuple[Run, int] | None  # pgloader without the workaround: run, exit code
    generate_seconds: float
    load: tuple[tuple[float, ...], tuple[float, ...]]  # load average before and after

    def median(self, key: str) -> Run:
        runs = sorted(self.runs[key], key=lambda r: r.seconds)
        return runs[len(runs) // 2]

    def rate(self, key: str) -> float:
        run = self.median(key)
        return run.fidelity.rows / run.seconds if run.seconds > 0 else 0.0


@contextlib.contextmanager
def fresh_database(server: PostgresServer, name: str) -> Iterator[str]:
    server.create_database(name)
    try:
        yield name
    finally:
        server.drop_database(name)


def run(settings: Settings, *, command: str) -> Report:
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="migrate-bench-") as tmp, start_postgres() as server:
        workdir = Path(tmp)
        db = workdir / "app.db"
        began = time.perf_counter()
        make_app_db(db, rows=settings.scale)
        generate_seconds = time.perf_counter() - began
        plan = plan_schema(introspect(db))
        source_rows = sum(sqlite_counts(db, [t.source for t in plan.tables]).values())
        source_mb = db.stat().st_size / 2**20
        host = machine(server)
        print(f"corpus: {source_rows:,} rows in {generate_seconds:.1f} s", flush=True)

        # The ceiling's files, from a copy made before any timing (the export is not timed).
        with fresh_database(server, "bench_export") as name:
            copy_database(db, server.url_for(name), plan, jobs=JOBS)
            export_ceiling_files(server, name, plan, workdir / "ceiling")

        # pgloader exactly as briefed, once: does it load the corpus without help?
        with fresh_database(server, "bench_pgloader_plain") as name:
            plain, code, _ = run_pgloader(server, name, db, workdir, workaround=False)
        print(f"pgloader without CAST rules: exit {code}, {plain.fidelity.rows:,} rows", flush=True)

        runners: dict[str, Callable[[str], Run]] = {
            "ours": lambda name: run_ours(server, name, db),
            "pgloader": lambda name: run_pgloader(server, name, db, workdir)[0],
            "ceiling": lambda name: run_ceiling(server, name, db, plan, workdir / "ceiling"),
        }
        keys = list(runners)
        runs: dict[str, list[Run]] = {k: [] for k in keys}
        for round_ in range(settings.repeats):
            order = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]  # rotate: share noise
            for key in order:
                with fresh_database(server, f"bench_{key}_{round_}") as name:
                    result = runners[key](name)
                runs[key].append(result)
                print(
                    f"  round {round_ + 1} {key:9s} {result.seconds:7.2f} s "
                    f"{result.fidelity.rows / result.seconds:12,.0f} rows/s",
                    flush=True,
                )
    return Report(
        settings=settings,
        started=started,
        machine=host,
        command=command,
        source_rows=source_rows,
        source_mb=source_mb,
        runs=runs,
        as_briefed=(plain, code),
        generate_seconds=generate_seconds,
        load=(load_before, os.getloadavg()),
    )


# --- report -----------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError):
        done = subprocess.run(argv, capture_output=True, text=True)
        lines = (done.stdout + done.stderr).strip().splitlines()
        return lines[0].strip() if lines else "?"
    return "?"


def machine(server: PostgresServer) -> dict[str, str]:
    model, ram = cpu_model(), "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    package = _first_line(["dpkg-query", "-W", "-f", "${Version}", "pgloader"])
    # The checkout changeover was imported from (a snapshot worktree when the tree is busy).
    code = Path(changeover.__file__).resolve().parents[2]
    commit = _first_line(["git", "-C", str(code), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(code), "status", "--porcelain", "--", "src/changeover/migrate"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": _first_line([str(server.bin_dir / "postgres"), "--version"]),
        "pgloader": f"{_first_line(['pgloader', '--version'])} (Debian package {package})",
        "code": f"commit {commit}"
        + (" plus uncommitted changes in src/changeover/migrate" if dirty else ""),
    }


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _fidelity_cell(items: list[str]) -> str:
    return "; ".join(items) if items else "none"


def render(report: Report) -> str:
    s, m = report.settings, report.machine
    pgl, ceiling = report.rate("pgloader"), report.rate("ceiling")
    lines = [
        BEGIN,
        "## Data migration (issue 4)",
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M} UTC with `{report.command}`.",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, kernel {m['kernel']}, "
        f"Python {m['python']}; load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in report.load[0])}, after "
        f"{' / '.join(f'{x:.2f}' for x in report.load[1])} (shared, noisy machine: other "
        "work may run during a round, hence the spread column).",
        f"- Code measured: {m['code']}. Peers: {m['pgloader']}; {m['postgres']} (a throwaway "
        "server from `changeover.services.start_postgres`: fsync off, shared_buffers 32MB), "
        "on 127.0.0.1 over TCP for every contender.",
        f"- Source: `make_app_db(rows={s.scale:,})` of `tests/migrate/corpus.py`, "
        f"{report.source_rows:,} rows ({report.source_mb:.0f} MiB file) in 6 tables (users, "
        "sessions WITHOUT ROWID, orders, order_items, payments with blobs, audit_log without a "
        "key), generated in "
        f"{report.generate_seconds:.1f} s. The same file for every contender.",
        "- Each contender loads into a fresh database per round (created and dropped outside the "
        f"timing, CHECKPOINT before each); {s.repeats} round(s), order rotated each round; the "
        "median round is shown with the spread. rows/s = rows found in PostgreSQL afterwards / "
        "wall seconds.",
        f"- **ours**: `plan_schema(introspect(file))` + `copy_database(jobs={JOBS})`, timed end "
        "to end: create tables, COPY (2 worker processes), indexes, unique constraints, foreign "
        "keys, identity resets.",
        "- **pgloader**: `pgloader --root-dir DIR FILE.load` (argv, PGPASSWORD in its "
        "environment) with `WITH include drop, create tables, create indexes, reset sequences` "
        "and pgloader's default workers/concurrency, plus the CAST rule "
        f"`{PGLOADER_WORKAROUND}` (see below why); timed from process start to exit.",
        f"- **ceiling**: the same rows exported beforehand (`COPY … TO STDOUT` of a finished "
        "copy; not timed) into COPY text files; tables pre-created with our DDL (not timed); "
        f"timed: one `psql -c \"\\copy table FROM 'file'\"` per table, {JOBS} at a time in plan "
        "order like our copy, then the same indexes, unique constraints, foreign keys and "
        "identity resets as our copy (index/constraint creation **included**, as in ours and "
        "pgloader's).",
        "",
        "| contender | rows in PostgreSQL | seconds (median) | spread min–max | rows/s | "
        "× pgloader | × ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        med = report.median(key)
        times = [r.seconds for r in report.runs[key]]
        rate = report.rate(key)
        lines.append(
            f"| {label} | {med.fidelity.rows:,} | {med.seconds:.2f} | "
            f"{min(times):.2f}–{max(times):.2f} | {rate:,.0f} | "
            f"{rate / pgl if pgl else float('nan'):.2f} | "
            f"{rate / ceiling if ceiling else float('nan'):.2f} |"
        )
    ours = report.rate("ours")
    vs_pgl = ours / pgl if pgl else float("inf")
    vs_ceiling = ours / ceiling if ceiling else 0.0
    lines += [
        "",
        f"Goal ours ≥ {GOAL_VS_PGLOADER:g}× pgloader's rows/s: {vs_pgl:.2f}× — "
        f"{_verdict(vs_pgl >= GOAL_VS_PGLOADER)}.",
        f"Goal ours ≥ {GOAL_VS_CEILING:g}× the ceiling's rows/s: {vs_ceiling:.2f}× — "
        f"{_verdict(vs_ceiling >= GOAL_VS_CEILING)}.",
        "",
        "### What each contender left in PostgreSQL",
        "",
        "Checked after every round against the SQLite file, per table and column: row count, "
        "non-NULL count, sum of numeric columns (as float8, relative tolerance 1e-9), total "
        "text length. Shown for the median round.",
        "",
        "| contender | tables missing | row counts differing | values differing | tables "
        "without primary key | integer keys without sequence/identity | indexes (non-PK) | "
        "foreign keys |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    for key, label in LABELS.items():
        f = report.median(key).fidelity
        lines.append(
            f"| {label} | {_fidelity_cell(f.missing_tables)} | "
            f"{_fidelity_cell(f.row_mismatches)} | {_fidelity_cell(f.value_mismatches)} | "
            f"{_fidelity_cell(f.no_primary_key)} | {_fidelity_cell(f.keys_without_sequence)} | "
            f"{f.indexes} | {f.foreign_keys} |"
        )
    lines += ["", "### Errors the contenders reported", ""]
    if report.as_briefed is not None:
        plain, code = report.as_briefed
        lines.append(
            "- pgloader **without** the CAST rule (exactly the load command above minus the "
            f"CAST line): exit code {code}, {plain.fidelity.rows:,} rows loaded, tables missing: "
            f"{_fidelity_cell(plain.fidelity.missing_tables)}. Its log:"
        )
        lines += [f"  - `{_md_code(n)}`" for n in plain.notes[:5]] or ["  - (nothing)"]
    for key, label in LABELS.items():
        notes: list[str] = []
        for r in report.runs[key]:
            notes += [n for n in r.notes if n not in notes]
        lines.append(f"- {label}, all rounds:" + (" none" if not notes else ""))
        lines += [f"  - `{_md_code(n)}`" for n in notes[:5]]
    lines += [END]
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    text = " ".join(text.split())
    return (text[:300] + " …") if len(text) > 300 else text.replace("`", "'")


# --- benchmark 3: sync lag and trigger overhead ------------------------------------------------

SYNC_BEGIN = "<!-- migrate-bench:sync:begin (written by benchmarks/migrate_bench.py --write) -->"
SYNC_END = "<!-- migrate-bench:sync:end -->"
HANDOFF_BEGIN = (
    "<!-- migrate-bench:handoff:begin (written by benchmarks/migrate_bench.py --write) -->"
)
HANDOFF_END = "<!-- migrate-bench:handoff:end -->"
GOAL_LAG_P95, GOAL_LAG_P99 = 0.100, 0.050  # seconds (p99 ≤ 50 ms is the ambition)
GOAL_TRIGGER_OVERHEAD = 0.20
GOAL_PAUSE = 0.250  # seconds


@dataclass(frozen=True)
class SyncSettings:
    scale: int = 20_000  # make_app_db rows of the legacy database
    rate: float = 1000.0  # legacy writes/s while the lag is measured
    seconds: float = 20.0
    overhead_seconds: float = 2.0  # per closed-loop round
    overhead_rounds: int = 3


@dataclass(frozen=True)
class HandoffSettings:
    scale: int = 20_000
    rate: float = 200.0  # writes/s through the proxy
    handoffs: int = 6  # there and back counts as two
    between: float = 1.5  # seconds of writes between handoffs


SYNC_SMOKE = SyncSettings(scale=500, seconds=3.0, overhead_seconds=0.5, overhead_rounds=1)
HANDOFF_SMOKE = HandoffSettings(scale=500, handoffs=2, between=1.0)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _legacy_connection(db: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _legacy_write(conn: sqlite3.Connection, sku: str) -> None:
    """What the legacy app does per order (as ``tests/support/write_apps.py``)."""
    conn.execute("BEGIN IMMEDIATE")
    cursor = conn.execute(
        "INSERT INTO orders (user_id, status, total, placed_at) "
        "VALUES (1, 'new', 0, '2026-11-26 12:00:00')"
    )
    conn.execute("INSERT INTO order_items VALUES (?, 1, ?, 1, 9.99)", (cursor.lastrowid, sku))
    conn.execute("COMMIT")


def max_write_rate(db: Path, seconds: float, synchronous: str, tag: str) -> float:
    """Closed loop, one connection: legacy orders per second for ``seconds``."""
    with contextlib.closing(_legacy_connection(db, synchronous)) as conn:
        done = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            _legacy_write(conn, f"{tag}-{done}")
            done += 1
    return done / elapsed


@dataclass
class SyncReport:
    settings: SyncSettings
    started: datetime.datetime
    command: str
    machine: dict[str, str]
    sent: int
    seen: int
    achieved_rate: float
    late_writes: int  # left more than 5 ms after their schedule
    lags: list[float]  # seconds, one per marker write
    overhead: dict[str, dict[str, list[float]]]  # synchronous → plain|capture → rates
    load: tuple[tuple[float, ...], tuple[float, ...]]


def _poll_markers(
    url: str, prefix: str, expect: Callable[[], int], stop: Callable[[], bool]
) -> dict[str, float]:
    """Poll PostgreSQL every ~2 ms for new marker rows; the wall time each was first seen."""
    seen: dict[str, float] = {}
    last = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while not (stop() and len(seen) >= expect()):
            rows = conn.execute(
                "SELECT order_id, sku FROM order_items WHERE order_id > %s ORDER BY order_id",
                (last,),
            ).fetchall()
            now = time.time()
            for order_id, sku in rows:
                last = max(last, int(order_id))
                if str(sku).startswith(prefix):
                    seen.setdefault(str(sku), now)
            time.sleep(0.002)
    return seen


def run_sync(settings: SyncSettings, *, command: str) -> SyncReport:
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="migrate-sync-") as tmp, start_postgres() as server:
        from changeover.migrate.capture import install_capture

        workdir = Path(tmp)
        db = make_app_db(workdir / "app.db", rows=settings.scale)
        plan = plan_schema(introspect(db))
        host = machine(server)

        # Trigger overhead: the same file twice, one with capture, one without; WAL on both.
        overhead: dict[str, dict[str, list[float]]] = {}
        plain, captured = workdir / "plain.db", workdir / "captured.db"
        shutil.copy(db, plain)
        shutil.copy(db, captured)
        with contextlib.closing(sqlite3.connect(plain)) as conn:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        install_capture(captured, plan)
        for synchronous in ("NORMAL", "FULL"):
            rates: dict[str, list[float]] = {"plain": [], "capture": []}
            for round_ in range(settings.overhead_rounds):
                order = [("plain", plain), ("capture", captured)]
                for key, path in order if round_ % 2 == 0 else order[::-1]:
                    rates[key].append(
                        max_write_rate(path, settings.overhead_seconds, synchronous, f"r{round_}")
                    )
            overhead[synchronous] = rates
            print(f"trigger overhead, synchronous={synchronous}: {rates}", flush=True)

        # Lag: copy --capture, 'migrate sync' as its own process, paced legacy writes.
        server.create_database("bench_sync")
        url = server.url_for("bench_sync")
        copy_database(db, url, plan, jobs=JOBS, capture=True)
        env = {**os.environ, "BENCH_TARGET_URL": url}
        sync = subprocess.Popen(
            [sys.executable, "-m", "changeover", "migrate", "sync", "--source", str(db)]
            + ["--target", "${BENCH_TARGET_URL}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        commits: dict[str, float] = {}
        sent = 0
        finished = False
        try:
            with contextlib.closing(_legacy_connection(db, "NORMAL")) as conn:
                _legacy_write(conn, "warmup-0")  # sync is up once this arrives
                deadline = time.monotonic() + 30
                with psycopg.connect(url, autocommit=True) as pg:
                    while not pg.execute(
                        "SELECT 1 FROM order_items WHERE sku = 'warmup-0'"
                    ).fetchone():
                        if sync.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(f"migrate sync did not start: {sync.stderr}")
                        time.sleep(0.01)
                with ThreadPoolExecutor(1) as pool:
                    poller = pool.submit(
                        _poll_markers, url, "lag-", lambda: len(commits), lambda: finished
                    )
                    late = 0
                    began = time.monotonic()
                    while True:
                        due = began + sent / settings.rate
                        if due - began >= settings.seconds:
                            break
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        elif delay < -0.005:
                            late += 1
                        sku = f"lag-{sent}"
                        _legacy_write(conn, sku)
                        commits[sku] = time.time()
                        sent += 1
                    elapsed = time.monotonic() - began
                    finished = True
                    seen = poller.result(timeout=60)
        finally:
            sync.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sync.communicate(timeout=15)
            if sync.poll() is None:
                sync.kill()
                sync.communicate()
        lags = [seen[sku] - at for sku, at in commits.items() if sku in seen]
        print(
            f"sync lag at {sent / elapsed:,.0f} writes/s: p50 {_percentile(lags, 0.5) * 1000:.1f} "
            f"ms, p95 {_percentile(lags, 0.95) * 1000:.1f} ms, "
            f"p99 {_percentile(lags, 0.99) * 1000:.1f} ms",
            flush=True,
        )
    return SyncReport(
        settings=settings,
        started=started,
        command=command,
        machine=host,
        sent=sent,
        seen=len(lags),
        achieved_rate=sent / elapsed,
        late_writes=late,
        lags=lags,
        overhead=overhead,
        load=(load_before, os.getloadavg()),
    )


def _loads(report_load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    before, after = report_load
    return (
        f"load average before {' / '.join(f'{x:.2f}' for x in before)}, after "
        f"{' / '.join(f'{x:.2f}' for x in after)}"
    )


def render_sync(report: SyncReport) -> str:
    s, m = report.settings, report.machine
    p50, p95, p99 = (_percentile(report.lags, q) for q in (0.5, 0.95, 0.99))
    lines = [
        SYNC_BEGIN,
        "### Sync lag at 1,000 legacy writes/s, and the capture triggers' cost (benchmark 3)",
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M} UTC with `{report.command}`; machine: "
        f"{m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {_loads(report.load)}; "
        f"{m['code']}; {m['postgres']} (throwaway server, fsync off).",
        "",
        f"- Legacy database: `make_app_db(rows={s.scale:,})`, copied with `copy_database(..., "
        "capture=True)`; then `changeover migrate sync` runs as its own process (the CLI, "
        "default settings) while this script writes orders straight into the SQLite file on "
        f"a fixed schedule: {s.rate:,.0f}/s for {s.seconds:g} s, one transaction per order "
        "(an order row and its item row, as the test app does), WAL, `synchronous=NORMAL`.",
        "- **Lag** = the wall time a marker row (its item's sku) is first seen in PostgreSQL "
        "minus the wall time its SQLite COMMIT returned. PostgreSQL is polled every ~2 ms by "
        "a thread of the writing process for rows past the last order id seen, so each lag "
        "includes up to ~2 ms (plus the query) of polling delay: an upper bound.",
        "",
        "| writes sent | achieved writes/s | sent > 5 ms late | markers seen in PostgreSQL | "
        "lag p50 | p95 | p99 | max |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report.sent:,} | {report.achieved_rate:,.0f} | {report.late_writes:,} | "
        f"{report.seen:,} | {p50 * 1000:.1f} ms | {p95 * 1000:.1f} ms | {p99 * 1000:.1f} ms | "
        f"{max(report.lags, default=float('nan')) * 1000:.1f} ms |",
        "",
        f"Goal p95 ≤ {GOAL_LAG_P95 * 1000:.0f} ms: {p95 * 1000:.1f} ms — "
        f"{_verdict(p95 <= GOAL_LAG_P95 and report.seen == report.sent)}.",
        f"Ambition p99 ≤ {GOAL_LAG_P99 * 1000:.0f} ms: {p99 * 1000:.1f} ms — "
        f"{_verdict(p99 <= GOAL_LAG_P99 and report.seen == report.sent)}.",
        "",
        "Trigger overhead: the same legacy write, closed loop on one connection, against two "
        "copies of the same file (WAL both), one with the capture triggers installed (no "
        f"applier running); {s.overhead_rounds} round(s) of {s.overhead_seconds:g} s each, "
        "order alternated; medians.",
        "",
        "| synchronous | without capture (writes/s) | with capture (writes/s) | slower by |",
        "|---|---:|---:|---:|",
    ]
    worst = 0.0
    for synchronous, rates in report.overhead.items():
        plain, capture = (_percentile(rates[k], 0.5) for k in ("plain", "capture"))
        slower = 1 - capture / plain if plain else float("nan")
        worst = max(worst, slower)
        lines.append(f"| {synchronous} | {plain:,.0f} | {capture:,.0f} | {slower * 100:.1f}% |")
    lines += [
        "",
        f"Goal trigger overhead ≤ {GOAL_TRIGGER_OVERHEAD * 100:.0f}% (worst of the two): "
        f"{worst * 100:.1f}% — {_verdict(worst <= GOAL_TRIGGER_OVERHEAD)}.",
        SYNC_END,
    ]
    return "\n".join(lines) + "\n"


# --- benchmark 4: the handoff's write pause through the built-in proxy --------------------------


@dataclass
class HandoffReport:
    settings: HandoffSettings
    started: datetime.datetime
    command: str
    machine: dict[str, str]
    results: list[Any]  # HandoffResult, in order: to new, back, to new, ...
    client_max: list[float]  # the slowest write due during each pause, as the client saw it
    writes: int
    acknowledged: int
    by_app: dict[str, int]  # acknowledged writes per app: both must have taken writes
    lost: int
    duplicated: int
    moved: int
    verify_equal: bool
    load: tuple[tuple[float, ...], tuple[float, ...]]


def run_handoff_bench(settings: HandoffSettings, *, command: str) -> HandoffReport:
    import asyncio

    from changeover.migrate.apply import ForwardApplier
    from changeover.migrate.handoff import handoff
    from changeover.migrate.verify import verify_database
    from changeover.traffic.builtin import BuiltinRouter
    from support.proxy_process import run_proxy, write_config
    from support.write_apps import (
        Writer,
        audit_writes,
        skus_in_postgres,
        skus_in_sqlite,
        start_app,
    )

    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="migrate-handoff-")))
        server = stack.enter_context(start_postgres())
        host = machine(server)
        db = make_app_db(workdir / "app.db", rows=settings.scale)
        plan = plan_schema(introspect(db))
        server.create_database("bench_handoff")
        url = server.url_for("bench_handoff")
        copy_database(db, url, plan, jobs=JOBS, capture=True)
        apps = {
            "legacy": [stack.enter_context(start_app("legacy", db=db))],
            "new": [stack.enter_context(start_app("new", pg_url=url))],
        }
        proxy = stack.enter_context(
            run_proxy(write_config(workdir, apps, hold={"max_hold": "10s"}))  # type: ignore[arg-type]
        )
        sync = subprocess.Popen(
            [sys.executable, "-m", "changeover", "migrate", "sync", "--source", str(db)]
            + ["--target", "${BENCH_TARGET_URL}"],
            env={**os.environ, "BENCH_TARGET_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        writer = Writer(
            proxy.url,
            rate=settings.rate,
            seconds=settings.between * (settings.handoffs + 2) + 60,
            prefix="bench",
        )
        results: list[Any] = []
        windows: list[tuple[float, float]] = []
        try:
            writer.start()
            for i in range(settings.handoffs):
                time.sleep(settings.between)

                async def one(to: str) -> Any:
                    router = BuiltinRouter(proxy.admin, proxy.token)
                    try:
                        return await handoff(db, url, plan, router, to=to)  # type: ignore[arg-type]
                    finally:
                        await router.close()

                result = asyncio.run(one("new" if i % 2 == 0 else "legacy"))
                ended = time.monotonic()
                results.append(result)
                windows.append((ended - result.pause_seconds, ended))
                print(
                    f"  handoff {i + 1} to {result.owner}: pause "
                    f"{result.pause_seconds * 1000:.0f} ms",
                    flush=True,
                )
            time.sleep(settings.between)
        finally:
            writer.stop()
            writer.join()
            sync.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sync.wait(15)
            if sync.poll() is None:
                sync.kill()
                sync.wait()
        if settings.handoffs % 2:  # end with legacy owning writes, as it began
            raise SystemExit("handoffs must be even (there and back)")
        with ForwardApplier(db, url, plan) as applier:
            applier.catch_up()
        equal = verify_database(db, url, plan).equal
        lost = duplicated = moved = 0
        for found in (skus_in_sqlite(db, "bench"), skus_in_postgres(url, "bench")):
            audit = audit_writes(writer.outcomes, found)
            lost += len(audit.lost)
            duplicated += len(audit.duplicated)
            moved += len(audit.moved)
        client_max = [
            max(
                (o.seconds for o in writer.outcomes if start - 0.05 <= o.sent <= end),
                default=0.0,
            )
            for start, end in windows
        ]
    return HandoffReport(
        settings=settings,
        started=started,
        command=command,
        machine=host,
        results=results,
        client_max=client_max,
        writes=len(writer.outcomes),
        acknowledged=len(writer.acknowledged),
        by_app={
            app: sum(1 for o in writer.acknowledged if o.app == app) for app in ("legacy", "new")
        },
        lost=lost,
        duplicated=duplicated,
        moved=moved,
        verify_equal=equal,
        load=(load_before, os.getloadavg()),
    )


def render_handoff(report: HandoffReport) -> str:
    s, m = report.settings, report.machine
    pauses = [r.pause_seconds for r in report.results]
    median = statistics.median(pauses) if pauses else float("nan")
    lines = [
        HANDOFF_BEGIN,
        "### Handoff write pause at 200 writes/s through the built-in proxy (benchmark 4)",
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M} UTC with `{report.command}`; machine: "
        f"{m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {_loads(report.load)}; "
        f"{m['code']}; {m['postgres']} (throwaway server, fsync off).",
        "",
        f"- `make_app_db(rows={s.scale:,})` copied with capture; the two order apps of "
        "`tests/support/write_apps.py` (legacy: stdlib HTTP server writing the SQLite file, "
        "`synchronous` default FULL; new: the same on PostgreSQL) behind `changeover proxy "
        "serve`, `changeover migrate sync` running as its own process, and a paced writer "
        f"(open model, 32 keep-alive connections) sending {s.rate:,.0f} POST /orders per "
        f"second through the proxy, each with its own sku. {s.handoffs} handoffs, alternately "
        f"to new and back to legacy, {s.between:g} s of writes between them, each "
        "`handoff(..., BuiltinRouter)` in this process.",
        "- **Pause** = `HandoffResult.pause_seconds`: from the hold request to the release "
        "answer. **Client max** = the slowest write due inside that pause, measured by the "
        "writer from its scheduled send time to its answer.",
        "",
        "| # | to | pause | client max | drained | keys verified in the pause | "
        "slowest step in the pause |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for i, (r, client) in enumerate(zip(report.results, report.client_max, strict=True)):
        inside = r.steps[1:] if r.steps else []
        slowest = max(inside, key=lambda st: st[1]) if inside else ("?", 0.0)
        lines.append(
            f"| {i + 1} | {r.owner} | {r.pause_seconds * 1000:.0f} ms | {client * 1000:.0f} ms "
            f"| {r.drained:,} | {r.verified_keys:,} | {slowest[0]} ({slowest[1] * 1000:.0f} ms) |"
        )
    zero = report.lost == 0 and report.duplicated == 0 and report.moved == 0
    lines += [
        "",
        f"Writes: {report.writes:,} sent, {report.acknowledged:,} acknowledged (2xx: "
        f"{report.by_app['legacy']:,} by legacy, {report.by_app['new']:,} by new); "
        f"acknowledged but missing (SQLite + PostgreSQL): {report.lost}; stored twice: "
        f"{report.duplicated}; under another id: {report.moved}; verify after the last "
        f"handoff: {'equal' if report.verify_equal else 'DIFFERENCES'}.",
        "",
        f"Goal pause ≤ {GOAL_PAUSE * 1000:.0f} ms (median of {len(pauses)}): "
        f"{median * 1000:.0f} ms (max {max(pauses, default=0) * 1000:.0f} ms) — "
        f"{_verdict(median <= GOAL_PAUSE)}.",
        f"Goal zero lost or duplicated writes: {_verdict(zero and report.verify_equal)}.",
        HANDOFF_END,
    ]
    return "\n".join(lines) + "\n"


# --- benchmark 2: full verify against reading both sides once ---------------------------------

VERIFY_BEGIN = (
    "<!-- migrate-bench:verify:begin (written by benchmarks/migrate_bench.py --write) -->"
)
VERIFY_END = "<!-- migrate-bench:verify:end -->"
GOAL_VERIFY_RATIO = 1.5  # full verify's seconds over the seconds of reading both sides once
VERIFY_LABELS = {
    "read": "read both sides once (1 process, sequential)",
    "verify1": "verify_database, full, jobs=1",
    "verify2": "verify_database, full, jobs=2 (default over 16 MB)",
}


@dataclass
class VerifyBenchReport:
    settings: Settings
    started: datetime.datetime
    command: str
    machine: dict[str, str]
    source_rows: int
    source_mb: float
    seconds: dict[str, list[float]]  # VERIFY_LABELS key → one per round
    copy_bytes: int  # the COPY text the read pass received from PostgreSQL
    verified_rows: int  # rows verify_database compared (every round must find all equal)
    load: tuple[tuple[float, ...], tuple[float, ...]]

    def median(self, key: str) -> float:
        return statistics.median(self.seconds[key])


def read_both_sides(db: Path, url: str, plan: PgPlan) -> tuple[int, int]:
    """Every table once from each side, sequentially, in verify's key order, no conversion.

    The statements are verify's own (``_Codec``): SQLite with ``text_factory = RawText`` and
    ``fetchmany`` like its merge; PostgreSQL ``COPY (SELECT … ORDER BY key) TO STDOUT`` taken as
    raw blocks. Returns the rows read from SQLite and the bytes of COPY output."""
    from changeover.migrate.values import RawText
    from changeover.migrate.verify import FETCH_ROWS, _Codec, _full_pg_sql

    rows = pg_bytes = 0
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    source.text_factory = RawText
    try:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
            for table in plan.tables:
                codec = _Codec(table, "public")
                result = source.execute(f"{codec.sqlite_select} ORDER BY {codec.sqlite_order}")
                while batch := result.fetchmany(FETCH_ROWS):
                    rows += len(batch)  # values stay as SQLite returned them
                with cursor.copy(_full_pg_sql(codec)) as copy:
                    for block in copy:
                        pg_bytes += len(block)
    finally:
        source.close()
    return rows, pg_bytes


def run_verify_bench(settings: Settings, *, command: str) -> VerifyBenchReport:
    from changeover.migrate.verify import verify_database

    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="migrate-verify-") as tmp, start_postgres() as server:
        db = make_app_db(Path(tmp) / "app.db", rows=settings.scale)
        plan = plan_schema(introspect(db))
        source_rows = sum(sqlite_counts(db, [t.source for t in plan.tables]).values())
        source_mb = db.stat().st_size / 2**20
        host = machine(server)
        server.create_database("bench_verify")
        url = server.url_for("bench_verify")
        copy_database(db, url, plan, jobs=JOBS)  # not timed
        _checkpoint(server)
        with server.connect("bench_verify") as conn:
            conn.execute("VACUUM ANALYZE")  # hint bits set before any timing, for every contender
        print(f"corpus: {source_rows:,} rows copied", flush=True)

        copy_bytes = verified = 0

        def read() -> None:
            nonlocal copy_bytes
            rows, copy_bytes = read_both_sides(db, url, plan)
            if rows != source_rows:
                raise SystemExit(f"read pass saw {rows:,} SQLite rows, not {source_rows:,}")

        def verify(jobs: int) -> None:
            nonlocal verified
            report = verify_database(db, url, plan, jobs=jobs)
            if not report.equal:
                raise SystemExit(f"verify (jobs={jobs}) found differences in a fresh copy")
            verified = sum(t.source_rows for t in report.tables)

        runners: dict[str, Callable[[], None]] = {
            "read": read,
            "verify1": lambda: verify(1),
            "verify2": lambda: verify(2),
        }
        read()  # warm-up, not timed: every contender then finds both sides in the page cache
        keys = list(runners)
        seconds: dict[str, list[float]] = {k: [] for k in keys}
        for round_ in range(settings.repeats):
            order = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]
            for key in order:
                began = time.perf_counter()
                runners[key]()
                seconds[key].append(time.perf_counter() - began)
                print(f"  round {round_ + 1} {key:8s} {seconds[key][-1]:7.2f} s", flush=True)
        server.drop_database("bench_verify")
    return VerifyBenchReport(
        settings=settings,
        started=started,
        command=command,
        machine=host,
        source_rows=source_rows,
        source_mb=source_mb,
        seconds=seconds,
        copy_bytes=copy_bytes,
        verified_rows=verified,
        load=(load_before, os.getloadavg()),
    )


def render_verify(report: VerifyBenchReport) -> str:
    s, m = report.settings, report.machine
    read = report.median("read")
    lines = [
        VERIFY_BEGIN,
        "### Full verify vs reading both sides once (benchmark 2)",
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M} UTC with `{report.command}`; machine: "
        f"{m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {_loads(report.load)}; "
        f"{m['code']}; {m['postgres']} (throwaway server, fsync off).",
        "",
        f"- `make_app_db(rows={s.scale:,})`: {report.source_rows:,} rows "
        f"({report.source_mb:.0f} MiB file) in 6 tables, copied with `copy_database(jobs={JOBS})` "
        "(not timed), then CHECKPOINT and VACUUM ANALYZE; one untimed read pass first, so every "
        f"contender finds both sides in the page cache. {s.repeats} round(s), order rotated; "
        "medians.",
        "- **read both sides once**: per table, SQLite then PostgreSQL, in one process with "
        "verify's own statements — SQLite `SELECT <every column> … ORDER BY <key>` "
        "(`text_factory = RawText`, `fetchmany(2000)`, values left as SQLite returns them) and "
        "`COPY (SELECT … ORDER BY <key>) TO STDOUT` streamed as raw blocks "
        f"({report.copy_bytes / 2**20:.0f} MiB), no decoding or conversion: the floor any "
        "row-by-row verify must pay.",
        "- **verify_database**: `verify_database(file, url, plan, jobs=N)` in full mode (merge "
        "of the two ordered streams, every value converted and canonicalised, result recorded "
        f"in PostgreSQL); every round compared {report.verified_rows:,} SQLite rows and found "
        "them all equal.",
        "",
        "| what | seconds (median) | spread min–max | rows/s | × read |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in VERIFY_LABELS.items():
        med, times = report.median(key), report.seconds[key]
        lines.append(
            f"| {label} | {med:.2f} | {min(times):.2f}–{max(times):.2f} | "
            f"{report.source_rows / med if med else 0:,.0f} | {med / read if read else 0:.2f} |"
        )
    one, two = report.median("verify1"), report.median("verify2")
    ratio1 = one / read if read else float("inf")
    ratio2 = two / read if read else float("inf")
    python_share = (one - read) / one if one else 0.0
    if two < one:
        split = f"jobs=2 splits it over two processes by table ({one / two:.2f}× faster here)"
    else:
        split = (
            "jobs=2 splits it over two processes by table but was not faster here: the two "
            "cores were shared with other work (load average above)"
        )
    lines += [
        "",
        f"Goal full verify ≤ {GOAL_VERIFY_RATIO:g}× the read: jobs=2 {ratio2:.2f}× — "
        f"{_verdict(ratio2 <= GOAL_VERIFY_RATIO)}; jobs=1 {ratio1:.2f}× — "
        f"{_verdict(ratio1 <= GOAL_VERIFY_RATIO)}.",
        "",
        f"Where the time goes: reading is {read:.2f} s of verify's {one:.2f} s at jobs=1; the "
        f"other {python_share * 100:.0f}% is Python work per value (conversion to PostgreSQL's "
        f"text form, canonicalising both sides, key parsing and the merge compare); {split}.",
        VERIFY_END,
    ]
    return "\n".join(lines) + "\n"


def write_block(
    path: Path,
    begin: str,
    end: str,
    block: str,
    after: tuple[str, ...] = (END, VERIFY_END, SYNC_END, HANDOFF_END),
) -> None:
    """Replace one block of ``path`` or insert it after the last of ``after`` present (the copy
    section or a block placed after it), before the hand-written notes."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block.rstrip("\n") + tail
    elif END in text:
        # after the copy section, or after the block of the other benchmark placed after it
        anchor = max((m for m in after if m in text), key=text.index)
        head, tail = text.split(anchor, 1)
        text = head + anchor + "\n\n" + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the section in --output")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--scale", type=int, help="make_app_db rows (7 × scale rows in all)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--only",
        default="copy,verify,sync,handoff",
        help="benchmarks to run, comma-separated: copy (1), verify (2), sync (3), handoff (4)",
    )
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - {"copy", "verify", "sync", "handoff"}
    if unknown or not only:
        raise SystemExit(
            f"migrate_bench: --only takes copy, verify, sync, handoff (got {args.only!r})"
        )
    settings = SMOKE if args.smoke else Settings()
    if args.scale is not None:
        settings = Settings(args.scale, settings.repeats)
    if args.repeats is not None:
        settings = Settings(settings.scale, args.repeats)
    if "copy" in only and shutil.which("pgloader") is None:
        raise SystemExit("migrate_bench: missing pgloader (apt-get install pgloader)")
    shown = " ".join(["python", "benchmarks/migrate_bench.py", *(argv or sys.argv[1:])])
    shown = re.sub(r" --output \S+", "", shown)
    code = Path(changeover.__file__).resolve().parents[2]
    if code != ROOT:  # measured a snapshot checkout (PYTHONPATH), not this working tree
        shown = f"PYTHONPATH={code}/src {shown}"
    if "copy" in only:
        report = run(settings, command=shown)
        section = render(report)
        print(section)
        if args.write:
            write_section(args.output, section, BEGIN, END)
    if "verify" in only:
        block = render_verify(run_verify_bench(settings, command=shown))
        print(block)
        if args.write:  # right after the copy section: blocks read in benchmark order
            write_block(args.output, VERIFY_BEGIN, VERIFY_END, block, after=(END,))
    if "sync" in only:
        sync_settings = SYNC_SMOKE if args.smoke else SyncSettings()
        block = render_sync(run_sync(sync_settings, command=shown))
        print(block)
        if args.write:
            write_block(args.output, SYNC_BEGIN, SYNC_END, block)
    if "handoff" in only:
        handoff_settings = HANDOFF_SMOKE if args.smoke else HandoffSettings()
        block = render_handoff(run_handoff_bench(handoff_settings, command=shown))
        print(block)
        if args.write:
            write_block(args.output, HANDOFF_BEGIN, HANDOFF_END, block)
    if args.write:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
