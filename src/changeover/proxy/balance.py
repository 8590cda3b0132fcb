"""Routing decisions: which instance gets a request, given the routing state, a session and health.

`Balancer.decide` is synchronous and pure apart from two small memories (round-robin positions
and a bounded table of recent writes per session); the clock, the random source and the health
view are injected. `Balancer.chooser` adapts it to the core's async ``Chooser`` contract, is
where held writes wait (`changeover.proxy.hold`) and counts the writes it routes until their
exchange ends (`Balancer.writes`).

How a request is routed:
- **Writes** (`WriteRules`) always go to the write owner, never elsewhere.
- **Reads of a session that wrote** in the last ``ryw_window`` seconds go to the write owner.
- **Other reads** go by weight, sticky per session: the session id hashes to a point in
  [0, 100) and the backend whose weight range holds that point gets it. Ranges are laid out in
  ``order``, by default the ``new`` backend first: new owns [0, w_new) and legacy the rest, so
  raising new's weight (10 → 50 → 100) only moves sessions legacy → new, and lowering it (a
  rollback) only new → legacy. While weights stay put a session never moves (by construction).
- A request without a session cookie gets a fresh id (answered with Set-Cookie) and is routed
  by the same rule, so its next requests land on the same backend.
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from changeover.proxy.hold import HoldRejected, WriteHold, WritesInFlight
from changeover.proxy.http import Choice, Reject, RequestHead
from changeover.proxy.state import Instance, RoutingState

DEFAULT_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_COOKIE = "co_session"
# Accepted session ids: what we issue (token_urlsafe) and similar; anything else is replaced,
# so a hostile cookie cannot grow the session table with huge keys.
_SESSION_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class PathPattern:
    """A path pattern: a glob (``/api/*``; ``*`` also crosses ``/``) or ``re:<regex>`` (search)."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._regex = re.compile(
                text[3:] if text.startswith("re:") else fnmatch.translate(text)
            )
        except re.error as exc:
            raise ValueError(
                f"path pattern {text!r} is not a valid regular expression: {exc}"
            ) from None

    def matches(self, path: str) -> bool:
        return self._regex.search(path) is not None

    def __repr__(self) -> str:
        return f"PathPattern({self.text!r})"


class WriteRules:
    """Which requests are writes.

    A request is a write when its method is one of ``methods`` and its path matches one of
    ``include`` (every path if ``include`` is empty) and none of ``exclude``; or when it
    matches one of ``also``: ``"GET /logout"`` (method and pattern) or ``"/api/mutate/*"``
    (any method) — for apps that change state on a GET.
    """

    def __init__(
        self,
        methods: Iterable[str] = DEFAULT_WRITE_METHODS,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        also: Iterable[str] = (),
    ) -> None:
        self.methods = frozenset(m.upper() for m in methods)
        self.include = tuple(PathPattern(p) for p in include)
        self.exclude = tuple(PathPattern(p) for p in exclude)
        self.also: tuple[tuple[str | None, PathPattern], ...] = tuple(
            _method_and_pattern(p) for p in also
        )

    def is_write(self, method: str, path: str) -> bool:
        method = method.upper()
        for only, pattern in self.also:
            if (only is None or only == method) and pattern.matches(path):
                return True
        if method not in self.methods:
            return False
        if self.include and not any(p.matches(path) for p in self.include):
            return False
        return not any(p.matches(path) for p in self.exclude)


def _method_and_pattern(text: str) -> tuple[str | None, PathPattern]:
    method, sep, rest = text.strip().partition(" ")
    if sep and not method.startswith("/") and not method.startswith("re:"):
        return method.upper(), PathPattern(rest.strip())
    return None, PathPattern(text.strip())


# -- pure weight maths ------------------------------------------------------------------------


def session_point(session_id: str) -> float:
    """A stable point in [0, 100) for a session id (BLAKE2b, the same in every process)."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8, person=b"co-route").digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64


def range_order(weights: Mapping[str, float], order: Sequence[str]) -> list[str]:
    """Backends in range order: ``order`` first, then any other weighted backend by name."""
    return [*order, *sorted(name for name in weights if name not in order)]


def weight_ranges(
    weights: Mapping[str, float], order: Sequence[str]
) -> tuple[tuple[str, float], ...]:
    """Each weighted backend with the upper end of its range in [0, 100), in range order.

    Weights need not sum to exactly 100: the ranges are scaled to their sum. Backends with a
    zero (or negative) weight get no range. Empty when nothing has weight.
    """
    names = range_order(weights, order)
    total = sum(max(0.0, weights.get(name, 0.0)) for name in names)
    if total <= 0:
        return ()
    ranges = []
    cumulative = 0.0
    for name in names:
        weight = max(0.0, weights.get(name, 0.0))
        if weight > 0:
            cumulative += weight
            ranges.append((name, cumulative * 100.0 / total))
    return tuple(ranges)


def backend_at(point: float, ranges: Sequence[tuple[str, float]]) -> str | None:
    """The backend whose range holds ``point`` (None when no backend has weight)."""
    for name, upper in ranges:
        if point < upper:
            return name
    return ranges[-1][0] if ranges else None  # float rounding at the very top


def backend_for_point(
    point: float, weights: Mapping[str, float], order: Sequence[str]
) -> str | None:
    """The backend whose cumulative weight range holds ``point`` (None if no weight at all)."""
    return backend_at(point, weight_ranges(weights, order))


def default_order(backends: Iterable[str]) -> tuple[str, ...]:
    """``new`` first (see the module docstring), then the others in their given order."""
    names = list(backends)
    return (*[n for n in names if n == "new"], *[n for n in names if n != "new"])


# -- session memory ---------------------------------------------------------------------------


class RecentWrites:
    """When each session last wrote; bounded (least recently written evicted first)."""

    def __init__(self, window: float, max_sessions: int = 100_000) -> None:
        self.window = window
        self.max_sessions = max_sessions
        self._last: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def note(self, session: str, now: float) -> None:
        self._last[session] = now
        self._last.move_to_end(session)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)
        # Entries at the old end that are past the window are useless: drop a few per call.
        for _ in range(2):
            if not self._last:
                break
            oldest, when = next(iter(self._last.items()))
            if now - when < self.window:
                break
            del self._last[oldest]

    def recent(self, session: str, now: float) -> bool:
        when = self._last.get(session)
        if when is None:
            return False
        if now - when < self.window:
            return True
        del self._last[session]
        return False


# -- the balancer -----------------------------------------------------------------------------


class HealthView(Protocol):
    """What the balancer asks of instance health (`changeover.proxy.health.HealthTracker`)."""

    def is_healthy(self, key: str, now: float | None = None) -> bool: ...

    def routed(self, key: str, now: float | None = None) -> None: ...


class NoRoute(Exception):
    """No instance can take this request; ``str()`` says why (the chooser answers 503)."""


@dataclass(frozen=True)
class Decision:
    instance: Instance
    set_cookie: str | None  # the Set-Cookie value for a new session, else None
    mirror: Instance | None  # also send this read here (shadow comparison)
    reason: str  # sticky, new-session, write-owner, read-your-writes, fallback: …, panic: …
    session: str
    write: bool = False  # the write rules call it a write


class Balancer:
    """Routes requests by the current `RoutingState`; replace ``balancer.state`` to change it.

    Within a backend it picks among non-drained healthy instances, least in flight first when
    an ``in_flight(key)`` count is given, round-robin otherwise and among ties.

    When the chosen backend has no usable instance:
    - a read goes to the next backend in range order that has one (``fallback: …``);
    - a write never leaves the write owner (the single-writer rule is worth more than one
      request): if every owner instance is unhealthy it is tried anyway (``panic: …``), since
      health can be stale and a dead one fails fast with 502;
    - a read with no healthy instance anywhere likewise tries an unhealthy one (``panic: …``);
    - drained instances are never chosen; with none left the request gets 503 (`NoRoute`).
    """

    def __init__(
        self,
        state: RoutingState,
        backends: Mapping[str, Sequence[Instance]],
        *,
        write_rules: WriteRules | None = None,
        ryw_window: float = 2.0,
        cookie_name: str = DEFAULT_COOKIE,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        health: HealthView | None = None,
        hold: WriteHold | None = None,
        order: Sequence[str] | None = None,
        in_flight: Callable[[str], int] | None = None,
        max_sessions: int = 100_000,
        new_session_id: Callable[[], str] | None = None,
    ) -> None:
        self.order = tuple(order) if order is not None else default_order(backends)
        self.state = state
        self.backends = backends
        self.write_rules = write_rules or WriteRules()
        self.cookie_name = cookie_name
        self.clock = clock
        self.rng = rng or random.Random()
        self.health = health
        self.hold = hold or WriteHold()
        self.writes = WritesInFlight()
        self.in_flight = in_flight
        self.recent_writes = RecentWrites(ryw_window, max_sessions)
        self.new_session_id = new_session_id or (lambda: secrets.token_urlsafe(16))
        self._next: dict[str, int] = {}

    @property
    def state(self) -> RoutingState:
        return self._state

    @state.setter
    def state(self, new: RoutingState) -> None:
        """Swap the state; ending a hold releases the held writes to the (new) write owner."""
        old = getattr(self, "_state", None)
        # Derived once per change, not per request: the hot path only walks these tuples.
        self._ranges = weight_ranges(new.weights, self.order)
        self._all_backends = tuple(range_order(new.weights, self.order))
        self._state = new
        if old is not None and old.holding and not new.holding:
            self.hold.release()

    @property
    def backends(self) -> dict[str, list[Instance]]:
        return {
            name: [instance for instance, _ in members] for name, members in self._members.items()
        }

    @backends.setter
    def backends(self, backends: Mapping[str, Sequence[Instance]]) -> None:
        # Instance.key formats a string on each access; keep it next to each instance.
        self._members = {
            name: [(instance, instance.key) for instance in instances]
            for name, instances in backends.items()
        }

    @property
    def ryw_window(self) -> float:
        return self.recent_writes.window

    def is_write(self, method: str, path: str) -> bool:
        return self.write_rules.is_write(method, path)

    def session_of(self, cookies: Mapping[str, str]) -> str | None:
        value = cookies.get(self.cookie_name)
        if value is not None and _SESSION_ID.fullmatch(value):
            return value
        return None

    def decide(
        self,
        method: str,
        path: str,
        cookies: Mapping[str, str],
        *,
        has_body: bool = False,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        """Route one request; raises `NoRoute` when no instance can take it."""
        now = self.clock()
        state = self._state
        session = self.session_of(cookies)
        set_cookie = None
        reason = "sticky"
        if session is None:
            session = self.new_session_id()
            set_cookie = f"{self.cookie_name}={session}; Path=/; HttpOnly; SameSite=Lax"
            reason = "new-session"

        if self.is_write(method, path):
            self.recent_writes.note(session, now)
            owner = state.write_owner
            instance = self._pick(owner, state, exclude, now, healthy_only=True)
            reason = "write-owner"
            if instance is None:
                instance = self._pick(owner, state, exclude, now, healthy_only=False)
                reason = f"panic: no healthy instance in {owner}, the write owner; trying anyway"
            if instance is None:
                raise NoRoute(f"no instance of the write owner {owner!r} can take writes")
            return Decision(instance, set_cookie, None, reason, session, write=True)

        target = backend_at(session_point(session), self._ranges)
        if target is None:
            target = state.write_owner  # no weights at all: the owner serves everything
        if target != state.write_owner and self.recent_writes.recent(session, now):
            target = state.write_owner
            reason = "read-your-writes"

        instance = self._pick(target, state, exclude, now, healthy_only=True)
        if instance is None:
            for other in self._all_backends:
                if other == target:
                    continue
                instance = self._pick(other, state, exclude, now, healthy_only=True)
                if instance is not None:
                    reason = f"fallback: no healthy instance in {target}"
                    break
        if instance is None:
            for backend in (target, *self._all_backends):
                instance = self._pick(backend, state, exclude, now, healthy_only=False)
                if instance is not None:
                    reason = f"panic: no healthy instance in any backend; trying {instance.key}"
                    break
        if instance is None:
            raise NoRoute(f"no instance can take requests for {target!r} (all drained or down)")

        mirror = None
        if (
            state.mirror_share > 0
            and method.upper() == "GET"
            and not has_body
            and self.rng.random() < state.mirror_share
        ):
            mirror = self._mirror_for(instance.backend, state, now)
        return Decision(instance, set_cookie, mirror, reason, session)

    def _pick(
        self,
        backend: str,
        state: RoutingState,
        exclude: frozenset[str],
        now: float,
        *,
        healthy_only: bool,
        trial: bool = True,
    ) -> Instance | None:
        health = self.health if healthy_only else None
        drained = state.drained
        usable = [
            (instance, key)
            for instance, key in self._members.get(backend, ())
            if key not in drained
            and key not in exclude
            and (health is None or health.is_healthy(key, now))
        ]
        if not usable:
            return None
        start = self._next.get(backend, 0)
        self._next[backend] = start + 1
        chosen, key = usable[start % len(usable)]
        if self.in_flight is not None and len(usable) > 1:
            # Least in flight; ties keep the round-robin order starting at ``start``.
            count = self.in_flight
            rotated = usable[start % len(usable) :] + usable[: start % len(usable)]
            chosen, key = min(rotated, key=lambda member: count(member[1]))
        if trial and self.health is not None:
            self.health.routed(key, now)
        return chosen

    def _mirror_for(self, backend: str, state: RoutingState, now: float) -> Instance | None:
        # The mirror's answer is discarded, so it must not spend a half-open trial.
        for other in self._all_backends:
            if other == backend:
                continue
            instance = self._pick(other, state, frozenset(), now, healthy_only=True, trial=False)
            if instance is not None:
                return instance
        return None

    async def chooser(self, head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
        """The core's ``Chooser``: hold writes while holding, then route by `decide`."""
        # Retries are held too: a write retried during a hold must not reach the old owner.
        if self._state.holding and self.is_write(head.method, head.path):
            try:
                await self.hold.wait()
            except HoldRejected as exc:
                raise Reject(503, str(exc), (("Retry-After", "1"),)) from None
        try:
            decision = self.decide(
                head.method, head.path, head.cookies(), has_body=head.has_body, exclude=exclude
            )
        except NoRoute as exc:
            raise Reject(503, str(exc), (("Retry-After", "1"),)) from None
        headers = (("Set-Cookie", decision.set_cookie),) if decision.set_cookie else ()
        mirror = decision.mirror if attempt == 0 else None
        # Counted from here, with no await before the core takes the callback: a hold that
        # starts after this point sees the write among those it waits for.
        finished = self.writes.started(decision.instance.backend) if decision.write else None
        return Choice(
            decision.instance, extra_response_headers=headers, mirror=mirror, finished=finished
        )
