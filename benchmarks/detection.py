"""Detection benchmark of issue 5: how fast each canary policy catches a bad canary, and how
often it rolls back a healthy one. Simulated traffic, no servers.

A canary takes 10% of 5,000 requests/s (500/s; the baseline 4,500/s at 0.1% errors, lognormal
latency with p95 80 ms). Bad canaries: 5%, 2%, 1.5% errors; p95 +50%. Policies: changeover's
anytime-valid gates evaluated every second; a fixed-threshold poll every 60 s failing on the first
failed check (Flagger's defaults); Argo Rollouts' documented example (interval 5m, failureLimit
3); Wald's SPRT expected sample size as the floor. ``--write`` replaces the "Canary analysis
(detection)" section of BENCHMARKS.md.

    python benchmarks/detection.py --write     # the full run, a few minutes on 2 cores
    python benchmarks/detection.py --smoke     # seconds; what CI runs (numbers meaningless)
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the simulation tests' binomial sampler
sys.path.insert(0, str(ROOT / "benchmarks"))  # report.py, also when imported

from report import cpu_model, write_section  # noqa: E402

from analysis.simulate import binomial  # noqa: E402
from changeover.analysis import Outcome, latency_compare_decision, rate_decision  # noqa: E402

BEGIN = "<!-- detection-bench:begin (written by benchmarks/detection.py --write) -->"
END = "<!-- detection-bench:end -->"
CANARY_RPS, BASELINE_RPS = 500, 4500
BASELINE_ERROR = 0.001
ERROR_THRESHOLD = 0.01  # the seed's canary gate: error rate < 1%
SIGMA = 0.5  # lognormal shape of the latency
BASE_MEDIAN = 0.080 / math.exp(1.6448536269514722 * SIGMA)  # p95 = 80 ms
TOLERANCE = 0.2  # "latency normal": canary p95 within 20% of the baseline's
ALPHA = 0.005  # per gate; two gates, so ≤ 1% false rollbacks by the union bound
# Buckets: [0, 50 ms], 5% steps up to ~250 ms, then the rest (an HDR histogram at 5% precision).
EDGES = [0.05 * 1.05**k for k in range(34)] + [math.inf]
GOAL_FALSE, GOAL_MEDIAN_S, GOAL_FLOOR_RATIO, GOAL_SPEEDUP = 0.01, 2.0, 1.5, 30.0


@dataclass(frozen=True)
class Settings:
    runs: int = 1000  # per bad canary
    healthy_runs: int = 1000
    healthy_seconds: int = 600
    max_seconds: int = 1800  # a bad canary still running after this counts as not detected
    step_s: float = 1.0
    workers: int = 2


SMOKE = Settings(runs=20, healthy_runs=20, healthy_seconds=30, workers=1)


@dataclass(frozen=True)
class Canary:
    label: str
    error: float
    latency_factor: float = 1.0


BAD = (
    Canary("5% errors", 0.05),
    Canary("2% errors", 0.02),
    Canary("1.5% errors", 0.015),
    Canary("p95 +50% (120 ms)", BASELINE_ERROR, 1.5),
)
HEALTHY = Canary("healthy (0.1% errors, p95 80 ms)", BASELINE_ERROR)


def _slow_share(limit_s: float, factor: float) -> float:
    """P(latency > limit) for the lognormal scaled by ``factor``."""
    z = math.log(limit_s / (BASE_MEDIAN * factor)) / SIGMA
    return 1.0 - statistics.NormalDist().cdf(z)


def _bucket_probs(factor: float) -> list[float]:
    cdf = [1.0 - _slow_share(edge, factor) for edge in EDGES[:-1]] + [1.0]
    return [b - a for a, b in zip([0.0, *cdf[:-1]], cdf, strict=True)]


def _multinomial(rng: random.Random, n: int, probs: list[float]) -> list[int]:
    """Bucket counts by conditional binomials (each bucket given the ones before)."""
    out, left, mass = [], n, 1.0
    for p in probs:
        k = binomial(rng, left, min(1.0, p / mass)) if left and mass > 0 else 0
        out.append(k)
        left -= k
        mass -= p
    return out


# --- policies -----------------------------------------------------------------------------------


def changeover_run(canary: Canary, seconds: int, step_s: float, seed: int) -> float:
    """Seconds until changeover's gates fail the canary (math.inf if never within ``seconds``)."""
    rng = random.Random(seed)
    c_probs, b_probs = _bucket_probs(canary.latency_factor), _bucket_probs(1.0)
    c_hist, b_hist = [0] * len(EDGES), [0] * len(EDGES)
    per_c, per_b = round(CANARY_RPS * step_s), round(BASELINE_RPS * step_s)
    errors = total = 0
    steps = round(seconds / step_s)
    for step in range(1, steps + 1):
        errors += binomial(rng, per_c, canary.error)
        total += per_c
        for i, k in enumerate(_multinomial(rng, per_c, c_probs)):
            c_hist[i] += k
        for i, k in enumerate(_multinomial(rng, per_b, b_probs)):
            b_hist[i] += k
        if rate_decision(errors, total, ERROR_THRESHOLD, alpha=ALPHA) is Outcome.FAIL_IMMEDIATE:
            return step * step_s
        outcome = latency_compare_decision(
            list(zip(EDGES, c_hist, strict=True)),
            list(zip(EDGES, b_hist, strict=True)),
            tolerance=TOLERANCE,
            alpha=ALPHA,
        )
        if outcome is Outcome.FAIL_IMMEDIATE:
            return step * step_s
    return math.inf


def poll_run(
    canary: Canary, seconds: int, interval_s: int, failures_to_abort: int, seed: int
) -> float:
    """A fixed-threshold poll: every ``interval_s`` the last interval's error rate (> 1%) and p95
    (> 100 ms) are checked; the rollout aborts after ``failures_to_abort`` failed checks."""
    rng = random.Random(seed)
    n = CANARY_RPS * interval_s
    slow = _slow_share(0.100, canary.latency_factor)
    failed = 0
    for check in range(1, seconds // interval_s + 1):
        bad_errors = binomial(rng, n, canary.error) > ERROR_THRESHOLD * n
        bad_latency = binomial(rng, n, slow) > 0.05 * n
        if bad_errors or bad_latency:
            failed += 1
            if failed >= failures_to_abort:
                return check * interval_s
    return math.inf


def sprt_floor_requests(p0: float, p1: float, *, alpha: float = 0.01, beta: float = 0.01) -> float:
    """Wald's approximate expected sample size of the SPRT of p0 vs p1 under p1:
    E[N] = [(1 − β)·ln((1 − β)/α) + β·ln(β/(1 − α))] / KL(p1 ‖ p0)."""
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    return ((1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))) / kl


def _job(args: tuple[str, Canary, int, float, int, int]) -> float:
    policy, canary, seconds, step_s, interval, seed = args
    if policy == "changeover":
        return changeover_run(canary, seconds, step_s, seed)
    return poll_run(canary, seconds, interval, 1 if policy == "flagger" else 4, seed)


POLICIES = {
    "changeover": "changeover (anytime-valid gates, every 1 s)",
    "flagger": "(a) fixed threshold every 60 s, abort on 1st failure (Flagger defaults)",
    "argo": "(b) Argo Rollouts example: interval 5m, failureLimit 3 (abort on the 4th)",
}


@dataclass
class Row:
    policy: str
    canary: Canary
    times: list[float]

    @property
    def detected(self) -> list[float]:
        return sorted(t for t in self.times if math.isfinite(t))

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run(settings: Settings) -> dict[tuple[str, str], Row]:
    rows: dict[tuple[str, str], Row] = {}
    jobs: list[tuple[str, Canary, tuple[str, Canary, int, float, int, int]]] = []
    for policy in POLICIES:
        interval = 60 if policy == "flagger" else 300
        for canary in BAD:
            for seed in range(settings.runs):
                arg = (policy, canary, settings.max_seconds, settings.step_s, interval, seed)
                jobs.append((policy, canary, arg))
        for seed in range(settings.healthy_runs):
            arg = (policy, HEALTHY, settings.healthy_seconds, settings.step_s, interval, seed)
            jobs.append((policy, HEALTHY, arg))
    if settings.workers > 1:
        with ProcessPoolExecutor(settings.workers) as pool:
            results = list(pool.map(_job, [job[2] for job in jobs], chunksize=20))
    else:
        results = [_job(job[2]) for job in jobs]
    for (policy, canary, _), result in zip(jobs, results, strict=True):
        rows.setdefault((policy, canary.label), Row(policy, canary, [])).times.append(result)
    return rows


# --- report -------------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return "never" if not math.isfinite(seconds) else f"{seconds:,.0f} s"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def render(rows: dict[tuple[str, str], Row], settings: Settings, command: str, took: float) -> str:
    started = datetime.datetime.now(datetime.UTC)
    lines = [
        BEGIN,
        "## Canary analysis (detection, issue 5)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `{command}` in {took:.0f} s.",
        "",
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), kernel {platform.release()}, Python "
        f"{platform.python_version()}.",
        f"- Simulated traffic (no servers): canary {CANARY_RPS}/s (10% of 5,000/s), baseline "
        f"{BASELINE_RPS:,}/s at {BASELINE_ERROR:.1%} errors; latency lognormal (σ = {SIGMA}) with "
        "p95 80 ms, recorded in an HDR-like histogram at 5% bucket precision. Per step, error "
        "counts and bucket counts are binomial draws (`random.Random`; exact inversion below a "
        "mean of 30, the normal approximation above: `tests/analysis/simulate.py`).",
        f"- {settings.runs:,} runs per bad canary (up to {settings.max_seconds // 60} min each); "
        f"{settings.healthy_runs:,} healthy runs of {settings.healthy_seconds // 60} min "
        f"({settings.healthy_seconds} s) for the false-rollback rate.",
        "- **changeover**: every second, `rate_decision(errors, requests, 0.01, alpha=0.005)` "
        "(error rate < 1%) and `latency_compare_decision(canary, baseline, tolerance=0.2, "
        "alpha=0.005)` (latency normal: canary p95 ≤ 1.2 × baseline p95); a fail of either is a "
        "rollback. Anytime-valid: false rollback ≤ 0.5% + 0.5% at any evaluation frequency.",
        "- **(a)** Flagger's defaults (`interval: 1m`, `threshold: 1`, request-success-rate "
        "`min: 99`): every 60 s, the last minute's error rate > 1% or p95 > 100 ms is a failed "
        "check, and the first failed check aborts "
        "(<https://docs.flagger.app/usage/metrics>).",
        "- **(b)** Argo Rollouts' analysis example (`interval: 5m`, `failureLimit: 3`, "
        "<https://argo-rollouts.readthedocs.io/en/stable/features/analysis/>) with the same "
        "checks on the last 5 minutes; the run fails when failed measurements exceed "
        "failureLimit, i.e. at the 4th (first measurement at 5 min: no initialDelay counted).",
        "- **(c)** Wald's SPRT floor: expected sample size under H1 (α = β = 0.01) from H0 = the "
        "gate's limit (1% errors; 5% of canary requests slower than 1.2 × baseline p95) and, for "
        "errors, from H0 = the baseline's 0.1%; requests ÷ 500/s. A floor for one known "
        "alternative, not a policy.",
        "",
        "| canary | policy | detected | median | p95 | requests served by the bad canary "
        "(median) | vs SPRT floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    floors: dict[str, tuple[float, float | None]] = {}
    for canary in BAD:
        if canary.latency_factor == 1.0:
            floors[canary.label] = (
                sprt_floor_requests(ERROR_THRESHOLD, canary.error),
                sprt_floor_requests(BASELINE_ERROR, canary.error),
            )
        else:
            share = _slow_share((1 + TOLERANCE) * 0.080, canary.latency_factor)
            floors[canary.label] = (sprt_floor_requests(0.05, share), None)
        for policy, label in POLICIES.items():
            row = rows[(policy, canary.label)]
            median = row.quantile(0.5)
            floor_s = floors[canary.label][0] / CANARY_RPS
            lines.append(
                f"| {canary.label} | {label} | {len(row.detected):,}/{len(row.times):,} | "
                f"{_s(median)} | {_s(row.quantile(0.95))} | "
                f"{median * CANARY_RPS:,.0f} | {median / floor_s:,.1f}× |"
                if math.isfinite(median)
                else f"| {canary.label} | {label} | {len(row.detected):,}/{len(row.times):,} | "
                "never | never | – | – |"
            )
        low, base = floors[canary.label]
        floor_text = f"{low:,.0f} requests = {low / CANARY_RPS:.2f} s"
        if base is not None:
            floor_text += f" (from 0.1%: {base:,.0f} = {base / CANARY_RPS:.2f} s)"
        lines.append(
            f"| {canary.label} | (c) SPRT floor from the gate's limit | | {floor_text} | | | 1.0× |"
        )
    lines += [
        "",
        "| healthy canary | policy | false rollbacks | rate |",
        "|---|---|---:|---:|",
    ]
    false_rates = {}
    for policy, label in POLICIES.items():
        row = rows[(policy, HEALTHY.label)]
        false = len(row.detected)
        false_rates[policy] = false / len(row.times)
        lines.append(
            f"| {HEALTHY.label} | {label} | {false:,}/{len(row.times):,} | "
            f"{false_rates[policy]:.2%} |"
        )
    ours = rows[("changeover", BAD[0].label)].quantile(0.5)
    flagger = rows[("flagger", BAD[0].label)].quantile(0.5)
    floor_s = floors[BAD[0].label][0] / CANARY_RPS
    floor_step = math.ceil(floor_s / settings.step_s) * settings.step_s
    lines += [
        "",
        f"Goal false rollback ≤ 1% (changeover): {false_rates['changeover']:.2%} — "
        f"{_verdict(false_rates['changeover'] <= GOAL_FALSE)}.",
        f"Goal median detection of the 5% canary ≤ 2 s: {_s(ours)} — "
        f"{_verdict(ours <= GOAL_MEDIAN_S)}.",
        f"Goal within 1.5× of the SPRT floor ({floor_s:.2f} s): {ours / floor_s:.1f}× — "
        f"{_verdict(ours <= GOAL_FLOOR_RATIO * floor_s)} (gates are evaluated every "
        f"{settings.step_s:g} s; against the floor rounded up to that step, {floor_step:g} s: "
        f"{ours / floor_step:.1f}× — {_verdict(ours <= GOAL_FLOOR_RATIO * floor_step)}).",
        f"Goal ≥ 30× faster than (a) on the 5% canary: {flagger / ours:.0f}× — "
        f"{_verdict(flagger / ours >= GOAL_SPEEDUP)}.",
        END,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the section in --output")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--runs", type=int, help="runs per canary (bad and healthy)")
    parser.add_argument("--workers", type=int, help="processes (default 2; 1 in --smoke)")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    if args.runs is not None:
        settings = replace(settings, runs=args.runs, healthy_runs=args.runs)
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    shown = " ".join(["python", "benchmarks/detection.py", *(argv or sys.argv[1:])])
    shown = shown.replace(f" --output {args.output}", "")
    started = time.perf_counter()
    rows = run(settings)
    section = render(rows, settings, shown, time.perf_counter() - started)
    print(section)
    if args.write:
        write_section(args.output, section, BEGIN, END)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
