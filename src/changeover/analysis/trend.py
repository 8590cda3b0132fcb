"""Trends over a window of (time, value) samples: Theil–Sen slope with the Mann–Kendall test.

For "no memory leak": a leak is a significantly positive slope above a bound, reported per hour
(MB/hour for RSS, goroutines/hour, …). Both statistics are rank-based, so a few spikes (a GC
pause, a burst) neither create nor hide a trend the way a least-squares fit would.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from changeover.analysis.verdict import Outcome, Verdict

_NORMAL = statistics.NormalDist()


@dataclass(frozen=True)
class Trend:
    """Theil–Sen slope (per second and per hour) with its Mann–Kendall test of "no trend"."""

    slope_per_s: float
    intercept: float
    s: int  # Mann–Kendall S: concordant minus discordant pairs
    variance: float  # Var(S) under "no trend", tie-corrected
    z: float
    p_increasing: float  # one-sided p-value of "no trend" against "increasing"
    samples: int

    @property
    def slope_per_hour(self) -> float:
        return self.slope_per_s * 3600.0


def _pairwise_slopes(points: Sequence[tuple[float, float]]) -> list[float]:
    slopes = []
    for i, (t_i, v_i) in enumerate(points):
        for t_j, v_j in points[i + 1 :]:
            if t_j != t_i:
                slopes.append((v_j - v_i) / (t_j - t_i))
    return slopes


def theil_sen(samples: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept): the median of all pairwise slopes (Theil 1950, Sen 1968) and the median
    of v − slope·t. O(n²) pairs: downsample windows to a few thousand points."""
    slopes = _pairwise_slopes(sorted(samples))
    if not slopes:
        return 0.0, statistics.median(v for _, v in samples) if samples else 0.0
    slope = statistics.median(slopes)
    return slope, statistics.median(v - slope * t for t, v in samples)


def mann_kendall(samples: Sequence[tuple[float, float]]) -> tuple[int, float, float, float]:
    """(S, Var(S), Z, one-sided p for an increasing trend), Mann (1945) / Kendall (1975).

    S sums sign(v_j − v_i) over pairs in time order; under "no trend" (exchangeable values) S has
    mean 0 and Var(S) = [n(n−1)(2n+5) − Σ t(t−1)(2t+5)] / 18 over groups of t tied values; Z uses
    the continuity correction (S ∓ 1) and the normal approximation, fine from about n = 10.
    """
    points = sorted(samples)
    n = len(points)
    s = 0
    for i, (t_i, v_i) in enumerate(points):
        for t_j, v_j in points[i + 1 :]:
            if t_j != t_i:
                s += (v_j > v_i) - (v_j < v_i)
    ties: dict[float, int] = {}
    for _, value in points:
        ties[value] = ties.get(value, 0) + 1
    correction = sum(t * (t - 1) * (2 * t + 5) for t in ties.values())
    variance = (n * (n - 1) * (2 * n + 5) - correction) / 18.0
    if variance <= 0.0:
        return s, 0.0, 0.0, 1.0
    z = (s - 1) / math.sqrt(variance) if s > 0 else (s + 1) / math.sqrt(variance) if s < 0 else 0.0
    return s, variance, z, 1.0 - _NORMAL.cdf(z)


def trend(samples: Sequence[tuple[float, float]]) -> Trend:
    """Theil–Sen slope and Mann–Kendall test of ``samples`` (seconds, value)."""
    slope, intercept = theil_sen(samples)
    s, variance, z, p = mann_kendall(samples)
    return Trend(slope, intercept, s, variance, z, p, len(samples))


def slope_bounds(samples: Sequence[tuple[float, float]], *, alpha: float) -> tuple[float, float]:
    """Two-sided 1 − alpha confidence interval of the Theil–Sen slope per second (Sen 1968):
    the order statistics of the pairwise slopes at (N ∓ z·√Var(S)) / 2."""
    slopes = sorted(_pairwise_slopes(sorted(samples)))
    if not slopes:
        return -math.inf, math.inf
    _, variance, _, _ = mann_kendall(samples)
    spread = _NORMAL.inv_cdf(1.0 - alpha / 2.0) * math.sqrt(max(variance, 0.0))
    low = math.floor((len(slopes) - spread) / 2.0)
    high = math.ceil((len(slopes) + spread) / 2.0)
    return (
        slopes[low] if low >= 0 else -math.inf,
        slopes[high] if high < len(slopes) else math.inf,
    )


def leak_gate(
    samples: Sequence[tuple[float, float]],
    *,
    min_slope_per_hour: float,
    min_rise: float = 0.0,
    alpha: float = 0.01,
    min_samples: int = 10,
    baked: bool = False,
    on_fail: Outcome = Outcome.FAIL_GRACEFUL,
    elapsed_s: float = 0.0,
    unit: str = "MB",
    gate: str = "memory leak",
) -> Verdict:
    """Decide "no leak" from (seconds, value) samples, e.g. RSS in MB every few seconds.

    Fails (``on_fail``, graceful by default) when the Mann–Kendall test rejects "no trend" in
    favour of "increasing" at level ``alpha`` *and* the Theil–Sen slope exceeds
    ``min_slope_per_hour`` (a significant but tiny slope — a cache warming — is not a leak)
    *and* the rise it makes over the window's span exceeds ``min_rise`` (a process that has just
    started grows fast for seconds while it warms up: steep, but a few MB, not a leak).
    Passes after the bake time with at least ``min_samples`` samples, otherwise continues.
    Guarantee: for one look at a window of exchangeable (trend-free) samples, P(fail) ≤ alpha
    (normal approximation). Unlike the rate gates this is a fixed-sample test: evaluated again
    and again on overlapping windows its false-alarm rate grows, which is why ``on_fail`` is
    graceful and callers should feed it through `Sustained`. Autocorrelated noise (slow
    oscillations) also inflates it; sample at intervals longer than the noise's memory.
    """
    n = len(samples)
    if n < max(min_samples, 3):
        return Verdict(
            gate=gate,
            outcome=Outcome.CONTINUE,
            observed=math.nan,
            bound=(-math.inf, math.inf),
            threshold=min_slope_per_hour,
            samples=n,
            elapsed_s=elapsed_s,
            reason=f"{gate}: {n} samples, waiting for {max(min_samples, 3)}",
            unit=f"{unit}/hour",
        )
    found = trend(samples)
    low, high = slope_bounds(samples, alpha=alpha)
    per_hour = found.slope_per_hour
    seen = (
        f"{gate}: slope {per_hour:+.3g} {unit}/hour (bound {low * 3600:+.3g} to "
        f"{high * 3600:+.3g}) over {n} samples, Mann–Kendall p = {found.p_increasing:.2g}"
    )
    span = max(t for t, _ in samples) - min(t for t, _ in samples)
    rise = found.slope_per_s * span
    if found.p_increasing < alpha and per_hour > min_slope_per_hour and rise > min_rise:
        outcome = on_fail
        reason = f"{seen}: rising faster than {min_slope_per_hour:g} {unit}/hour"
        if min_rise > 0:
            reason += f", {rise:.3g} {unit} over {span:.0f} s"
    elif baked:
        outcome = Outcome.PASS
        reason = f"{seen}: no significant rise above {min_slope_per_hour:g} {unit}/hour"
    else:
        outcome = Outcome.CONTINUE
        reason = f"{seen}: watching"
    return Verdict(
        gate=gate,
        outcome=outcome,
        observed=per_hour,
        bound=(low * 3600.0, high * 3600.0),
        threshold=min_slope_per_hour,
        samples=n,
        elapsed_s=elapsed_s,
        reason=reason,
        unit=f"{unit}/hour",
    )
