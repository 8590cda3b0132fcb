"""The controller's ``rollout.sample`` numbers between two looks (pure)."""

from __future__ import annotations

import math

from changeover.analysis import Outcome, Verdict
from changeover.metrics.base import Observation
from changeover.rollout.samples import backend_numbers, sample_payload


def _looks(errors: int, total: int, under_10ms: int, under_100ms: int) -> dict[str, Observation]:
    hist = ((0.001, 0), (0.01, under_10ms), (0.1, under_100ms), (math.inf, total))
    return {
        "error_rate": Observation("error_rate", "new", 0.0, events=errors, total=total),
        "latency": Observation("latency", "new", 0.0, histogram=hist),
    }


def test_numbers_are_for_the_interval_not_since_start() -> None:
    before = _looks(errors=10, total=1000, under_10ms=1000, under_100ms=1000)
    # 500 more requests in 5 s, 25 of them errors; 400 under 10 ms, 90 under 100 ms, 10 slower
    after = _looks(errors=35, total=1500, under_10ms=1400, under_100ms=1490)
    numbers = backend_numbers(before, after, 5.0)
    assert numbers["requests"] == 500 and numbers["rps"] == 100.0
    assert numbers["errors"] == 25 and numbers["error_rate"] == 0.05
    assert numbers["p50_ms"] == 10.0  # the upper bound of the bucket holding the median
    assert numbers["p95_ms"] == 100.0
    assert numbers["p99_ms"] is None  # in the +inf bucket: unknown, not infinite


def test_an_unreadable_metric_is_left_out_and_an_idle_backend_has_no_rate() -> None:
    idle = _looks(errors=0, total=0, under_10ms=0, under_100ms=0)
    gone = {"error_rate": Observation.missing("error_rate", "new", 0.0, "proxy unreachable")}
    assert backend_numbers({}, gone, 5.0) == {}
    numbers = backend_numbers(idle, idle, 5.0)
    assert numbers["error_rate"] is None and numbers["rps"] == 0.0 and numbers["p95_ms"] is None


def test_the_payload_carries_weights_and_each_gate_in_json_safe_numbers() -> None:
    verdict = Verdict(
        gate="canary-error-rate",
        outcome=Outcome.CONTINUE,
        observed=0.002,
        bound=(0.0, math.inf),
        threshold=0.01,
        samples=400,
        elapsed_s=12.0,
        reason="watching",
    )
    payload = sample_payload("canary", 12.04, 10.0, {"new": {"rps": 1.0}}, [verdict])
    assert payload["weights"] == {"legacy": 90.0, "new": 10.0}
    assert payload["gates"] == [
        {
            "gate": "canary-error-rate",
            "outcome": "continue",
            "observed": 0.002,
            "bound": [0.0, None],
            "threshold": 0.01,
            "unit": "",
            "samples": 400,
        }
    ]
