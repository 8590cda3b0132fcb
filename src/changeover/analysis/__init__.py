"""Canary analysis: pure functions that turn counts, histograms and samples into gate verdicts.

Rates and counts use anytime-valid confidence sequences, so a controller may evaluate a gate
every second without inflating false rollbacks; trends use Theil–Sen with Mann–Kendall; triggers
that must hold for a while go through `Sustained`. No I/O here: the controller gathers the numbers.
"""

from changeover.analysis.compare import compare_counts, rate_ratio_bounds
from changeover.analysis.latency import (
    Histogram,
    count_above,
    latency_compare_decision,
    latency_compare_gate,
    quantile_bounds,
    quantile_estimate,
    quantile_gate,
)
from changeover.analysis.rates import (
    Prior,
    confidence_sequence,
    log_mixture_martingale,
    outside_above,
    outside_below,
    prior_for,
    rate_decision,
    rate_gate,
)
from changeover.analysis.sustained import Sustained
from changeover.analysis.trend import Trend, leak_gate, mann_kendall, slope_bounds, theil_sen, trend
from changeover.analysis.verdict import Outcome, Verdict, combine

__all__ = [
    "Histogram",
    "Outcome",
    "Prior",
    "Sustained",
    "Trend",
    "Verdict",
    "combine",
    "compare_counts",
    "confidence_sequence",
    "count_above",
    "latency_compare_decision",
    "latency_compare_gate",
    "leak_gate",
    "log_mixture_martingale",
    "mann_kendall",
    "outside_above",
    "outside_below",
    "prior_for",
    "quantile_bounds",
    "quantile_estimate",
    "quantile_gate",
    "rate_decision",
    "rate_gate",
    "rate_ratio_bounds",
    "slope_bounds",
    "theil_sen",
    "trend",
]
