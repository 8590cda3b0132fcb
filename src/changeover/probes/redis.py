"""Redis probes: reachability, replication, cluster health, eviction policy and cache hit rate.

Every probe reads ``INFO`` sections (or ``CLUSTER INFO``) as plain text, so ``interpret`` works
on the same ``key:value`` lines an operator sees in ``redis-cli info`` and runs on managed Redis
services that disable ``CONFIG``. Connection and authentication failures become plain reasons
that name the address but never the password.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from pydantic import Field, model_validator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    Status,
    SystemParams,
    Unreachable,
)
from changeover.units import Duration, Ratio, format_duration, parse_duration

CLUSTER_SLOTS = 16384

Info = Mapping[str, str]


# --- pure helpers -------------------------------------------------------------------------------


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text → ``{key: value}``; section headers and blanks skipped."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        info[key] = value
    return info


def parse_fields(value: str) -> dict[str, str]:
    """``ip=10.0.0.2,port=6379,state=online`` → ``{"ip": "10.0.0.2", ...}``."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        if "=" in item:
            key, val = item.split("=", 1)
            fields[key] = val
    return fields


def _int(info: Info, key: str, default: int = 0) -> int:
    try:
        return int(info.get(key, default))
    except ValueError:
        return default


def redis_address(url: str) -> str:
    """Where a Redis URL points, for messages: ``127.0.0.1:6379`` or a socket path; no password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or url
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- I/O ----------------------------------------------------------------------------------------


def _raw_text(response: Any, **_options: Any) -> str:
    """Response callback that keeps INFO-like replies as text, so we parse them ourselves."""
    if isinstance(response, bytes):
        return response.decode("utf-8", errors="replace")
    return str(response)


def _connect_failure(where: str, exc: BaseException) -> str:
    """A plain reason for a failed connection, from the OS error behind redis-py's message."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, socket.gaierror):
        return f"cannot connect to Redis at {where}: the host name does not resolve"
    if isinstance(cause, ssl.SSLError):
        return f"cannot connect to Redis at {where}: TLS failed ({cause.reason or cause})"
    if isinstance(cause, OSError) and cause.errno is not None:
        if cause.errno == errno.ECONNREFUSED:
            return f"cannot connect to Redis at {where}: connection refused"
        return f"cannot connect to Redis at {where}: {os.strerror(cause.errno).lower()}"
    return f"cannot connect to Redis at {where}: {exc}"


def _auth_failure(where: str, field: str, exc: BaseException) -> str:
    text = str(exc)
    # Redis answers NOAUTH ("Authentication required"; under HELLO "must be called with the
    # client already authenticated") when no password was sent at all.
    if "NOAUTH" in text or "Authentication required" in text or "already authenticated" in text:
        return f"Redis at {where} requires a password, but {field} gives none"
    return f"Redis at {where} rejected the username or password in {field} ({text.rstrip('.')})"


@asynccontextmanager
async def redis_client(
    params: SystemParams, ctx: ProbeContext, kinds: tuple[str, ...]
) -> AsyncIterator[aioredis.Redis]:
    """A client for the plan's Redis system; redis-py errors become ``Unreachable``."""
    system = ctx.system(params.system, kinds)
    url = ctx.secret(system.url, what=f"systems.{params.system}.url")
    where = redis_address(url)
    try:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=params.timeout,
            socket_connect_timeout=params.timeout,
            # A probe observes once; retrying would hide a flapping server and blow the timeout.
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise Unreachable(f"systems.{params.system}.url is not a valid Redis URL: {exc}") from None
    client.set_response_callback("INFO", _raw_text)
    client.set_response_callback("CLUSTER INFO", _raw_text)
    try:
        yield client
    except rexc.AuthenticationError as exc:
        raise Unreachable(_auth_failure(where, f"systems.{params.system}.url", exc)) from None
    except rexc.NoPermissionError as exc:
        raise Unreachable(f"Redis at {where} denied a command this check needs: {exc}") from None
    except rexc.TimeoutError:
        raise Unreachable(
            f"Redis at {where} did not answer within {params.timeout:g}s (timeout)"
        ) from None
    except rexc.BusyLoadingError:
        raise Unreachable(f"Redis at {where} is still loading its dataset into memory") from None
    except (rexc.ConnectionError, OSError) as exc:
        raise Unreachable(_connect_failure(where, exc)) from None
    except rexc.ResponseError as exc:
        raise Unreachable(f"Redis at {where} answered with an error: {exc}") from None
    finally:
        await client.aclose()


async def _text_command(client: aioredis.Redis, *args: str) -> str:
    """Run an INFO-like command whose reply is kept as text (see ``_raw_text``)."""
    reply = await client.execute_command(*args)  # type: ignore[no-untyped-call]
    return str(reply)


async def _info(client: aioredis.Redis, section: str) -> dict[str, str]:
    return parse_info(await _text_command(client, "INFO", section))


# --- redis.ping ---------------------------------------------------------------------------------


class PingParams(SystemParams):
    max_latency: Duration = Field(
        default=parse_duration("100ms"),
        description="Highest acceptable PING round trip (median of 3), e.g. '100ms'.",
    )


@dataclass(frozen=True)
class PingRaw:
    latency_ms: float
    redis_version: str


class RedisPing(Probe[PingParams, PingRaw]):
    """Redis answers PING quickly: the cache is up and reachable from here."""

    name = "redis.ping"
    summary = "Redis answers PING within max_latency"
    Params = PingParams
    system_kinds = ("redis",)

    async def gather(self, params: PingParams, ctx: ProbeContext) -> PingRaw:
        async with redis_client(params, ctx, self.system_kinds) as client:
            # INFO first, so connecting and authenticating are not part of the measured latency.
            server = await _info(client, "server")
            samples = []
            for _ in range(3):
                started = time.perf_counter()
                await client.ping()
                samples.append((time.perf_counter() - started) * 1000)
        return PingRaw(sorted(samples)[1], server.get("redis_version", "unknown"))

    def interpret(self, params: PingParams, raw: PingRaw) -> CheckResult:
        max_ms = params.max_latency.total_seconds() * 1000
        latency = round(raw.latency_ms, 2)
        evidence = [
            Measure("latency_ms", latency, expected=f"<= {max_ms:g}", ok=latency <= max_ms),
            Measure("redis_version", raw.redis_version),
        ]
        return CheckResult.judge(
            evidence,
            passed=f"Redis {raw.redis_version} answers PING in {latency:g} ms",
            failed=f"Redis answers PING in {latency:g} ms, slower than the {max_ms:g} ms allowed",
        )


# --- redis.replication --------------------------------------------------------------------------


class ReplicationParams(SystemParams):
    role: Literal["master", "replica", "any"] = Field(
        default="any", description="Role the server must have; 'any' checks whichever it has."
    )
    min_replicas: int = Field(
        default=0, ge=0, description="For a master: least number of connected replicas."
    )
    max_lag_bytes: int = Field(
        default=1048576,
        ge=0,
        description="For a master: largest replication offset gap of any replica, in bytes.",
    )


class RedisReplication(Probe[ReplicationParams, dict[str, str]]):
    """Redis replication is healthy: the role is right, replicas are connected and caught up."""

    name = "redis.replication"
    summary = "Redis role, connected replicas and their lag in bytes"
    Params = ReplicationParams
    system_kinds = ("redis",)

    async def gather(self, params: ReplicationParams, ctx: ProbeContext) -> dict[str, str]:
        async with redis_client(params, ctx, self.system_kinds) as client:
            return await _info(client, "replication")

    def interpret(self, params: ReplicationParams, raw: dict[str, str]) -> CheckResult:
        role = "replica" if raw.get("role") == "slave" else raw.get("role", "unknown")
        if params.role != "any" and role != params.role:
            where = ""
            if role == "replica":
                where = f" of {raw.get('master_host', '?')}:{raw.get('master_port', '?')}"
            return CheckResult.fail(
                f"expected a {params.role}, but this Redis is a {role}{where}",
                Measure("role", role, expected=params.role, ok=False),
            )
        if role == "replica":
            return self._replica(raw)
        if role == "master":
            return self._master(params, raw)
        return CheckResult.fail(f"Redis reports an unknown replication role {role!r}")

    def _replica(self, raw: Mapping[str, str]) -> CheckResult:
        master = f"{raw.get('master_host', '?')}:{raw.get('master_port', '?')}"
        link = raw.get("master_link_status", "unknown")
        evidence = [
            Measure("role", "replica"),
            Measure("master_link_status", link, expected="up", ok=link == "up"),
            Measure("slave_repl_offset", _int(raw, "slave_repl_offset")),
        ]
        if "master_last_io_seconds_ago" in raw:
            evidence.append(
                Measure("master_last_io_seconds_ago", _int(raw, "master_last_io_seconds_ago", -1))
            )
        failed = f"replica's link to its master {master} is {link}"
        if raw.get("master_sync_in_progress") == "1":
            failed += " (a full resynchronisation is in progress)"
        return CheckResult.judge(
            evidence,
            passed=f"replica of {master}, link up",
            failed=failed,
            details={"master": master},
        )

    def _master(self, params: ReplicationParams, raw: Mapping[str, str]) -> CheckResult:
        connected = _int(raw, "connected_slaves")
        master_offset = _int(raw, "master_repl_offset")
        replicas: list[dict[str, Any]] = []
        for key in sorted(raw):
            if not (key.startswith("slave") and key[5:].isdigit()):
                continue
            fields = parse_fields(raw[key])
            offset = int(fields.get("offset", "0") or 0)
            replicas.append(
                {
                    "address": f"{fields.get('ip', '?')}:{fields.get('port', '?')}",
                    "state": fields.get("state", "unknown"),
                    "offset": offset,
                    "lag_bytes": max(0, master_offset - offset),
                }
            )
        evidence = [
            Measure("role", "master"),
            Measure(
                "connected_replicas",
                connected,
                expected=f">= {params.min_replicas}",
                ok=connected >= params.min_replicas,
            ),
        ]
        problems = []
        if connected < params.min_replicas:
            problems.append(f"{connected} connected replicas, need at least {params.min_replicas}")
        for replica in replicas:
            lag_ok = replica["lag_bytes"] <= params.max_lag_bytes
            online = replica["state"] == "online"
            evidence.append(
                Measure(
                    f"lag_bytes[{replica['address']}]",
                    replica["lag_bytes"],
                    expected=f"<= {params.max_lag_bytes}",
                    ok=lag_ok,
                    unit="bytes",
                )
            )
            if not online:
                evidence.append(
                    Measure(
                        f"state[{replica['address']}]",
                        replica["state"],
                        expected="online",
                        ok=False,
                    )
                )
                problems.append(f"replica {replica['address']} is {replica['state']}, not online")
            if not lag_ok:
                problems.append(
                    f"replica {replica['address']} is {replica['lag_bytes']} bytes behind "
                    f"(allowed {params.max_lag_bytes})"
                )
        return CheckResult.judge(
            evidence,
            passed=f"master with {connected} connected replicas, all within "
            f"{params.max_lag_bytes} bytes",
            failed="; ".join(problems) or None,
            details={"master_repl_offset": master_offset, "replicas": replicas},
        )


# --- redis.cluster ------------------------------------------------------------------------------


class ClusterParams(SystemParams):
    require_cluster: bool = Field(
        default=False, description="Fail when the server is a standalone (non-cluster) Redis."
    )


@dataclass(frozen=True)
class ClusterRaw:
    enabled: bool
    cluster_info: dict[str, str]


class RedisCluster(Probe[ClusterParams, ClusterRaw]):
    """Redis Cluster is healthy: state ok and all 16384 hash slots assigned and serving."""

    name = "redis.cluster"
    summary = "Redis Cluster state ok with every hash slot assigned"
    Params = ClusterParams
    system_kinds = ("redis",)

    async def gather(self, params: ClusterParams, ctx: ProbeContext) -> ClusterRaw:
        async with redis_client(params, ctx, self.system_kinds) as client:
            enabled = (await _info(client, "cluster")).get("cluster_enabled") == "1"
            if not enabled:
                return ClusterRaw(False, {})
            return ClusterRaw(True, parse_info(await _text_command(client, "CLUSTER INFO")))

    def interpret(self, params: ClusterParams, raw: ClusterRaw) -> CheckResult:
        if not raw.enabled:
            if params.require_cluster:
                return CheckResult.fail(
                    "standalone Redis, but the plan requires a Redis Cluster",
                    Measure("cluster_enabled", False, expected="true", ok=False),
                )
            return CheckResult.passed(
                "standalone, not clustered", Measure("cluster_enabled", False)
            )
        info = raw.cluster_info
        state = info.get("cluster_state", "unknown")
        assigned = _int(info, "cluster_slots_assigned")
        slots_ok = _int(info, "cluster_slots_ok")
        failing = _int(info, "cluster_slots_pfail") + _int(info, "cluster_slots_fail")
        evidence = [
            Measure("cluster_state", state, expected="ok", ok=state == "ok"),
            Measure(
                "cluster_slots_assigned",
                assigned,
                expected=f"= {CLUSTER_SLOTS}",
                ok=assigned == CLUSTER_SLOTS,
            ),
            Measure("cluster_slots_ok", slots_ok, expected=f"= {CLUSTER_SLOTS}"),
            Measure("cluster_slots_failing", failing, expected="= 0"),
            Measure("cluster_known_nodes", _int(info, "cluster_known_nodes")),
        ]
        problems = []
        if state != "ok":
            problems.append(f"cluster_state is {state}")
        if assigned != CLUSTER_SLOTS:
            problems.append(f"only {assigned} of {CLUSTER_SLOTS} hash slots are assigned")
        if failing:
            problems.append(f"{failing} hash slots are on failing nodes")
        return CheckResult.judge(
            evidence,
            passed=f"cluster ok, all {CLUSTER_SLOTS} slots assigned "
            f"({_int(info, 'cluster_known_nodes')} nodes)",
            failed="; ".join(problems) or None,
        )


# --- redis.maxmemory-policy ---------------------------------------------------------------------

EVICTING_POLICIES = ["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "volatile-ttl"]


class MaxmemoryParams(SystemParams):
    allowed: list[str] = Field(
        default_factory=lambda: list(EVICTING_POLICIES),
        min_length=1,
        description="Acceptable maxmemory-policy values.",
    )
    require_maxmemory: bool = Field(
        default=True, description="Require a memory limit (maxmemory > 0)."
    )


class RedisMaxmemoryPolicy(Probe[MaxmemoryParams, dict[str, str]]):
    """Redis has a memory limit and an eviction policy fit for a cache."""

    name = "redis.maxmemory-policy"
    summary = "Redis maxmemory is set and maxmemory-policy evicts"
    Params = MaxmemoryParams
    system_kinds = ("redis",)

    async def gather(self, params: MaxmemoryParams, ctx: ProbeContext) -> dict[str, str]:
        # INFO memory rather than CONFIG GET: managed services (ElastiCache, Memorystore)
        # disable CONFIG but report both settings here.
        async with redis_client(params, ctx, self.system_kinds) as client:
            return await _info(client, "memory")

    def interpret(self, params: MaxmemoryParams, raw: dict[str, str]) -> CheckResult:
        policy = raw.get("maxmemory_policy", "unknown")
        maxmemory = _int(raw, "maxmemory")
        policy_ok = policy in params.allowed
        memory_ok = maxmemory > 0 or not params.require_maxmemory
        evidence = [
            Measure(
                "maxmemory_policy",
                policy,
                expected=f"one of {', '.join(params.allowed)}",
                ok=policy_ok,
            ),
            Measure(
                "maxmemory",
                maxmemory,
                expected="> 0" if params.require_maxmemory else None,
                ok=memory_ok if params.require_maxmemory else None,
                unit="bytes",
            ),
        ]
        problems = []
        if policy == "noeviction" and not policy_ok:
            if maxmemory == 0:
                problems.append(
                    "maxmemory-policy is noeviction and no maxmemory is set: the cache grows "
                    "until the machine runs out of memory, then Redis swaps or is killed; set "
                    "maxmemory and an evicting policy such as allkeys-lru"
                )
            else:
                problems.append(
                    "maxmemory-policy is noeviction: once maxmemory is reached every write fails "
                    "with an OOM error; use an evicting policy such as allkeys-lru"
                )
        else:
            if not policy_ok:
                problems.append(
                    f"maxmemory-policy is {policy}, expected one of {', '.join(params.allowed)}"
                )
            if not memory_ok:
                problems.append(
                    "no maxmemory is set: the cache can grow until the machine runs out of memory"
                )
        limit = f"maxmemory {maxmemory} bytes" if maxmemory else "no maxmemory"
        return CheckResult.judge(
            evidence, passed=f"{policy} with {limit}", failed="; ".join(problems) or None
        )


# --- redis.hit-rate -----------------------------------------------------------------------------


class HitRateParams(SystemParams):
    interval: Duration = Field(
        default=parse_duration("10s"),
        description="Time between the two INFO stats samples; the hit rate is of this interval.",
    )
    min: Ratio = Field(
        default=0.8, ge=0, le=1, description="Lowest acceptable hit rate, e.g. '80%'."
    )
    min_lookups: int = Field(
        default=1,
        ge=1,
        description="Fewer lookups than this in the interval gives a warning (no cache traffic).",
    )
    timeout: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="Seconds before giving up; must exceed interval (default: interval + 10s).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_timeout(cls, data: Any) -> Any:
        # The probe sleeps `interval` between its samples, so the default timeout follows it.
        if isinstance(data, dict) and "timeout" not in data:
            try:
                interval = parse_duration(data.get("interval", "10s"))
            except ValueError:
                return data  # the field validator reports the bad interval
            data = {**data, "timeout": interval.total_seconds() + 10}
        return data

    @model_validator(mode="after")
    def _timeout_exceeds_interval(self) -> HitRateParams:
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive, e.g. '10s'")
        if self.timeout <= self.interval.total_seconds():
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be longer than interval "
                f"({format_duration(self.interval)}): the probe waits one interval between "
                "its two samples"
            )
        return self


@dataclass(frozen=True)
class HitRateRaw:
    hits_before: int
    misses_before: int
    hits_after: int
    misses_after: int
    elapsed_s: float


class RedisHitRate(Probe[HitRateParams, HitRateRaw]):
    """The cache serves enough reads from memory: keyspace hit rate over a short interval."""

    name = "redis.hit-rate"
    summary = "Redis keyspace hit rate over an interval is at least min"
    Params = HitRateParams
    system_kinds = ("redis",)

    async def gather(self, params: HitRateParams, ctx: ProbeContext) -> HitRateRaw:
        async with redis_client(params, ctx, self.system_kinds) as client:
            before = await _info(client, "stats")
            started = time.perf_counter()
            await asyncio.sleep(params.interval.total_seconds())
            after = await _info(client, "stats")
            elapsed = time.perf_counter() - started
        return HitRateRaw(
            _int(before, "keyspace_hits"),
            _int(before, "keyspace_misses"),
            _int(after, "keyspace_hits"),
            _int(after, "keyspace_misses"),
            elapsed,
        )

    def interpret(self, params: HitRateParams, raw: HitRateRaw) -> CheckResult:
        hits = raw.hits_after - raw.hits_before
        misses = raw.misses_after - raw.misses_before
        window = f"{raw.elapsed_s:.1f}s"
        if hits < 0 or misses < 0:
            return CheckResult(
                Status.WARN,
                f"hit rate unknown: the counters went backwards during the {window} interval "
                "(Redis restarted or CONFIG RESETSTAT ran)",
            )
        lookups = hits + misses
        counts = [
            Measure("hits", hits),
            Measure("misses", misses),
            Measure("lookups", lookups, expected=f">= {params.min_lookups}"),
        ]
        if lookups < params.min_lookups:
            return CheckResult(
                Status.WARN,
                f"no cache traffic in the interval: {lookups} lookups in {window} "
                f"(need at least {params.min_lookups} to judge the hit rate)",
                tuple(counts),
            )
        rate = hits / lookups
        percent = round(rate * 100, 2)
        evidence = [
            Measure(
                "hit_rate",
                percent,
                expected=f">= {params.min * 100:g}",
                ok=rate >= params.min,
                unit="%",
            ),
            *counts,
        ]
        return CheckResult.judge(
            evidence,
            passed=f"hit rate {percent:g}% over {window} ({lookups} lookups)",
            failed=f"hit rate {percent:g}% over {window} ({hits} hits, {misses} misses) is "
            f"below {params.min * 100:g}%",
        )
