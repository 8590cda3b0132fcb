"""The benchmarks in their smoke sizes (about 20 s each): they run end to end and write tables.

Only the shape is asserted (every target measured, numbers parsed, goals stated, the rest of
BENCHMARKS.md kept), never performance: the smoke size is too short for meaningful numbers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from changeover.services import find_postgres_bin_dir
from support.binaries import missing, require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "proxy_bench.py"
BEGIN = "<!-- proxy-bench:begin (written by benchmarks/proxy_bench.py --write) -->"
END = "<!-- proxy-bench:end -->"
TARGETS = (
    "direct (no proxy)",
    "built-in proxy (1 process)",
    "HAProxy 2.6, nbthread 1",
    "HAProxy 2.6, nbthread 2",
    "nginx 1.22, worker_processes 1",
)


def _row(text: str, label: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| {label}")]
    assert rows, f"no row for {label!r} in:\n{text}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_smoke_benchmark_writes_its_tables_and_keeps_other_sections(tmp_path: Path) -> None:
    for binary, package in (("wrk", "wrk"), ("haproxy", "haproxy"), ("nginx", "nginx")):
        require_binary(binary, package, extra_dirs=("/usr/sbin",))
    output = tmp_path / "BENCHMARKS.md"
    stale = f"{BEGIN}\n## Proxy (issue 3)\n\nstale numbers\n{END}\n"
    output.write_text(f"# Benchmarks\n\n## Other\n\nkeep me\n\n{stale}\n## After\n")

    argv = [sys.executable, str(SCRIPT), "--smoke", "--write", "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    text = output.read_text(encoding="utf-8")
    assert "keep me" in text and "## After" in text
    assert "stale numbers" not in text
    assert text.count("## Proxy (issue 3)") == 1
    for label in TARGETS:
        cells = _row(text.split("### Latency")[0], label)
        assert float(cells[1].replace(",", "")) > 0, cells  # requests/s
    for label in TARGETS[:3] + TARGETS[4:]:  # the latency table has no HAProxy nbthread 2
        cells = _row(text.split("### Latency")[1], label)
        assert float(cells[1].replace(",", "")) > 0, cells  # achieved requests/s
    assert re.search(r"Goal built-in ≥ 0\.6× HAProxy .*\*\*(met|NOT met)\*\*", text)
    assert re.search(r"Goal built-in added p99 ≤ 1 ms .*\*\*(met|NOT met)\*\*", text)
    assert re.search(r"Goal RSS flat .*\*\*(met|NOT met)", text)
    assert re.search(r"Machine: \d+ cores \(.+\), kernel ", text)


MIGRATE_SCRIPT = ROOT / "benchmarks" / "migrate_bench.py"
MIGRATE_BEGIN = "<!-- migrate-bench:begin (written by benchmarks/migrate_bench.py --write) -->"
MIGRATE_END = "<!-- migrate-bench:end -->"
MIGRATE_CONTENDERS = (
    "changeover copy_database (jobs=2)",
    "pgloader (with the CAST workaround)",
    "ceiling: psql \\copy of pre-made files (2 processes)",
)


def test_migrate_smoke_benchmark_measures_every_contender_and_keeps_other_sections(
    tmp_path: Path,
) -> None:
    require_binary("pgloader", "pgloader")
    if find_postgres_bin_dir() is None:
        missing("PostgreSQL", "postgresql")
    output = tmp_path / "BENCHMARKS.md"
    stale = f"{MIGRATE_BEGIN}\n## Data migration (issue 4)\n\nstale numbers\n{MIGRATE_END}\n"
    output.write_text(f"# Benchmarks\n\n{BEGIN}\nproxy numbers\n{END}\n\n{stale}\n## After\n")

    argv = [sys.executable, str(MIGRATE_SCRIPT), "--smoke", "--write", "--output", str(output)]
    argv += ["--only", "copy"]  # benchmarks 3 and 4 have their own smoke test below
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    text = output.read_text(encoding="utf-8")
    assert "proxy numbers" in text and "## After" in text
    assert "stale numbers" not in text
    assert text.count("## Data migration (issue 4)") == 1
    timings = text.split("### What each contender")[0]
    for label in MIGRATE_CONTENDERS:
        cells = _row(timings, label)
        assert cells[1] == "21,000", cells  # every contender loaded every row of the corpus
        assert float(cells[4].replace(",", "")) > 0, cells  # rows/s
    fidelity = text.split("### What each contender")[1]
    assert _row(fidelity, MIGRATE_CONTENDERS[0])[1:4] == ["none", "none", "none"]
    assert re.search(r"Goal ours ≥ 2× pgloader's rows/s: [\d.]+× — \*\*(met|NOT met)\*\*", text)
    assert re.search(r"Goal ours ≥ 0\.7× the ceiling's rows/s: [\d.]+× — \*\*(met|NOT met)", text)
    assert re.search(r"Machine: \d+ cores \(.+\), [\d.]+ GiB RAM", text)


SYNC_BEGIN = "<!-- migrate-bench:sync:begin (written by benchmarks/migrate_bench.py --write) -->"
HANDOFF_END = "<!-- migrate-bench:handoff:end -->"


def _migrate_smoke(tmp_path: Path, only: str) -> str:
    """Run one of benchmarks 3/4 in its smoke size into a BENCHMARKS.md with a copy section,
    a stale block and hand-written notes after it; the file's text afterwards."""
    if find_postgres_bin_dir() is None:
        missing("PostgreSQL", "postgresql")
    output = tmp_path / "BENCHMARKS.md"
    copy = f"{MIGRATE_BEGIN}\n## Data migration (issue 4)\n\ncopy numbers\n{MIGRATE_END}\n"
    stale = f"{SYNC_BEGIN}\nstale lag\n<!-- migrate-bench:sync:end -->"
    output.write_text(f"# Benchmarks\n\n{copy}\n{stale}\n\n### Reading (by hand)\n\nnotes\n")

    argv = [sys.executable, str(MIGRATE_SCRIPT), "--smoke", "--only", only, "--write"]
    argv += ["--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    text = output.read_text(encoding="utf-8")
    assert "copy numbers" in text and text.index(MIGRATE_END) < text.index(SYNC_BEGIN)
    assert text.rstrip().endswith("notes")  # hand-written notes stay after the blocks
    return text


def test_migrate_sync_smoke_benchmark_measures_lag_and_trigger_cost(tmp_path: Path) -> None:
    text = _migrate_smoke(tmp_path, "sync")
    assert "stale lag" not in text and HANDOFF_END not in text
    lag = _row(text, "3,000")  # 1,000 writes/s for 3 s, every marker seen in PostgreSQL
    assert lag[3] == "3,000", lag
    assert all(cell.endswith(" ms") for cell in lag[4:8]), lag
    assert re.search(r"Goal p95 ≤ 100 ms: [\d.]+ ms — \*\*(met|NOT met)\*\*", text)
    assert re.search(r"Goal trigger overhead ≤ 20% .*: -?[\d.]+% — \*\*(met|NOT met)", text)
    for synchronous in ("NORMAL", "FULL"):
        assert float(_row(text, synchronous)[2].replace(",", "")) > 0


def test_migrate_handoff_smoke_benchmark_loses_no_write_and_reports_the_pause(
    tmp_path: Path,
) -> None:
    text = _migrate_smoke(tmp_path, "handoff")
    assert "stale lag" in text  # another benchmark's block is left alone
    assert text.index(SYNC_BEGIN) < text.index(HANDOFF_END) < text.index("### Reading (by hand)")
    assert re.search(r"\| 1 \| new \| \d+ ms \|", text) and re.search(r"\| 2 \| legacy \|", text)
    assert re.search(r"Goal pause ≤ 250 ms \(median of 2\): \d+ ms .*\*\*(met|NOT met)", text)
    # Zero lost or duplicated writes is not a performance number: the smoke run asserts it.
    taken = re.search(r"acknowledged \(2xx: ([\d,]+) by legacy, ([\d,]+) by new\)", text)
    assert taken and all(int(n.replace(",", "")) > 50 for n in taken.groups()), taken
    assert "missing (SQLite + PostgreSQL): 0; stored twice: 0; under another id: 0" in text
    assert "verify after the last handoff: equal" in text
    assert "Goal zero lost or duplicated writes: **met**" in text


VERIFY_BEGIN = (
    "<!-- migrate-bench:verify:begin (written by benchmarks/migrate_bench.py --write) -->"
)


def test_migrate_verify_smoke_benchmark_times_verify_against_one_read_after_the_copy_block(
    tmp_path: Path,
) -> None:
    text = _migrate_smoke(tmp_path, "verify")
    assert "stale lag" in text  # another benchmark's block is left alone
    # Benchmark order: copy, verify, then the blocks of benchmarks 3 and 4.
    assert text.index(MIGRATE_END) < text.index(VERIFY_BEGIN) < text.index(SYNC_BEGIN)
    assert text.count(VERIFY_BEGIN) == 1
    assert "compared 21,000 SQLite rows and found them all equal" in text
    read = _row(text, "read both sides once")
    assert float(read[1]) > 0 and read[4] == "1.00", read
    for label in ("verify_database, full, jobs=1", "verify_database, full, jobs=2"):
        cells = _row(text, label)
        assert float(cells[3].replace(",", "")) > 0, cells  # rows/s
        assert float(cells[4]) > 0, cells  # × read
    assert re.search(
        r"Goal full verify ≤ 1\.5× the read: jobs=2 [\d.]+× — \*\*(met|NOT met)\*\*; "
        r"jobs=1 [\d.]+× — \*\*(met|NOT met)\*\*",
        text,
    )
    assert re.search(r"Where the time goes: reading is [\d.]+ s of verify's [\d.]+ s", text)


DETECTION_SCRIPT = ROOT / "benchmarks" / "detection.py"
DETECTION_BEGIN = "<!-- detection-bench:begin (written by benchmarks/detection.py --write) -->"
DETECTION_END = "<!-- detection-bench:end -->"


def test_detection_smoke_benchmark_times_every_policy_and_keeps_other_sections(
    tmp_path: Path,
) -> None:
    output = tmp_path / "BENCHMARKS.md"
    stale = f"{DETECTION_BEGIN}\n## Canary analysis\n\nstale numbers\n{DETECTION_END}\n"
    output.write_text(f"# Benchmarks\n\n{BEGIN}\nproxy numbers\n{END}\n\n{stale}\n## After\n")

    argv = [sys.executable, str(DETECTION_SCRIPT), "--smoke", "--write", "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    text = output.read_text(encoding="utf-8")
    assert "proxy numbers" in text and "## After" in text and "stale numbers" not in text
    assert text.count("## Canary analysis (detection, issue 5)") == 1
    for canary in ("5% errors", "2% errors", "1.5% errors", "p95 +50% (120 ms)"):
        for policy in ("changeover", "(a) fixed threshold", "(b) Argo Rollouts"):
            cells = _row(text, f"{canary} | {policy}")
            assert re.fullmatch(r"\d+/20", cells[2]), cells  # every run simulated
            assert cells[3].endswith(" s"), cells  # the smoke canaries are all caught
        assert re.match(r"[\d,]+ requests = [\d.]+ s", _row(text, f"{canary} | (c) SPRT")[3])
    assert re.search(r"\| healthy .* \| changeover .* \| \d+/20 \| [\d.]+% \|", text)
    assert re.search(r"Goal false rollback ≤ 1% .*\*\*(met|NOT met)\*\*", text)
    assert re.search(r"Goal median detection of the 5% canary ≤ 2 s: .*\*\*(met|NOT met)", text)
    assert re.search(r"Goal within 1\.5× of the SPRT floor .*\*\*(met|NOT met)", text)
    assert re.search(r"Goal ≥ 30× faster than \(a\) .*\*\*(met|NOT met)", text)
    assert re.search(r"Machine: \d+ cores \(.+\), kernel ", text)


LOADGEN_SCRIPT = ROOT / "benchmarks" / "loadgen_bench.py"
LOADGEN_BEGIN = "<!-- loadgen-bench:begin (written by benchmarks/loadgen_bench.py --write) -->"
LOADGEN_END = "<!-- loadgen-bench:end -->"


def test_loadgen_smoke_benchmark_measures_both_generators_and_keeps_other_sections(
    tmp_path: Path,
) -> None:
    for binary in ("wrk", "nginx"):
        require_binary(binary, binary, extra_dirs=("/usr/sbin",))
    output = tmp_path / "BENCHMARKS.md"
    stale = f"{LOADGEN_BEGIN}\n## Load generator (issue 6)\n\nstale numbers\n{LOADGEN_END}\n"
    output.write_text(f"# Benchmarks\n\n{BEGIN}\nproxy numbers\n{END}\n\n{stale}\n## After\n")

    argv = [sys.executable, str(LOADGEN_SCRIPT), "--smoke", "--write", "--output", str(output)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    text = output.read_text(encoding="utf-8")
    assert "proxy numbers" in text and "## After" in text and "stale numbers" not in text
    assert text.count("## Load generator (issue 6)") == 1
    wrk = _row(text, "wrk (C, -t2)")
    ours = _row(text, "changeover loadtest")
    assert float(wrk[1].replace(",", "")) > 0 and float(ours[1].replace(",", "")) > 0
    assert float(ours[3]) > 0  # × wrk
    held = _row(text, "500 | 1 (default)")  # the smoke size's steady rate: one process
    assert float(held[2].replace(",", "")) > 0 and held[4] == "1,000", held  # every request sent
    assert _row(text, "500 | 1 (`--processes 1`)")[4] == "1,000"
    assert re.search(
        r"Goal achieved rate within ±1% of 500 requests/s .*\*\*(met|NOT met)\*\*", text
    )
    assert "wrk has no row here: it is a closed-model generator" in text
    assert re.search(r"Machine: \d+ cores \(.+\), kernel ", text)
