"""Instance health for the proxy: passive ejection from real traffic plus active checks.

`HealthTracker` is plain state over an injected clock: the data path reports each outcome
(`record_success`, `record_failure`), the `ActiveChecker` reports each probe (`record_check`),
and the balancer asks `is_healthy(key, now)` before routing and `routed(key, now)` after.

Passive states of one instance (keyed by ``Instance.key``)::

    up ──(N consecutive connect errors, or a failure burst in the last responses)──▶ ejected
    ejected ──(cool-down elapsed: 5 s, doubling per repeated ejection up to 60 s)──▶ half-open
    half-open: exactly one trial request (or active check) is let through;
        success ──▶ up            failure ──▶ ejected again with a doubled cool-down

Active checks are separate: ``fall`` consecutive failed checks take an instance down, ``rise``
consecutive good ones bring it back. An instance is healthy when both views agree. New
instances start healthy, so traffic flows before the first check completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from changeover.proxy.state import Instance

FailureKind = Literal["connect", "5xx", "timeout"]
PassiveState = Literal["up", "ejected", "half-open"]


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of passive ejection and active checks; the defaults suit a cutover."""

    # Connection refused/reset before the request was sent: the process is gone, so eject fast
    # (a killed instance must be out within 2 s under load; two errors arrive in milliseconds).
    connect_errors_to_eject: int = 2
    # A burst of failures (5xx, timeouts, connect errors too): at least `burst_min_failures`
    # failures that are at least `burst_ratio` of the last `burst_window` outcomes.
    burst_window: int = 20
    burst_ratio: float = 0.5
    burst_min_failures: int = 5
    cooldown: float = 5.0  # seconds ejected the first time
    max_cooldown: float = 60.0  # the doubling stops here
    # A half-open trial whose outcome never arrives (the request was cancelled) stops blocking
    # the instance after this long, and another trial is let through.
    trial_timeout: float = 10.0
    rise: int = 2  # consecutive good active checks to come back up
    fall: int = 3  # consecutive failed active checks to go down


@dataclass
class _Instance:
    state: PassiveState = "up"
    consecutive_connect_errors: int = 0
    outcomes: deque[bool] = field(default_factory=deque)  # True = failure
    ejections: int = 0  # consecutive ejections without a lasting recovery
    ejected_until: float = 0.0
    readmitted_at: float = float("-inf")
    trial_started: float | None = None
    active_up: bool = True
    checks_ok: int = 0
    checks_failed: int = 0
    last_failure: str = ""


class HealthTracker:
    """Passive and active health of every instance, driven by reported outcomes and a clock."""

    def __init__(
        self, policy: HealthPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._instances: dict[str, _Instance] = {}

    def _get(self, key: str) -> _Instance:
        entry = self._instances.get(key)
        if entry is None:
            entry = self._instances[key] = _Instance()
        return entry

    def _advance(self, entry: _Instance, now: float) -> None:
        """Time-driven transition: an ejected instance becomes half-open after its cool-down."""
        if entry.state == "ejected" and now >= entry.ejected_until:
            entry.state = "half-open"
            entry.trial_started = None

    # -- queries (the balancer) ----------------------------------------------------------

    def is_healthy(self, key: str, now: float | None = None) -> bool:
        """May a new request go to this instance now?"""
        entry = self._instances.get(key)
        if entry is None:
            return True
        now = self.clock() if now is None else now
        self._advance(entry, now)
        if not entry.active_up:
            return False
        if entry.state == "up":
            return True
        if entry.state == "half-open":
            trial = entry.trial_started
            return trial is None or now - trial >= self.policy.trial_timeout
        return False

    def routed(self, key: str, now: float | None = None) -> None:
        """The balancer sent a request here; in half-open that request is the one trial."""
        entry = self._instances.get(key)
        if entry is None:
            return
        now = self.clock() if now is None else now
        self._advance(entry, now)
        if entry.state == "half-open":
            entry.trial_started = now

    # -- outcomes (the data path and the active checker) ---------------------------------

    def record_success(self, key: str) -> None:
        """A response below 500 came back."""
        entry = self._get(key)
        now = self.clock()
        self._advance(entry, now)
        if entry.state == "half-open":
            self._readmit(entry, now)
            return
        if entry.state == "ejected":
            return  # a late answer to a request sent before the ejection proves little
        entry.consecutive_connect_errors = 0
        self._push(entry, failed=False)

    def record_failure(self, key: str, kind: FailureKind) -> None:
        """A connection error, a 5xx answer or a timeout."""
        entry = self._get(key)
        now = self.clock()
        self._advance(entry, now)
        entry.last_failure = kind
        if entry.state == "half-open":
            self._eject(entry, now)
            return
        if entry.state == "ejected":
            return
        policy = self.policy
        if kind == "connect":
            entry.consecutive_connect_errors += 1
            if entry.consecutive_connect_errors >= policy.connect_errors_to_eject:
                self._eject(entry, now)
                return
        else:
            entry.consecutive_connect_errors = 0
        self._push(entry, failed=True)
        failures = sum(entry.outcomes)
        if failures >= max(policy.burst_min_failures, policy.burst_ratio * len(entry.outcomes)):
            self._eject(entry, now)

    def record_check(self, key: str, ok: bool) -> None:
        """One active health check's result."""
        entry = self._get(key)
        now = self.clock()
        self._advance(entry, now)
        if entry.state == "half-open":
            # A check is as good a trial as a request, and cheaper for the users.
            if ok:
                self._readmit(entry, now)
            else:
                self._eject(entry, now)
        if ok:
            entry.checks_ok += 1
            entry.checks_failed = 0
            if not entry.active_up and entry.checks_ok >= self.policy.rise:
                entry.active_up = True
        else:
            entry.checks_failed += 1
            entry.checks_ok = 0
            entry.last_failure = "check"
            if entry.active_up and entry.checks_failed >= self.policy.fall:
                entry.active_up = False

    # -- transitions ---------------------------------------------------------------------

    def _push(self, entry: _Instance, *, failed: bool) -> None:
        entry.outcomes.append(failed)
        while len(entry.outcomes) > self.policy.burst_window:
            entry.outcomes.popleft()

    def _eject(self, entry: _Instance, now: float) -> None:
        policy = self.policy
        if entry.state == "up" and now - entry.readmitted_at >= policy.max_cooldown:
            entry.ejections = 0  # it stayed healthy long enough: start the doubling afresh
        cooldown = min(policy.cooldown * 2**entry.ejections, policy.max_cooldown)
        entry.ejections += 1
        entry.state = "ejected"
        entry.ejected_until = now + cooldown
        entry.trial_started = None
        entry.consecutive_connect_errors = 0
        entry.outcomes.clear()

    def _readmit(self, entry: _Instance, now: float) -> None:
        entry.state = "up"
        entry.readmitted_at = now
        entry.trial_started = None
        entry.consecutive_connect_errors = 0
        entry.outcomes.clear()

    # -- reporting -----------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per instance: passive state, active view, seconds left ejected, last failure kind."""
        now = self.clock() if now is None else now
        result: dict[str, dict[str, Any]] = {}
        for key, entry in sorted(self._instances.items()):
            self._advance(entry, now)
            result[key] = {
                "healthy": self.is_healthy(key, now),
                "passive": entry.state,
                "active_up": entry.active_up,
                "ejections": entry.ejections,
                "ejected_for": max(0.0, entry.ejected_until - now)
                if entry.state == "ejected"
                else 0.0,
                "last_failure": entry.last_failure,
            }
        return result


# The core reports a failed exchange twice: ``upstream_failed`` with the cause, then
# ``request_finished`` with the 502/504 it answered itself (499 when the client left). The
# cause is the better signal, so those statuses are not counted again (an app that answers
# 502/504 itself is then not seen by this observer; its 500s and 503s are).
_PROXY_ANSWERED = frozenset({499, 502, 504})


class PassiveHealthObserver:
    """Feeds a tracker from the core's Observer callbacks (structurally an Observer subset).

    ``upstream_failed`` before the request reached the upstream is a connection error; after
    it, an error saying ``timed out``/``within`` is a timeout and anything else (reset or close
    mid-answer) counts like a 5xx. Cheap and never raises, as the Observer contract requires.
    """

    def __init__(self, tracker: HealthTracker) -> None:
        self.tracker = tracker

    def request_started(self, instance: Instance) -> None:
        pass

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        if status in _PROXY_ANSWERED:
            return
        if status >= 500:
            self.tracker.record_failure(instance.key, "5xx")
        else:
            self.tracker.record_success(instance.key)

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None:
        kind: FailureKind
        text = error.lower()
        if not reached_upstream:
            kind = "connect"
        elif "timed out" in text or "timeout" in text or "within" in text:
            kind = "timeout"
        else:
            kind = "5xx"
        self.tracker.record_failure(instance.key, kind)


Probe = Callable[[Instance], Awaitable[bool]]


class ActiveChecker:
    """Probes every instance each ``interval`` seconds and reports to the tracker.

    The probe is injected (``probe(instance) -> bool``) so this is testable without a network;
    the proxy wires one that GETs the instance's health path. A probe that raises or takes
    longer than ``timeout`` counts as a failed check.
    """

    def __init__(
        self,
        tracker: HealthTracker,
        instances: Callable[[], Iterable[Instance]],
        probe: Probe,
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.tracker = tracker
        self.instances = instances
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.sleep = sleep
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    async def _check(self, instance: Instance) -> None:
        try:
            ok = await asyncio.wait_for(self.probe(instance), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # any probe failure is a failed check, never a crashed checker
            ok = False
        self.tracker.record_check(instance.key, bool(ok))

    async def check_once(self) -> None:
        """Probe all instances concurrently, once."""
        await asyncio.gather(*(self._check(instance) for instance in self.instances()))
        self.rounds += 1

    async def run(self) -> None:
        while True:
            await self.check_once()
            await self.sleep(self.interval)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
