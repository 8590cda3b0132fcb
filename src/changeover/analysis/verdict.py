"""A gate's decision with its evidence: outcome, observed value, confidence bound, threshold.

Every analysis function returns a `Verdict`; `combine` folds a phase's verdicts into one outcome
(any fail_immediate beats fail_graceful, which beats continue, which beats pass).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """What the controller should do about one gate (or a whole phase)."""

    PASS = "pass"  # the evidence shows the gate holds; the phase may proceed
    CONTINUE = "continue"  # not enough evidence either way yet: keep watching
    FAIL_IMMEDIATE = "fail_immediate"  # roll back now, all traffic to legacy in one step
    FAIL_GRACEFUL = "fail_graceful"  # roll back in steps, watching at each

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Outcome.PASS: 0,
    Outcome.CONTINUE: 1,
    Outcome.FAIL_GRACEFUL: 2,
    Outcome.FAIL_IMMEDIATE: 3,
}


@dataclass(frozen=True)
class Verdict:
    """One gate's decision at one moment, with the numbers behind it.

    ``bound`` is the (lower, upper) confidence bound on the quantity ``observed`` estimates, in the
    same unit as ``threshold``; ``samples`` is how many observations the bound rests on.
    """

    gate: str
    outcome: Outcome
    observed: float
    bound: tuple[float, float]
    threshold: float
    samples: int
    elapsed_s: float
    reason: str
    unit: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.FAIL_IMMEDIATE, Outcome.FAIL_GRACEFUL)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``: JSON has no infinity or NaN)."""
        return {
            "gate": self.gate,
            "outcome": self.outcome.value,
            "observed": _finite(self.observed),
            "bound": [_finite(self.bound[0]), _finite(self.bound[1])],
            "threshold": _finite(self.threshold),
            "samples": self.samples,
            "elapsed_s": _finite(self.elapsed_s),
            "reason": self.reason,
            "unit": self.unit,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def combine(verdicts: Iterable[Verdict]) -> Outcome:
    """The overall outcome: the most severe one (fail_immediate > fail_graceful > continue > pass).

    No verdicts at all is a pass: a phase without gates has nothing to wait for.
    """
    outcomes = [verdict.outcome for verdict in verdicts]
    return max(outcomes, key=lambda outcome: outcome.severity, default=Outcome.PASS)
