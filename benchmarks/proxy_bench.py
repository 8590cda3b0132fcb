"""Proxy benchmarks of issue 3: the built-in proxy against HAProxy 2.6 and nginx, in one run.

Against the same loopback backend: max throughput with wrk (repeated, median and spread),
latency at a steady rate with an open-model pacer (``pacer.py``: no coordinated omission),
and the built-in proxy's RSS over many requests. ``--write`` replaces the "Proxy (issue 3)"
section of BENCHMARKS.md with the measured tables, so every number there comes from a run.

    python benchmarks/proxy_bench.py --write     # the full run, about 8 minutes on 2 cores
    python benchmarks/proxy_bench.py --smoke     # seconds; what CI runs (numbers meaningless)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' real-server launch helpers
sys.path.insert(0, str(ROOT / "benchmarks"))  # report.py, also when imported

from report import cpu_model, write_section  # noqa: E402

from support.backends import BackendProcess, free_port, start_backend  # noqa: E402
from support.haproxy import run_haproxy  # noqa: E402
from support.nginx import run_nginx  # noqa: E402

PACER = Path(__file__).resolve().parent / "pacer.py"
BEGIN = "<!-- proxy-bench:begin (written by benchmarks/proxy_bench.py --write) -->"
END = "<!-- proxy-bench:end -->"
PROXY_CPU, LOAD_CPU = 0, 1  # the proxy under test alone on one core; load + backend on the other
PATH = "/head"  # 200 with a 9-byte body and Content-Length: the backend's cheapest answer
GOAL_RATIO, GOAL_ADDED_P99_MS, GOAL_RSS_BAND = 0.6, 1.0, 0.10


@dataclass(frozen=True)
class Settings:
    duration: int = 10  # seconds per wrk run
    repeats: int = 3
    threads: int = 1
    connections: int = 32
    rate: int = 5000  # requests/s of the open-model latency run
    latency_seconds: float = 10
    memory_requests: int = 1_000_000
    memory_chunk: int = 10  # seconds per wrk run of the memory test
    memory_max_seconds: int = 300
    targets: tuple[str, ...] = ("direct", "builtin", "haproxy", "haproxy-mt", "nginx")
    warmup: float = 1  # seconds of unrecorded load before each target's measurements


SMOKE = Settings(
    duration=1,
    repeats=1,
    connections=8,
    rate=500,
    latency_seconds=1,
    memory_requests=5_000,
    memory_chunk=1,
    memory_max_seconds=10,
    warmup=0.2,
)

LABELS = {
    "direct": "direct (no proxy)",
    "builtin": "built-in proxy (1 process)",
    "haproxy": "HAProxy 2.6, nbthread 1",
    "haproxy-mt": "HAProxy 2.6, nbthread 2 (unpinned, both cores)",
    "nginx": "nginx 1.22, worker_processes 1",
}
PINNED = {"builtin", "haproxy", "nginx"}  # on PROXY_CPU; haproxy-mt runs on both cores


# --- pinning ---------------------------------------------------------------------------------


def taskset() -> str | None:
    return shutil.which("taskset")


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` started on one core (as is when taskset is missing; the report says so)."""
    binary = taskset()
    return [binary, "-c", str(cpu), *argv] if binary else argv


def pin_process(pid: int, cpu: int) -> None:
    """Pin a running process, every thread and every child, to one core."""
    binary = taskset()
    if binary is None:
        return
    pids = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    for each in pids:
        subprocess.run([binary, "-a", "-p", "-c", str(cpu), str(each)], capture_output=True)


# --- targets ---------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    url: str
    pid: int | None = None  # the process whose RSS the memory test samples


@contextlib.contextmanager
def builtin_proxy(workdir: Path, backend: BackendProcess) -> Iterator[Target]:
    """``changeover proxy serve`` as its own process, on PROXY_CPU, in front of ``backend``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "backends": {"legacy": [{"name": "b1", "url": f"http://127.0.0.1:{backend.port}"}]},
        "health": {"path": PATH},
    }
    path = workdir / "proxy.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    argv = [sys.executable, "-m", "changeover.cli", "proxy", "serve", "--config", str(path)]
    log = workdir / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(pinned(PROXY_CPU, argv), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "listening" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"built-in proxy did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Target("builtin", f"http://127.0.0.1:{port}{PATH}", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def haproxy(workdir: Path, backend: BackendProcess, *, threads: int) -> Iterator[Target]:
    servers = {"b1": f"127.0.0.1:{backend.port}"}
    with run_haproxy(workdir, servers, balance="balance roundrobin", threads=threads) as server:
        if threads == 1:
            pin_process(server.process.pid, PROXY_CPU)
        key = "haproxy" if threads == 1 else "haproxy-mt"
        yield Target(key, f"{server.url}{PATH}", server.process.pid)


@contextlib.contextmanager
def nginx(workdir: Path, backend: BackendProcess) -> Iterator[Target]:
    def include(_status_port: int) -> str:
        # keepalive: reuse upstream connections, as HAProxy and the built-in proxy do
        return (
            "upstream changeover_app {\n"
            f"    server 127.0.0.1:{backend.port};\n"
            "    keepalive 64;\n"
            "}\n"
            "access_log off;\n"
        )

    with run_nginx(workdir, include, workers=1) as server:
        pin_process(server.process.pid, PROXY_CPU)
        yield Target("nginx", f"{server.url}{PATH}", server.process.pid)


@contextlib.contextmanager
def all_targets(
    workdir: Path, backend: BackendProcess, keys: tuple[str, ...]
) -> Iterator[list[Target]]:
    starters: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
        "builtin": lambda: builtin_proxy(workdir / "builtin", backend),
        "haproxy": lambda: haproxy(workdir / "haproxy", backend, threads=1),
        "haproxy-mt": lambda: haproxy(workdir / "haproxy-mt", backend, threads=2),
        "nginx": lambda: nginx(workdir / "nginx", backend),
    }
    with contextlib.ExitStack() as stack:
        targets = []
        for key in keys:
            if key == "direct":
                targets.append(Target("direct", f"http://127.0.0.1:{backend.port}{PATH}"))
            else:
                targets.append(stack.enter_context(starters[key]()))
        yield targets


# --- wrk -------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkResult:
    rps: float
    requests: int
    latency_ms: dict[str, float]  # 50, 75, 90, 99
    errors: int  # non-2xx/3xx answers plus socket errors


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise RuntimeError(f"wrk gave no result:\n{output}")
    latency = {
        pct: float(value) * _UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(float(rps.group(1)), int(total.group(1)), latency, errors)


def wrk_argv(settings: Settings, url: str, seconds: int) -> list[str]:
    return [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{seconds}s",
        "--latency",
        url,
    ]


def run_wrk(settings: Settings, url: str, seconds: int) -> WrkResult:
    argv = pinned(LOAD_CPU, wrk_argv(settings, url, seconds))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


@dataclass
class Throughput:
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def median(self) -> WrkResult:
        return sorted(self.runs, key=lambda r: r.rps)[len(self.runs) // 2]

    @property
    def spread(self) -> tuple[float, float]:
        return min(r.rps for r in self.runs), max(r.rps for r in self.runs)


def measure_throughput(settings: Settings, targets: list[Target]) -> dict[str, Throughput]:
    """Rounds over all targets (not target after target), so a noisy minute hits every one."""
    results = {t.key: Throughput() for t in targets}
    if settings.warmup >= 1:
        for target in targets:  # one short warm-up each: connections, pools, caches
            run_wrk(settings, target.url, int(settings.warmup))
    for round_ in range(settings.repeats):
        for target in targets:
            result = run_wrk(settings, target.url, settings.duration)
            results[target.key].runs.append(result)
            print(
                f"  throughput round {round_ + 1} {target.key:11s} {result.rps:10.0f} req/s "
                f"p99 {result.latency_ms.get('99', float('nan')):.2f} ms",
                flush=True,
            )
    return results


# --- open-model latency ----------------------------------------------------------------------


def pacer_argv(settings: Settings, url: str) -> list[str]:
    return [
        sys.executable,
        str(PACER),
        url,
        "--rate",
        str(settings.rate),
        "--seconds",
        f"{settings.latency_seconds:g}",
        "--warmup",
        f"{settings.warmup:g}",
    ]


def measure_latency(settings: Settings, targets: list[Target]) -> dict[str, dict[str, Any]]:
    """Interleaved rounds like the throughput; per target the round with the median p99."""
    rounds: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
    for round_ in range(settings.repeats):
        for target in targets:
            argv = pinned(LOAD_CPU, pacer_argv(settings, target.url))
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=settings.latency_seconds + 60
            )
            if done.returncode != 0:
                raise RuntimeError(f"pacer failed on {target.key}: {done.stderr.strip()[-2000:]}")
            result: dict[str, Any] = json.loads(done.stdout)
            result.pop("histogram", None)
            rounds[target.key].append(result)
            lat = result["latency_us"]
            print(
                f"  latency round {round_ + 1} {target.key:11s} {result['achieved_rate']:7.0f}/s "
                f"p50 {lat['p50']} µs p99 {lat['p99']} µs p99.9 {lat['p999']} µs "
                f"late {result['late_sends']}",
                flush=True,
            )
    results: dict[str, dict[str, Any]] = {}
    for key, runs in rounds.items():
        ordered = sorted(runs, key=lambda r: r["latency_us"]["p99"])
        median = dict(ordered[len(ordered) // 2])
        median["p99_spread_us"] = (
            ordered[0]["latency_us"]["p99"],
            ordered[-1]["latency_us"]["p99"],
        )
        median["late_sends_all"] = sum(r["late_sends"] for r in runs)
        median["errors_all"] = sum(r["errors"] for r in runs)
        median["unanswered_all"] = sum(r["unanswered"] for r in runs)
        median["min_achieved"] = min(r["achieved_rate"] for r in runs)
        results[key] = median
    return results


# --- memory ----------------------------------------------------------------------------------


@dataclass
class Memory:
    requests: int
    seconds: float
    errors: int
    start_mib: float  # before any load
    warm_mib: float  # at the end of the first chunk (warm-up)
    peak_mib: float
    end_mib: float
    low_after_warm_mib: float
    high_after_warm_mib: float

    @property
    def deviation(self) -> float:
        """Largest relative distance of a post-warm-up sample from the warm-up value."""
        return max(
            abs(self.high_after_warm_mib - self.warm_mib),
            abs(self.low_after_warm_mib - self.warm_mib),
        ) / max(self.warm_mib, 1e-9)


def measure_memory(settings: Settings, workdir: Path, backend: BackendProcess) -> Memory:
    """A fresh built-in proxy; wrk in chunks until ``memory_requests``, RSS sampled throughout."""
    with builtin_proxy(workdir / "memory", backend) as target:
        assert target.pid is not None
        proc = psutil.Process(target.pid)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    samples.append((time.monotonic(), proc.memory_info().rss / 2**20))
                stop.wait(0.25)

        start_mib = proc.memory_info().rss / 2**20
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.monotonic()
        total = errors = 0
        warm_end: float | None = None
        try:
            while total < settings.memory_requests:
                if time.monotonic() - began > settings.memory_max_seconds:
                    break
                result = run_wrk(settings, target.url, settings.memory_chunk)
                total += result.requests
                errors += result.errors
                if warm_end is None:
                    warm_end = time.monotonic()
                print(f"  memory {total:>9,} requests, RSS {samples[-1][1]:.1f} MiB", flush=True)
        finally:
            stop.set()
            sampler.join()
        elapsed = time.monotonic() - began
    assert warm_end is not None
    warm = [rss for t, rss in samples if t <= warm_end]
    after = [rss for t, rss in samples if t > warm_end] or warm[-1:]
    return Memory(
        requests=total,
        seconds=elapsed,
        errors=errors,
        start_mib=start_mib,
        warm_mib=warm[-1],
        peak_mib=max(rss for _, rss in samples),
        end_mib=samples[-1][1],
        low_after_warm_mib=min(after),
        high_after_warm_mib=max(after),
    )


# --- report ----------------------------------------------------------------------------------


@dataclass
class Report:
    settings: Settings
    started: datetime.datetime
    machine: dict[str, str]
    load_before: tuple[float, float, float]
    throughput: dict[str, Throughput]
    latency: dict[str, dict[str, Any]]
    memory: Memory | None
    command: str


def machine() -> dict[str, str]:
    model = cpu_model()
    versions = {}
    for name, argv in (
        ("haproxy", ["haproxy", "-v"]),
        ("nginx", ["nginx", "-v"]),
        ("wrk", ["wrk", "-v"]),
    ):
        binary = shutil.which(name) or f"/usr/sbin/{name}"
        with contextlib.suppress(OSError):
            done = subprocess.run([binary, *argv[1:]], capture_output=True, text=True)
            text = (done.stdout + done.stderr).strip().splitlines()
            versions[name] = text[0] if text else "?"
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src/changeover/proxy"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    code = f"commit {commit or '?'}" + (
        " plus uncommitted changes in src/changeover/proxy" if dirty else ""
    )
    return {
        "code": code,
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
    }


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _us_as_ms(value: float) -> str:
    return f"{value / 1000:.3f}"


def render(report: Report) -> str:
    s = report.settings
    m = report.machine
    lines = [
        BEGIN,
        "## Proxy (issue 3)",
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M} UTC with `{report.command}`.",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), kernel {m['kernel']}, "
        f"Python {m['python']}; load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in report.load_before)} (shared, noisy machine).",
        f"- Built-in proxy code measured: {m['code']}.",
        f"- Peers: {m.get('haproxy', '?')}; {m.get('nginx', '?')}; {m.get('wrk', '?')}.",
        "- Backend: one `tests/support/backends.py` process (asyncio + uvloop, HTTP/1.1 "
        f"keep-alive), `GET {PATH}` answering 200 with a 9-byte body. The same backend serves "
        "every row, in the same run.",
        f"- Layout: {'pinned with `taskset`' if taskset() else 'NOT pinned (no taskset)'}: the "
        f"proxy under test alone on CPU {PROXY_CPU}; the load generator and the backend share "
        f"CPU {LOAD_CPU}. HAProxy nbthread 2 is left unpinned on both cores (for reference "
        "only; ratios are to HAProxy nbthread 1). nginx and HAProxy keep upstream connections "
        "alive (`keepalive 64`; HAProxy's default reuse), as the built-in proxy's pool does.",
        "",
        "### Max throughput",
        "",
        f"`taskset -c {LOAD_CPU} wrk -t{s.threads} -c{s.connections} -d{s.duration}s --latency "
        f"URL`, {s.repeats} rounds over all targets (after a {s.warmup:g} s warm-up each); "
        "the median round "
        "is shown, with the spread (min–max) of requests/s and the latency percentiles of the "
        "median round (wrk's closed-model latency: load adapts to the server).",
        "",
        "| target | req/s (median) | spread min–max | × HAProxy | p50 ms | p75 ms | p90 ms | "
        "p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = report.throughput.get("haproxy")
    base_rps = base.median.rps if base else None
    for key, tp in report.throughput.items():
        med = tp.median
        low, high = tp.spread
        shown_ratio = f"{med.rps / base_rps:.2f}" if base_rps else "–"
        pct = med.latency_ms
        errors = sum(r.errors for r in tp.runs)
        lines.append(
            f"| {LABELS[key]} | {med.rps:,.0f} | {low:,.0f}–{high:,.0f} | {shown_ratio} | "
            + " | ".join(_ms(pct.get(p, float("nan"))) for p in ("50", "75", "90", "99"))
            + f" | {errors} |"
        )
    lines.append("")
    builtin = report.throughput.get("builtin")
    if builtin and base_rps:
        ratio = builtin.median.rps / base_rps
        verdict = "**met**" if ratio >= GOAL_RATIO else "**NOT met**"
        lines.append(
            f"Goal built-in ≥ {GOAL_RATIO}× HAProxy (nbthread 1) requests/s: {ratio:.2f}× — "
            f"{verdict}."
        )
        low = builtin.spread[0] / base.spread[1] if base else ratio
        high = builtin.spread[1] / base.spread[0] if base else ratio
        lines.append(
            f"Across the spreads the ratio lies between {low:.2f}× and {high:.2f}×. "
            "Where HAProxy and nginx are close to direct, they are limited by the backend and "
            f"wrk sharing CPU {LOAD_CPU}, not by their own core: their ratio then understates "
            "how far ahead they are."
        )
        lines.append("")

    lines += [
        f"### Latency at a steady {s.rate:,} requests/s (open model)",
        "",
        f"`taskset -c {LOAD_CPU} python benchmarks/pacer.py URL --rate {s.rate} --seconds "
        f"{s.latency_seconds:g} --warmup {s.warmup:g}`: request i is due at start + i/rate "
        "whatever happened before; latency is measured from that scheduled time (no coordinated "
        "omission); a request finding no idle connection waits (its clock running) while "
        "another opens. The warm-up is not recorded. Late sends (> 1 ms after "
        "schedule), errors and unanswered requests are counted (summed over the rounds). "
        f"{s.repeats} interleaved rounds; the round with the median p99 is shown, with the "
        "spread of p99 over the rounds.",
        "",
        "| target | achieved req/s | p50 ms | p99 ms | p99 spread ms | p99.9 ms | max ms | "
        "added p99 ms | late sends | errors | unanswered | pacer lag p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    direct = report.latency.get("direct")
    for key, res in report.latency.items():
        lat = res["latency_us"]
        low_ms, high_ms = (_us_as_ms(v) for v in res["p99_spread_us"])
        added = (
            _us_as_ms(lat["p99"] - direct["latency_us"]["p99"])
            if direct and key != "direct"
            else "–"
        )
        lines.append(
            f"| {LABELS[key]} | {res['achieved_rate']:,.0f} | {_us_as_ms(lat['p50'])} | "
            f"{_us_as_ms(lat['p99'])} | {low_ms}–{high_ms} | {_us_as_ms(lat['p999'])} | "
            f"{_us_as_ms(lat['max'])} | {added} | {res['late_sends_all']} | "
            f"{res['errors_all']} | {res['unanswered_all']} | "
            f"{_us_as_ms(res['send_lag_us']['p99'])} |"
        )
    lines.append("")
    held = all(
        r["min_achieved"] >= 0.99 * s.rate and r["unanswered_all"] == 0
        for r in report.latency.values()
    )
    lines.append(
        f"The pacer {'held' if held else 'did NOT hold'} {s.rate:,} requests/s on every target "
        "in every round (achieved = answered and recorded per second of the measured window)."
    )
    mine = report.latency.get("builtin")
    if mine and direct:
        added_ms = (mine["latency_us"]["p99"] - direct["latency_us"]["p99"]) / 1000
        verdict = "**met**" if added_ms <= GOAL_ADDED_P99_MS and held else "**NOT met**"
        lines.append(
            f"Goal built-in added p99 ≤ {GOAL_ADDED_P99_MS:g} ms over direct: "
            f"{added_ms:.3f} ms — {verdict}."
        )
    lines.append("")

    mem = report.memory
    if mem is not None:
        flat = mem.deviation <= GOAL_RSS_BAND
        lines += [
            "### Memory of the built-in proxy",
            "",
            f"A fresh built-in proxy; `taskset -c {LOAD_CPU} wrk -t{s.threads} "
            f"-c{s.connections} -d{s.memory_chunk}s` repeated until {s.memory_requests:,} "
            f"requests (or {s.memory_max_seconds} s); RSS sampled with psutil every 0.25 s. "
            "Warm-up is the first run.",
            "",
            "| requests | seconds | errors | RSS start MiB | after warm-up | peak | end | "
            "min–max after warm-up | largest deviation |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {mem.requests:,} | {mem.seconds:.0f} | {mem.errors} | {mem.start_mib:.1f} | "
            f"{mem.warm_mib:.1f} | {mem.peak_mib:.1f} | {mem.end_mib:.1f} | "
            f"{mem.low_after_warm_mib:.1f}–{mem.high_after_warm_mib:.1f} | "
            f"{mem.deviation:+.1%} |",
            "",
            f"Goal RSS flat within ±{GOAL_RSS_BAND:.0%} after warm-up over "
            f"{s.memory_requests:,} requests: "
            + (
                "**met**."
                if flat and mem.requests >= s.memory_requests
                else f"**NOT met** ({mem.requests:,} requests, deviation {mem.deviation:.1%})."
            ),
            "",
        ]
    lines += [
        "### Noise",
        "",
        "Two shared virtual cores: other processes (the test suites of parallel work) may run "
        "during a measurement, which is why every throughput figure is the median of "
        f"{s.repeats} interleaved rounds with its spread shown, and why only ratios measured in "
        "the same run are compared. Latency percentiles above p99 on this machine are "
        "dominated by scheduler noise; compare p50 and p99.",
        END,
    ]
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------


def check_tools(settings: Settings) -> None:
    needed = {"wrk": "wrk"}
    if any(k.startswith("haproxy") for k in settings.targets):
        needed["haproxy"] = "haproxy"
    if "nginx" in settings.targets:
        needed["nginx"] = "nginx"
    missing = [
        f"{name} (apt-get install {pkg})"
        for name, pkg in needed.items()
        if not (shutil.which(name) or os.access(f"/usr/sbin/{name}", os.X_OK))
    ]
    if missing:
        raise SystemExit(f"proxy_bench: missing {', '.join(missing)}")


def run(settings: Settings, phases: set[str], *, command: str) -> Report:
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp, start_backend("b1") as backend:
        workdir = Path(tmp)
        pin_process(backend.proc.pid, LOAD_CPU)
        with all_targets(workdir, backend, settings.targets) as targets:
            throughput, latency = {}, {}
            if "throughput" in phases:
                print("throughput (wrk):", flush=True)
                throughput = measure_throughput(settings, targets)
            if "latency" in phases:
                print(f"latency at {settings.rate}/s (open model):", flush=True)
                paced = [t for t in targets if t.key != "haproxy-mt"]
                latency = measure_latency(settings, paced)
        mem = None
        if "memory" in phases:
            print("memory of the built-in proxy:", flush=True)
            mem = measure_memory(settings, workdir, backend)
    return Report(settings, started, machine(), load_before, throughput, latency, mem, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the section in --output")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--duration", type=int, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--rate", type=int, help="requests/s of the latency run")
    parser.add_argument("--memory-requests", type=int)
    parser.add_argument(
        "--phases",
        default="throughput,latency,memory",
        help="comma-separated subset of throughput,latency,memory (to investigate one)",
    )
    parser.add_argument("--targets", help="comma-separated: " + ",".join(LABELS))
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    overrides: dict[str, Any] = {}
    for name in ("duration", "repeats", "rate", "memory_requests"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.targets:
        keys = tuple(k.strip() for k in args.targets.split(","))
        unknown = [k for k in keys if k not in LABELS]
        if unknown:
            parser.error(f"unknown target {unknown[0]!r} (known: {', '.join(LABELS)})")
        overrides["targets"] = keys
    if overrides:
        settings = Settings(**{**settings.__dict__, **overrides})
    check_tools(settings)
    shown = " ".join(["python", "benchmarks/proxy_bench.py", *(argv or sys.argv[1:])])
    shown = re.sub(r" --output \S+", "", shown)
    phases = {p.strip() for p in args.phases.split(",")}
    unknown_phase = phases - {"throughput", "latency", "memory"}
    if unknown_phase:
        parser.error(f"unknown phase {sorted(unknown_phase)[0]!r}")
    report = run(settings, phases, command=shown)
    section = render(report)
    print(section)
    if args.write:
        write_section(args.output, section, BEGIN, END)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
