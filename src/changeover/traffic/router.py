"""The ``Router`` protocol: how changeover shifts traffic between the legacy and the new app.

One protocol, one module per load balancer (``haproxy.py``, ``nginx.py``, later ``builtin.py``).
Weights are percentages per logical backend (``{"legacy": 90, "new": 10}``); each router turns
them into its own units. ``server_weights`` is the pure percent → per-server integer mapping.
Who owns writes is not part of this protocol (only the built-in proxy can pin writes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from changeover.errors import ChangeoverError

if TYPE_CHECKING:
    from changeover.plan.systems import RouterSystem
    from changeover.probes.base import ProbeContext

#: HAProxy's largest server weight; nginx takes any positive integer, we use the same scale.
MAX_WEIGHT = 256
#: tolerance when checking that percentages add up to 100
_SUM_TOLERANCE = 0.01

ServerStatus = Literal["UP", "DOWN", "DRAIN", "MAINT"]
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RouterError(ChangeoverError):
    """The load balancer refused a change, cannot be reached, or does not show what was set."""


class WeightMismatch(RouterError):
    """Read back after a change, the router shows other weights than the ones just applied."""


@dataclass(frozen=True)
class Server:
    """One upstream server of a logical backend, as the router knows it.

    ``name`` is unique across backends (HAProxy: the ``server`` name in the config, e.g.
    ``new-1``); ``host``/``port`` is where it listens (nginx renders them; HAProxy ignores them).
    """

    backend: str
    name: str
    host: str = "127.0.0.1"
    port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Weights:
    """Traffic shares in percent per logical backend, and the per-server weights behind them.

    ``percent`` is the share of new (not yet sticky) sessions each backend receives, computed
    from the servers able to take new sessions right now (not drained, in maintenance or down);
    it sums to 100, or is all zeros when no server can take traffic. ``servers`` holds the
    router's own weight per server name (empty for routers without per-server weights).
    """

    percent: Mapping[str, float]
    servers: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, backend: str) -> float:
        return self.percent.get(backend, 0.0)

    def describe(self) -> str:
        return " ".join(f"{name}={share:g}%" for name, share in sorted(self.percent.items()))


@dataclass(frozen=True)
class InstanceStats:
    """Counters of one server since the router started (or its counters were cleared)."""

    backend: str
    instance: str
    status: ServerStatus
    weight: int | None  # the router's weight for this server; None when it has none
    current_sessions: int | None  # None when the router cannot tell (nginx OSS)
    requests: int
    responses: Mapping[str, int]  # "1xx" .. "5xx" → count

    @property
    def errors(self) -> int:
        return self.responses.get("5xx", 0)


@dataclass(frozen=True)
class RouterStats:
    """Counters per server, with per-backend totals."""

    instances: tuple[InstanceStats, ...]

    def of(self, backend: str) -> list[InstanceStats]:
        return [stats for stats in self.instances if stats.backend == backend]

    def requests(self, backend: str) -> int:
        return sum(stats.requests for stats in self.of(backend))

    def responses(self, backend: str) -> dict[str, int]:
        totals = dict.fromkeys(RESPONSE_CLASSES, 0)
        for stats in self.of(backend):
            for klass, count in stats.responses.items():
                totals[klass] = totals.get(klass, 0) + count
        return totals


class Router(Protocol):
    """What every load balancer changeover drives can do."""

    async def set_weights(self, weights: Mapping[str, float]) -> Weights:
        """Apply percentages per backend, read them back and return what the router shows.

        Raises ``RouterError`` when the router refuses, ``WeightMismatch`` when the read-back
        disagrees with what was applied.
        """
        ...

    async def weights(self) -> Weights:
        """The weights the router applies right now (read from the router, not remembered)."""
        ...

    async def drain(self, backend: str, instance: str) -> None:
        """Stop sending new sessions to one instance; requests in flight complete."""
        ...

    async def ready(self, backend: str, instance: str) -> None:
        """Put a drained instance back into service."""
        ...

    async def stats(self) -> RouterStats: ...

    async def close(self) -> None: ...


def normalise_percent(weights: Mapping[str, float], backends: Sequence[str]) -> dict[str, float]:
    """Check ``weights`` against the known ``backends``: names known, 0..100, sum 100.

    A backend not mentioned gets 0 %. Raises ``RouterError`` with a plain message otherwise.
    """
    unknown = sorted(set(weights) - set(backends))
    if unknown:
        raise RouterError(
            f"unknown backend {', '.join(unknown)}: the router knows {', '.join(backends)}"
        )
    percent = {backend: float(weights.get(backend, 0.0)) for backend in backends}
    for backend, share in percent.items():
        if not math.isfinite(share) or share < 0 or share > 100:
            raise RouterError(f"weight of {backend} must be between 0 and 100 %, got {share:g}")
    total = sum(percent.values())
    if abs(total - 100.0) > _SUM_TOLERANCE:
        raise RouterError(f"weights must add up to 100 %, got {total:g} ({_describe(percent)})")
    return percent


def server_weights(
    percent: Mapping[str, float],
    servers: Mapping[str, Sequence[str]],
    *,
    max_weight: int = MAX_WEIGHT,
) -> dict[str, int]:
    """Per-server integer weights (0..``max_weight``) that give each backend its percentage.

    ``servers`` maps each backend to the servers that take its traffic. Each backend gets an
    integer total proportional to its percentage, split as evenly as integers allow across its
    servers (totals 7 over 2 servers → 4 and 3; the first servers take the remainder), so
    new=10 % on 1 server vs legacy=90 % on 2 servers gives 56 : 252 : 252, exactly 10 %.

    Rounding: every scale whose fullest server has weight 1..``max_weight`` is tried and the
    one with the smallest worst-case share error wins, ties going to the larger scale (more
    points on a consistent-hash ring, so hashed sessions follow the shares more closely).
    0 % gives weight 0 (no new sessions; with 100 % elsewhere the other backend gets 0); a
    positive percentage never rounds down to no traffic (its backend total is at least 1), so
    at the extremes the error is at most about 100 / (``max_weight`` + 1) points (99.9 % with
    two servers on the other side: 256 : 1 : 0 → 99.61 %). Raises ``RouterError`` when a
    backend with a positive share has no server.
    """
    for backend, share in percent.items():
        if share > 0 and not servers.get(backend):
            raise RouterError(
                f"backend {backend} should get {share:g} % but has no server in service"
            )
    active = {b: p for b, p in percent.items() if p > 0}
    zero = {name: 0 for members in servers.values() for name in members}
    if not active:
        return zero
    # the backend whose servers carry the most each sets the scale
    fullest = max(active, key=lambda b: active[b] / len(servers[b]))
    best: tuple[float, dict[str, int]] | None = None
    for top in range(max_weight, 0, -1):
        scale = top * len(servers[fullest]) / active[fullest]  # weight units per percent
        candidate = dict(zero)
        for backend, share in active.items():
            members = servers[backend]
            total = max(1, round(share * scale))
            base, extra = divmod(total, len(members))
            for index, name in enumerate(members):
                candidate[name] = base + (1 if index < extra else 0)
        if max(candidate.values()) > max_weight:
            continue
        error = _worst_error(percent, servers, candidate)
        if best is None or error < best[0] - 1e-12:
            best = (error, candidate)
    assert best is not None  # top=1 always fits: every server weight is then 0 or 1
    return best[1]


def shares(weights: Mapping[str, int], servers: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Percent per backend given per-server weights (all zeros when every weight is 0)."""
    total = sum(weights.get(name, 0) for members in servers.values() for name in members)
    if total == 0:
        return dict.fromkeys(servers, 0.0)
    return {
        backend: 100.0 * sum(weights.get(name, 0) for name in members) / total
        for backend, members in servers.items()
    }


def _worst_error(
    percent: Mapping[str, float], servers: Mapping[str, Sequence[str]], weights: Mapping[str, int]
) -> float:
    got = shares(weights, servers)
    return max(abs(got.get(backend, 0.0) - share) for backend, share in percent.items())


def _describe(percent: Mapping[str, float]) -> str:
    return " ".join(f"{name}={share:g}" for name, share in percent.items())


def servers_by_backend(servers: Sequence[Server]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for server in servers:
        grouped.setdefault(server.backend, []).append(server.name)
    return grouped


def open_router(
    system: RouterSystem,
    servers: Sequence[Server],
    ctx: ProbeContext,
    *,
    name: str = "router",
    haproxy_backend: str = "app",
) -> Router:
    """The router a plan's ``systems.<name>`` describes, driving ``servers``.

    HAProxy: ``admin`` is the runtime API socket, ``haproxy_backend`` the HAProxy backend that
    holds every server. nginx: ``config`` is the main nginx.conf, changeover's include is
    ``changeover-upstream.conf`` beside it, and ``admin`` (optional) the status URL the include
    serves. Built-in proxy: ``admin`` is its admin API URL and ``token`` its bearer token.
    ``admin`` and ``token`` are resolved here, at the moment of use (secret references).
    """
    admin = ctx.secret(system.admin, what=f"systems.{name}.admin") if system.admin else None
    if system.type == "haproxy":
        from changeover.traffic.haproxy import HaproxyRouter

        if admin is None:
            raise RouterError(
                f"systems.{name}: an HAProxy router needs 'admin': the runtime API socket, "
                "e.g. /run/haproxy/admin.sock or ipv4@127.0.0.1:9999"
            )
        return HaproxyRouter(admin, servers, proxy=haproxy_backend)
    if system.type == "nginx":
        from changeover.traffic.nginx import NginxRouter

        if system.config is None:
            raise RouterError(
                f"systems.{name}: an nginx router needs 'config': the main nginx.conf that "
                "includes changeover's upstream file"
            )
        return NginxRouter(ctx.path(system.config), servers, status_url=admin)
    from changeover.traffic.builtin import BuiltinRouter

    if admin is None:
        raise RouterError(
            f"systems.{name}: the built-in proxy router needs 'admin': the proxy's admin API "
            "URL, e.g. http://127.0.0.1:9901"
        )
    token = ctx.secret(system.token, what=f"systems.{name}.token") if system.token else None
    return BuiltinRouter(admin, token, servers)
