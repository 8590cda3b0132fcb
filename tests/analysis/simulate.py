"""Samplers for the simulation tests and the detection benchmark (random.Random, no numpy)."""

from __future__ import annotations

import math
import random


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw: exact inversion when n·p < 30, else the normal approximation
    (rounded, clamped to [0, n]; its error at n·p ≥ 30 is far below the Monte-Carlo noise)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean >= 30.0:
        draw = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
        return min(max(draw, 0), n)
    q = 1.0 - p
    ratio = p / q
    f = math.exp(n * math.log1p(-p))
    u = rng.random()
    k = 0
    while u > f and k < n:
        u -= f
        k += 1
        f *= ratio * (n - k + 1) / k
    return k
