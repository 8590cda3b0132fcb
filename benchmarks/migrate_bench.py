"""Data migration benchmark 1 of issue 4: our bulk copy against pgloader and ``psql \\copy``.

One SQLite file (the app corpus of ``tests/migrate/corpus.py``) into one throwaway PostgreSQL, in
one run: ``copy_database(jobs=2)``, pgloader (Debian package) and the ceiling, ``psql \\copy`` of
the same rows pre-exported to COPY text files. Each contender gets a fresh database per round;
afterwards every table is compared with SQLite (rows, non-NULL counts, sums, text lengths).
``--write`` replaces the "Data migration" section of BENCHMARKS.md with the measured tables.

    python benchmarks/migrate_bench.py --write     # 1.05M rows, 3 rounds, a few minutes
    python benchmarks/migrate_bench.py --smoke     # seconds; what CI runs (numbers meaningless)
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' corpus generator

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
    model, ram = "unknown", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
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


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it), keeping the rest."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the section in --output")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--scale", type=int, help="make_app_db rows (7 × scale rows in all)")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    if args.scale is not None:
        settings = Settings(args.scale, settings.repeats)
    if args.repeats is not None:
        settings = Settings(settings.scale, args.repeats)
    if shutil.which("pgloader") is None:
        raise SystemExit("migrate_bench: missing pgloader (apt-get install pgloader)")
    shown = " ".join(["python", "benchmarks/migrate_bench.py", *(argv or sys.argv[1:])])
    shown = re.sub(r" --output \S+", "", shown)
    code = Path(changeover.__file__).resolve().parents[2]
    if code != ROOT:  # measured a snapshot checkout (PYTHONPATH), not this working tree
        shown = f"PYTHONPATH={code}/src {shown}"
    report = run(settings, command=shown)
    section = render(report)
    print(section)
    if args.write:
        write_section(args.output, section)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
