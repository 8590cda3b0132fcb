"""Triggers that must hold for a while ("error rate > 5% sustained 30 s") without flapping.

`Sustained` is an immutable state machine fed (time, condition) by the caller: no clock of its
own, so it is deterministic and tested tick by tick.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sustained:
    """Fires once the condition has held continuously for ``duration_s``; once firing, clears only
    after the condition has been continuously false for ``clear_after_s`` (hysteresis, so a
    condition hovering at its edge does not flap).

    "Continuously" is judged from the observations: between two true observations the condition
    is taken to have held, unless they are more than ``max_gap_s`` apart (missing data breaks a
    streak rather than extending it). Feed it with `observe`, which returns the next state.
    """

    duration_s: float
    clear_after_s: float = 0.0
    max_gap_s: float | None = None
    firing: bool = False
    true_since: float | None = None
    false_since: float | None = None
    last_at: float | None = None

    def __post_init__(self) -> None:
        if self.duration_s < 0 or self.clear_after_s < 0:
            raise ValueError("sustained durations must be ≥ 0 seconds")
        if self.max_gap_s is not None and self.max_gap_s <= 0:
            raise ValueError("max_gap_s must be > 0 seconds")

    def observe(self, now: float, condition: bool) -> Sustained:
        """The state after seeing ``condition`` at time ``now`` (seconds, never decreasing)."""
        if self.last_at is not None and now < self.last_at:
            raise ValueError(f"time went backwards: {now} after {self.last_at}")
        true_since, false_since = self.true_since, self.false_since
        if (
            self.max_gap_s is not None
            and self.last_at is not None
            and now - self.last_at > self.max_gap_s
        ):
            true_since = false_since = None
        firing = self.firing
        if condition:
            true_since = now if true_since is None else true_since
            false_since = None
            if now - true_since >= self.duration_s:
                firing = True
        else:
            true_since = None
            false_since = now if false_since is None else false_since
            if firing and now - false_since >= self.clear_after_s:
                firing = False
        return replace(
            self, firing=firing, true_since=true_since, false_since=false_since, last_at=now
        )

    @property
    def held_s(self) -> float:
        """How long the condition has held as of the last observation (0 when it does not)."""
        if self.true_since is None or self.last_at is None:
            return 0.0
        return self.last_at - self.true_since
