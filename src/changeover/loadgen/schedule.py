"""The open model's schedule: request i is due ``i / rate`` seconds after the start, whatever
happened to the requests before it.

Pure arithmetic, shared by the engine (how many requests are due by now, when the next one is)
and the workers: process k of n takes requests k, k+n, k+2n, … so the shares interleave and
together keep the one global schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from changeover.errors import UsageError

#: Below this rate one process keeps up on one core; above it the work is split over the cores.
ONE_PROCESS_BELOW = 3_000.0

# Due times are products of floats; a request due exactly "now" must count as due.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Schedule:
    """``rate`` requests per second for ``duration`` seconds: requests 0 … total-1."""

    rate: float
    duration: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise UsageError(f"the rate must be a positive number of requests/s, got {self.rate}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise UsageError(f"the duration must be positive, got {self.duration} s")
        if self.total < 1:
            raise UsageError(
                f"{self.rate:g} requests/s for {self.duration:g} s is less than one request"
            )

    @property
    def total(self) -> int:
        return math.floor(self.rate * self.duration + _EPSILON)

    def share(self, index: int, count: int) -> Share:
        """Process ``index`` of ``count``: every count-th request, starting at ``index``."""
        if not 0 <= index < count:
            raise ValueError(f"share {index} of {count}")
        return Share(self.rate, self.total, index, count)


@dataclass(frozen=True)
class Share:
    """The requests ``index, index + count, …`` (< total) of a schedule, numbered j = 0, 1, …"""

    rate: float
    total: int
    index: int = 0
    count: int = 1

    @property
    def size(self) -> int:
        return max(0, (self.total - self.index + self.count - 1) // self.count)

    def global_index(self, j: int) -> int:
        return self.index + j * self.count

    def due(self, j: int) -> float:
        """Seconds after the start at which this share's request j is due."""
        return (self.index + j * self.count) / self.rate

    def due_by(self, elapsed: float) -> int:
        """How many of this share's requests are due ``elapsed`` seconds after the start."""
        position = elapsed * self.rate - self.index
        if position < -_EPSILON:
            return 0
        return min(self.size, math.floor(position / self.count + _EPSILON) + 1)


def default_processes(rate: float, cores: int) -> int:
    """One process below ~3,000 requests/s (spawning costs more than it gives), else the cores."""
    return 1 if rate < ONE_PROCESS_BELOW else max(1, cores)


def split(total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` as evenly as whole numbers allow (connections per process)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
