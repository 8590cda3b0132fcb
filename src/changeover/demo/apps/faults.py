"""The sample apps' fault switch: what the demo turns on to make a canary misbehave.

``error_rate`` (0..1) answers that share of API requests 500 before they touch the database;
``latency_ms`` delays every API request; ``leak_mb_per_s`` grows the process's memory (kept in a
list, so the resident size really rises, capped at ``MAX_LEAK_BYTES``); ``readonly`` answers API
writes 503. Health, metrics and admin requests are never faulted: the demo must still be able to
see the app and switch the fault off. ``decide`` is the pure decision; ``FaultSwitch`` holds the
settings behind a lock and runs the leak in a thread (the same code in the threaded legacy app and
the asyncio new app).
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

MIB = 1 << 20
LEAK_TICK_SECONDS = 0.1
MAX_LEAK_BYTES = 1 << 30  # a demo fault must not take the machine down with it
MAX_LATENCY_MS = 60_000.0
MAX_LEAK_MB_PER_S = 256.0


@dataclass(frozen=True)
class Faults:
    """The switch's settings; all zero / off is a healthy app."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    leak_mb_per_s: float = 0.0
    readonly: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultVerdict:
    """What to do with one API request: wait ``delay`` seconds, then refuse with ``status``."""

    delay: float = 0.0
    status: int | None = None
    message: str = ""


def decide(faults: Faults, *, write: bool, draw: float) -> FaultVerdict:
    """The verdict for one API request; ``draw`` is uniform in [0, 1) (a coin per request)."""
    delay = faults.latency_ms / 1000.0
    if write and faults.readonly:
        return FaultVerdict(delay, 503, "the app is read-only for maintenance; retry shortly")
    if draw < faults.error_rate:
        return FaultVerdict(delay, 500, "injected fault (error_rate)")
    return FaultVerdict(delay)


class FaultSwitch:
    """Thread-safe fault settings, the verdict per request, and the memory leak while it is on."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._faults = Faults()
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._leaked: list[bytes] = []
        self._leaked_bytes = 0
        self._wake = threading.Condition(self._lock)
        self._leaker: threading.Thread | None = None
        self._closed = False

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    @property
    def leaked_bytes(self) -> int:
        with self._lock:
            return self._leaked_bytes

    def verdict(self, *, write: bool) -> FaultVerdict:
        with self._lock:
            return decide(self._faults, write=write, draw=self._rng.random())

    def set_faults(self, error_rate: float, latency_ms: float, leak_mb_per_s: float) -> Faults:
        """Replace the three fault settings (read-only stays as it is)."""
        with self._lock:
            self._faults = replace(
                self._faults,
                error_rate=error_rate,
                latency_ms=latency_ms,
                leak_mb_per_s=leak_mb_per_s,
            )
            if leak_mb_per_s == 0:
                # Switching the leak off gives the memory back: the app is healthy again.
                self._leaked.clear()
                self._leaked_bytes = 0
            elif self._leaker is None and not self._closed:
                self._leaker = threading.Thread(target=self._leak, name="leak", daemon=True)
                self._leaker.start()
            self._wake.notify_all()
            return self._faults

    def set_readonly(self, on: bool) -> Faults:
        with self._lock:
            self._faults = replace(self._faults, readonly=on)
            return self._faults

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            leaker = self._leaker
        if leaker is not None:
            leaker.join(timeout=2)

    def _leak(self) -> None:
        while True:
            with self._lock:
                if self._closed or self._faults.leak_mb_per_s <= 0:
                    self._leaker = None
                    return
                chunk = int(self._faults.leak_mb_per_s * MIB * LEAK_TICK_SECONDS)
                if self._leaked_bytes + chunk > MAX_LEAK_BYTES:
                    chunk = 0
            # Filled, not zeroed (zero pages may never be touched, so never counted), and
            # outside the lock: requests ask for their verdict meanwhile.
            data = b"\xa5" * chunk
            with self._lock:
                if chunk and self._faults.leak_mb_per_s > 0:
                    self._leaked.append(data)
                    self._leaked_bytes += chunk
                self._wake.wait(LEAK_TICK_SECONDS)
