"""PostgreSQL probes: version and role, pool capacity, slow query log, extensions, replication,
backups, schema and index hygiene of the target database, and the freshness of a heartbeat
(the newest timestamp a query returns, e.g. of background jobs).

Every probe that talks to the server goes through ``_session``: the one place that resolves the
URL secret, connects with the probe's timeout in a read-only session, and turns psycopg errors
into plain reasons that name host:port and the user, never the password or the URL.
"""

from __future__ import annotations

import asyncio
import glob
import json
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from pydantic import Field, model_validator

from changeover.errors import UsageError
from changeover.probes.base import (
    JSON,
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Status,
    SystemParams,
    Unreachable,
)
from changeover.secrets import REDACTOR
from changeover.units import Duration, format_duration, parse_duration

KINDS = ("postgres",)

# --- connecting ---------------------------------------------------------------------------------


def pg_address(url: str) -> str:
    """Where a libpq URL or ``key=value`` string points, for messages: ``db:5432``; no password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "the configured address"
    hosts = str(info.get("host") or info.get("hostaddr") or "").split(",")
    ports = str(info.get("port") or "5432").split(",")
    places = []
    for index, host in enumerate(hosts):
        port = ports[index] if index < len(ports) else ports[-1]
        if not host:
            places.append(f"the default socket (port {port})")
        elif host.startswith("/"):
            places.append(f"socket {host}/.s.PGSQL.{port}")
        else:
            places.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return ", ".join(places)


def _libpq_message(exc: BaseException) -> str:
    """The server's or libpq's own words, without psycopg's and libpq's "where" prefixes."""
    text = str(exc).strip()
    # 'connection failed: connection to server at "h", port 5432 failed: FATAL:  <message>'
    text = text.rsplit(" failed: ", 1)[-1]
    text = re.sub(r"^(FATAL|ERROR):\s+", "", text)
    return text.splitlines()[0].strip() if text else type(exc).__name__


def connect_failure(exc: BaseException, where: str, user: str | None, timeout: int) -> str:
    """A plain reason for a failed connection attempt (psycopg gives no SQLSTATE here)."""
    message = _libpq_message(exc)
    lowered = str(exc).lower()
    quoted_user = re.search(r'for user "([^"]*)"', str(exc))
    who = quoted_user.group(1) if quoted_user else user or "(default user)"
    cannot = f"cannot connect to PostgreSQL at {where}"
    if "authentication failed" in lowered:
        return f"authentication failed for user {who}"
    if "no password supplied" in lowered:
        return f"authentication failed for user {who}: the server wants a password, none was given"
    role = re.search(r'role "([^"]*)" does not exist', str(exc))
    if role:
        return f"authentication failed for user {role.group(1)}: no such role on {where}"
    database = re.search(r'database "([^"]*)" does not exist', str(exc))
    if database:
        return f"database {database.group(1)} does not exist on {where}"
    if "no pg_hba.conf entry" in lowered:
        return f"{cannot}: the server's pg_hba.conf does not allow this client (user {who})"
    if "connection refused" in lowered:
        return f"{cannot}: connection refused"
    if "timeout expired" in lowered or "timed out" in lowered:
        return f"{cannot}: no answer within {timeout}s"
    if "resolve host" in lowered or "translate host name" in lowered:
        return f"{cannot}: the host name does not resolve"
    if "too many clients" in lowered or "connection slots are reserved" in lowered:
        return f"{cannot}: the server has no free connection slots ({message})"
    if "ssl" in lowered or "certificate" in lowered:
        return f"{cannot}: TLS failed ({message})"
    return f"{cannot}: {message}"


@dataclass
class _Session:
    conn: psycopg.AsyncConnection[DictRow]
    where: str
    connect_ms: float

    async def rows(
        self, sql: LiteralString, args: Mapping[str, Any] | None = None
    ) -> list[DictRow]:
        cursor = await self.conn.execute(sql, args)
        return await cursor.fetchall()

    async def one(self, sql: LiteralString, args: Mapping[str, Any] | None = None) -> DictRow:
        rows = await self.rows(sql, args)
        if not rows:
            raise Unreachable(f"PostgreSQL at {self.where} returned no row for a catalog query")
        return rows[0]


@asynccontextmanager
async def _session(system_name: str, ctx: ProbeContext, timeout: float) -> AsyncIterator[_Session]:
    """Connect to the plan's PostgreSQL system; every psycopg error becomes ``Unreachable``."""
    system = ctx.system(system_name, KINDS)
    url = ctx.secret(system.url, what=f"systems.{system_name}.url")
    try:
        conninfo = conninfo_to_dict(url)
    except psycopg.Error:
        # libpq's parse error may quote the string, so it is not repeated here.
        raise UsageError(
            f"systems.{system_name}.url is not a valid PostgreSQL URL or connection string"
        ) from None
    where = pg_address(url)
    # Give up on connecting a little before run_probe's own timeout, so that the reason names
    # the address; libpq's connect_timeout (whole seconds, at least 2) is the backstop.
    deadline = timeout * 0.9
    extra: dict[str, Any] = {}
    if not conninfo.get("application_name"):
        extra["application_name"] = "changeover"
    started = time.perf_counter()
    try:
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                url, connect_timeout=max(2, math.ceil(timeout)), row_factory=dict_row, **extra
            ),
            deadline,
        )
    except TimeoutError:
        raise Unreachable(
            f"cannot connect to PostgreSQL at {where}: no answer within {deadline:.3g}s"
        ) from None
    except psycopg.Error as exc:
        user = str(conninfo["user"]) if conninfo.get("user") else None
        reason = connect_failure(exc, where, user, math.ceil(deadline))
        raise Unreachable(REDACTOR.scrub(reason)) from None
    except OSError as exc:
        raise Unreachable(f"cannot connect to PostgreSQL at {where}: {exc.strerror}") from None
    connect_ms = (time.perf_counter() - started) * 1000
    try:
        async with conn:
            # Probes never change anything; the server enforces it for every statement.
            await conn.set_read_only(True)
            yield _Session(conn, where, connect_ms)
    except psycopg.Error as exc:
        if conn.broken:
            raise Unreachable(
                f"lost the connection to PostgreSQL at {where}: {_libpq_message(exc)}"
            ) from None
        primary = exc.diag.message_primary or _libpq_message(exc)
        raise Unreachable(f"PostgreSQL at {where} refused the check's query: {primary}") from None


# --- postgres.connect ---------------------------------------------------------------------------


class ConnectParams(SystemParams):
    min_version: int = Field(default=15, ge=9, description="Lowest acceptable major version.")
    allow_replica: bool = Field(
        default=False, description="Accept a server in recovery (a read-only replica)."
    )


@dataclass(frozen=True)
class ServerFacts:
    where: str
    server_version: str  # as the server reports it, e.g. "15.8 (Debian 15.8-0+deb12u1)"
    version_num: int  # server_version_num, e.g. 150008
    in_recovery: bool
    connect_ms: float

    @property
    def major(self) -> int:
        """15 for 150008; 9 for 90624 (9.6, compared as 9 against min_version)."""
        return self.version_num // 10000


class Connect(Probe[ConnectParams, ServerFacts]):
    """Connects, checks the major version and that the server is a primary (not in recovery)."""

    name = "postgres.connect"
    summary = "PostgreSQL is reachable, recent enough and a writable primary"
    Params = ConnectParams
    system_kinds = KINDS

    async def gather(self, params: ConnectParams, ctx: ProbeContext) -> ServerFacts:
        async with _session(params.system, ctx, params.timeout) as session:
            row = await session.one(
                "SELECT current_setting('server_version') AS version,"
                " current_setting('server_version_num')::int AS num,"
                " pg_is_in_recovery() AS in_recovery"
            )
            return ServerFacts(
                session.where,
                row["version"],
                row["num"],
                row["in_recovery"],
                session.connect_ms,
            )

    def interpret(self, params: ConnectParams, raw: ServerFacts) -> CheckResult:
        short_version = raw.server_version.split()[0]
        version = Measure(
            "server_version",
            short_version,
            expected=f">= {params.min_version} (major)",
            ok=raw.major >= params.min_version,
        )
        recovery = Measure(
            "in_recovery",
            raw.in_recovery,
            expected=None if params.allow_replica else "false (a primary)",
            ok=None if params.allow_replica else not raw.in_recovery,
        )
        took = Measure("connect_ms", round(raw.connect_ms, 1), unit="ms")
        evidence = (version, recovery, took)
        if not version.ok:
            return CheckResult.fail(
                f"PostgreSQL {short_version} at {raw.where} is older than the required "
                f"{params.min_version}",
                *evidence,
            )
        if recovery.ok is False:
            return CheckResult.fail(
                f"PostgreSQL at {raw.where} is a replica in recovery (read-only); point "
                f"systems.{params.system}.url at the primary, or set allow_replica: true",
                *evidence,
            )
        role = "replica" if raw.in_recovery else "primary"
        return CheckResult.passed(
            f"PostgreSQL {short_version} ({role}) at {raw.where}, connected in "
            f"{raw.connect_ms:.0f} ms",
            *evidence,
        )


# --- postgres.pool ------------------------------------------------------------------------------


class PoolParams(SystemParams):
    instances: int = Field(ge=1, description="Number of application instances connecting.")
    pool_size: int = Field(ge=1, description="Connection pool size of each instance.")
    reserve: int = Field(
        default=10,
        ge=0,
        description="Connections to keep free for operators, migrations and monitoring.",
    )


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    superuser_reserved: int
    reserved: int  # reserved_connections (PostgreSQL 16+), 0 before


class Pool(Probe[PoolParams, ConnectionLimits]):
    """Checks that max_connections leaves room for every instance's pool plus a reserve."""

    name = "postgres.pool"
    summary = "max_connections fits every app instance's pool plus a reserve"
    Params = PoolParams
    system_kinds = KINDS

    async def gather(self, params: PoolParams, ctx: ProbeContext) -> ConnectionLimits:
        async with _session(params.system, ctx, params.timeout) as session:
            row = await session.one(
                "SELECT current_setting('max_connections')::int AS max_connections,"
                " current_setting('superuser_reserved_connections')::int AS superuser_reserved,"
                " coalesce(current_setting('reserved_connections', true), '0')::int AS reserved"
            )
            return ConnectionLimits(
                row["max_connections"], row["superuser_reserved"], row["reserved"]
            )

    def interpret(self, params: PoolParams, raw: ConnectionLimits) -> CheckResult:
        reserved = raw.superuser_reserved + raw.reserved
        available = raw.max_connections - reserved
        needed = params.instances * params.pool_size + params.reserve
        evidence = (
            Measure("max_connections", raw.max_connections),
            Measure("reserved", reserved),
            Measure("needed", needed, expected=f"<= {available} available", ok=needed <= available),
        )
        arithmetic = (
            f"{params.instances} instances × pool {params.pool_size} + reserve {params.reserve} "
            f"= {needed}; max_connections {raw.max_connections} − reserved {reserved} "
            f"= {available}"
        )
        if needed > available:
            return CheckResult.fail(
                f"not enough connections: {arithmetic}; raise max_connections to at least "
                f"{needed + reserved} (restart needed) or shrink the pools",
                *evidence,
            )
        return CheckResult.passed(f"connections suffice: {arithmetic}", *evidence)


# --- postgres.slow-query-log --------------------------------------------------------------------


class SlowQueryLogParams(SystemParams):
    max_ms: int | None = Field(
        default=None,
        ge=0,
        description="Highest acceptable log_min_duration_statement in milliseconds.",
    )


@dataclass(frozen=True)
class SlowQuerySetting:
    log_min_duration_ms: int  # -1 when disabled
    source: str  # where the value comes from: default, configuration file, database, ...


class SlowQueryLog(Probe[SlowQueryLogParams, SlowQuerySetting]):
    """Checks that statements slower than a threshold are logged (log_min_duration_statement)."""

    name = "postgres.slow-query-log"
    summary = "slow statements are logged (log_min_duration_statement is set)"
    Params = SlowQueryLogParams
    system_kinds = KINDS

    async def gather(self, params: SlowQueryLogParams, ctx: ProbeContext) -> SlowQuerySetting:
        async with _session(params.system, ctx, params.timeout) as session:
            row = await session.one(
                "SELECT setting::int AS ms, source FROM pg_settings"
                " WHERE name = 'log_min_duration_statement'"
            )
            return SlowQuerySetting(row["ms"], row["source"])

    def interpret(self, params: SlowQueryLogParams, raw: SlowQuerySetting) -> CheckResult:
        value = raw.log_min_duration_ms
        bound = ">= 0" if params.max_ms is None else f"0..{params.max_ms}"
        ok = value >= 0 and (params.max_ms is None or value <= params.max_ms)
        evidence = Measure("log_min_duration_statement", value, expected=bound, ok=ok, unit="ms")
        suggested = params.max_ms if params.max_ms is not None else 250
        how = (
            f"ALTER SYSTEM SET log_min_duration_statement = '{suggested}ms'; "
            "SELECT pg_reload_conf();"
        )
        if raw.source in ("database", "user", "database user"):
            # ALTER DATABASE / ALTER ROLE ... SET win over ALTER SYSTEM for new sessions.
            how += (
                f" (the current value is set per {raw.source} with ALTER ... SET, which overrides "
                "ALTER SYSTEM: change or RESET it there)"
            )
        if value < 0:
            return CheckResult.fail(
                f"slow query log is disabled (log_min_duration_statement = -1); enable it with: "
                f"{how}",
                evidence,
                source=raw.source,
            )
        if not ok:
            return CheckResult.fail(
                f"slow query log threshold is {value} ms, above the required {params.max_ms} ms; "
                f"lower it with: {how}",
                evidence,
                source=raw.source,
            )
        if value == 0:
            # Logging every statement is allowed but heavy at production load: say so.
            return CheckResult(
                Status.WARN,
                "every statement is logged (log_min_duration_statement = 0): heavy under "
                "production load",
                (evidence,),
                {"source": raw.source},
            )
        return CheckResult.passed(
            f"statements slower than {value} ms are logged", evidence, source=raw.source
        )


# --- postgres.extension -------------------------------------------------------------------------

# Extensions whose library must be in shared_preload_libraries to do anything: without it the
# extension can be created, and then collects or schedules nothing.
PRELOADED = frozenset(
    {"pg_stat_statements", "pg_cron", "timescaledb", "pg_stat_kcache", "pg_wait_sampling"}
)


class ExtensionParams(SystemParams):
    name: str = Field(default="pg_stat_statements", description="Extension name (pg_extension).")


@dataclass(frozen=True)
class ExtensionState:
    database: str
    installed_version: str | None
    available_version: str | None
    preload_libraries: tuple[str, ...] | None  # None when the role may not read the setting


def parse_library_list(value: str) -> tuple[str, ...]:
    """``'pg_stat_statements, "$libdir/auto_explain"'`` → the two library names, bare."""
    names = []
    for item in value.split(","):
        name = item.strip().strip('"').strip()
        if name:
            names.append(name.rsplit("/", 1)[-1].removesuffix(".so"))
    return tuple(names)


class Extension(Probe[ExtensionParams, ExtensionState]):
    """Checks that an extension is installed in the database (and preloaded when it must be)."""

    name = "postgres.extension"
    summary = "an extension (default pg_stat_statements) is installed and active"
    Params = ExtensionParams
    system_kinds = KINDS

    async def gather(self, params: ExtensionParams, ctx: ProbeContext) -> ExtensionState:
        async with _session(params.system, ctx, params.timeout) as session:
            row = await session.one(
                "SELECT current_database() AS database,"
                " (SELECT extversion FROM pg_extension WHERE extname = %(name)s) AS installed,"
                " (SELECT default_version FROM pg_available_extensions WHERE name = %(name)s)"
                "   AS available,"
                # pg_settings hides this row from roles without pg_read_all_settings.
                " (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries')"
                "   AS preload",
                {"name": params.name},
            )
            preload = row["preload"]
            return ExtensionState(
                row["database"],
                row["installed"],
                row["available"],
                None if preload is None else parse_library_list(preload),
            )

    def interpret(self, params: ExtensionParams, raw: ExtensionState) -> CheckResult:
        name, database = params.name, raw.database
        installed = Measure(
            "installed_version",
            raw.installed_version,
            expected="installed",
            ok=raw.installed_version is not None,
        )
        evidence = [installed]
        problems = []
        if raw.installed_version is None:
            if raw.available_version is None:
                problems.append(
                    f"extension {name} is not installed in database {database} and not available "
                    "on the server (install the package that provides it)"
                )
            else:
                problems.append(
                    f"extension {name} is not installed in database {database} "
                    f"(run CREATE EXTENSION {name};)"
                )
        if name in PRELOADED:
            preloaded = None if raw.preload_libraries is None else name in raw.preload_libraries
            evidence.append(
                Measure(
                    "shared_preload_libraries",
                    None if raw.preload_libraries is None else ",".join(raw.preload_libraries),
                    expected=f"contains {name}",
                    ok=bool(preloaded),
                )
            )
            if preloaded is None:
                problems.append(
                    "cannot read shared_preload_libraries to see whether it is loaded (grant "
                    "pg_read_all_settings to the check's role)"
                )
            elif raw.installed_version is not None and not preloaded:
                problems.append(
                    f"{name} exists but is not in shared_preload_libraries, so it collects "
                    "nothing (add it there and restart PostgreSQL)"
                )
            elif not preloaded:
                problems.append(
                    f"{name} is not in shared_preload_libraries either (add it there and restart "
                    "PostgreSQL)"
                )
        if problems:
            return CheckResult.fail("; ".join(problems), *evidence)
        return CheckResult.passed(
            f"extension {name} {raw.installed_version} is installed in database {database}",
            *evidence,
        )


# --- postgres.replication -----------------------------------------------------------------------


class ReplicationParams(SystemParams):
    min_replicas: int = Field(default=1, ge=0, description="Replicas that must be streaming.")
    max_lag_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="Largest acceptable replay lag in bytes of WAL (per replica).",
    )
    max_lag: Duration = Field(
        default=parse_duration("100ms"),
        description="Largest acceptable replay lag in time (per replica), e.g. '100ms'.",
    )


@dataclass(frozen=True)
class Replica:
    application_name: str
    client_addr: str | None  # None for a replica connected through the local socket
    state: str | None  # None when the role may not see it (needs pg_read_all_stats)
    sync_state: str | None
    lag_bytes: int | None  # None until the replica first reports its replay position
    lag_ms: float | None  # None when the replica is idle and caught up

    def to_json(self) -> dict[str, JSON]:
        return {
            "application_name": self.application_name,
            "client_addr": self.client_addr or "local socket",
            "state": self.state,
            "sync_state": self.sync_state,
            "lag_bytes": self.lag_bytes,
            "lag_ms": None if self.lag_ms is None else round(self.lag_ms, 1),
        }


@dataclass(frozen=True)
class ReplicationState:
    where: str
    in_recovery: bool
    replicas: tuple[Replica, ...] = ()


class Replication(Probe[ReplicationParams, ReplicationState]):
    """Counts streaming replicas on the primary and checks each one's replay lag (bytes, time)."""

    name = "postgres.replication"
    summary = "enough replicas are streaming, each with a small replay lag"
    Params = ReplicationParams
    system_kinds = KINDS

    async def gather(self, params: ReplicationParams, ctx: ProbeContext) -> ReplicationState:
        async with _session(params.system, ctx, params.timeout) as session:
            row = await session.one("SELECT pg_is_in_recovery() AS in_recovery")
            if row["in_recovery"]:
                return ReplicationState(session.where, True)
            rows = await session.rows(
                "SELECT r.application_name, host(r.client_addr) AS client_addr, r.state,"
                " r.sync_state,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS lag_bytes,"
                " (extract(epoch FROM r.replay_lag) * 1000)::float8 AS lag_ms"
                " FROM pg_stat_replication r"
                # Logical subscribers (CDC, logical replication) are not standbys.
                " WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s"
                "   WHERE s.active_pid = r.pid AND s.slot_type = 'logical')"
                " ORDER BY r.application_name, r.client_addr"
            )
            replicas = tuple(
                Replica(
                    r["application_name"],
                    r["client_addr"],
                    r["state"],
                    r["sync_state"],
                    r["lag_bytes"],
                    r["lag_ms"],
                )
                for r in rows
            )
            return ReplicationState(session.where, False, replicas)

    def interpret(self, params: ReplicationParams, raw: ReplicationState) -> CheckResult:
        if raw.in_recovery:
            return CheckResult.fail(
                f"PostgreSQL at {raw.where} is itself a replica in recovery; point "
                f"systems.{params.system}.url at the primary to see its replicas",
                Measure("in_recovery", True, expected="false (a primary)", ok=False),
            )
        details: dict[str, JSON] = {"replicas": [r.to_json() for r in raw.replicas]}
        if raw.replicas and all(r.state is None for r in raw.replicas):
            return CheckResult.fail(
                "the check's role may not see replication state (grant pg_monitor or "
                "pg_read_all_stats to it)",
                **details,
            )
        max_ms = params.max_lag.total_seconds() * 1000
        streaming = [r for r in raw.replicas if r.state == "streaming"]
        count = Measure(
            "streaming_replicas",
            len(streaming),
            expected=f">= {params.min_replicas}",
            ok=len(streaming) >= params.min_replicas,
        )
        evidence = [count]
        lagging = []
        if streaming:
            # NULL replay_lsn: the replica has not reported its position since it connected (it
            # reports every wal_receiver_status_interval, and on new WAL): lag unknown.
            unknown = [r for r in streaming if r.lag_bytes is None]
            worst_bytes = max((r.lag_bytes or 0) for r in streaming)
            # NULL replay_lag: idle and caught up, which is no lag at all.
            worst_ms = max((r.lag_ms or 0.0) for r in streaming)
            evidence.append(
                Measure(
                    "replay_lag_bytes",
                    None if unknown else worst_bytes,
                    expected=f"<= {params.max_lag_bytes}",
                    ok=not unknown and worst_bytes <= params.max_lag_bytes,
                    unit="bytes",
                )
            )
            evidence.append(
                Measure(
                    "replay_lag_ms",
                    round(worst_ms, 1),
                    expected=f"<= {max_ms:g}",
                    ok=worst_ms <= max_ms,
                    unit="ms",
                )
            )
            for r in streaming:
                if r.lag_bytes is None:
                    lagging.append(
                        f"{_replica_name(r)} has not reported its replay position yet (just "
                        "connected? check again in a few seconds)"
                    )
                elif r.lag_bytes > params.max_lag_bytes or (r.lag_ms or 0.0) > max_ms:
                    lagging.append(
                        f"{_replica_name(r)} lags {r.lag_bytes} bytes / "
                        f"{r.lag_ms or 0.0:.0f} ms (allowed {params.max_lag_bytes} bytes / "
                        f"{format_duration(params.max_lag)})"
                    )
        problems = []
        if not count.ok:
            others = [
                f"{_replica_name(r)} is {r.state}" for r in raw.replicas if r not in streaming
            ]
            problems.append(
                f"{len(streaming)} replica(s) streaming, {params.min_replicas} required"
                + (f" ({', '.join(others)})" if others else "")
            )
        problems.extend(lagging)
        if problems:
            return CheckResult.fail("; ".join(problems), *evidence, **details)
        if not streaming:
            return CheckResult.passed("no replicas required, none streaming", *evidence, **details)
        return CheckResult.passed(
            f"{len(streaming)} replica(s) streaming from {raw.where}, replay lag at most "
            f"{worst_bytes} bytes / {worst_ms:.0f} ms",
            *evidence,
            **details,
        )


def _replica_name(replica: Replica) -> str:
    return f"{replica.application_name or 'replica'} ({replica.client_addr or 'local socket'})"


# --- postgres.backup ----------------------------------------------------------------------------


class BackupParams(ProbeParams):
    system: str | None = Field(
        default=None, description="The PostgreSQL system backed up (for reports; optional)."
    )
    method: Literal["pgbackrest", "files"] = Field(
        description="pgbackrest: read `pgbackrest info`; files: newest file matching `glob`."
    )
    stanza: str | None = Field(default=None, description="pgBackRest stanza (method pgbackrest).")
    command: list[str] = Field(
        default_factory=lambda: ["pgbackrest"],
        min_length=1,
        description="pgBackRest argv, e.g. [sudo, -u, postgres, pgbackrest] (method pgbackrest).",
    )
    glob: str | None = Field(
        default=None,
        description="Backup files, relative to the plan's directory, e.g. 'backups/*.dump' "
        "(method files; ** matches subdirectories).",
    )
    max_age: Duration = Field(
        default=parse_duration("26h"), description="The newest backup must be younger than this."
    )

    @model_validator(mode="after")
    def _method_needs_its_fields(self) -> BackupParams:
        if self.method == "pgbackrest" and not self.stanza:
            raise ValueError("method pgbackrest needs a stanza")
        if self.method == "files" and not self.glob:
            raise ValueError("method files needs a glob, e.g. 'backups/*.dump'")
        return self


@dataclass(frozen=True)
class BackupFacts:
    source: str  # "pgBackRest stanza main" / "files matching backups/*.dump"
    newest: datetime | None
    now: datetime
    label: str | None = None  # pgBackRest backup label or file path
    size: int | None = None  # bytes of the newest file (method files)
    count: int = 0
    problem: str | None = None  # what the backup tool said when it has no usable backup


@dataclass(frozen=True)
class PgBackRestBackup:
    label: str
    type: str
    stop: datetime


@dataclass(frozen=True)
class PgBackRestStanza:
    backups: tuple[PgBackRestBackup, ...]
    status_code: int
    status_message: str


def parse_pgbackrest_info(text: str, stanza: str) -> PgBackRestStanza:
    """Read ``pgbackrest --stanza=S info --output=json``; raise ValueError when it is not that.

    Status codes (pgBackRest): 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza
    data, 4 different across repos, 5 database mismatch across repos, 99 other.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise ValueError("expected a list of stanzas")
    entry = next((s for s in data if isinstance(s, dict) and s.get("name") == stanza), None)
    if entry is None:
        raise ValueError(f"stanza {stanza!r} is not in the output")
    status = entry.get("status") or {}
    backups = []
    for item in entry.get("backup") or []:
        try:
            stop = datetime.fromtimestamp(int(item["timestamp"]["stop"]), UTC)
            backups.append(PgBackRestBackup(str(item["label"]), str(item.get("type", "?")), stop))
        except (KeyError, TypeError, ValueError):
            raise ValueError("a backup has no label or timestamp.stop") from None
    return PgBackRestStanza(
        tuple(sorted(backups, key=lambda b: b.stop)),
        int(status.get("code", 99)),
        str(status.get("message", "unknown status")),
    )


def newest_file(pattern: str) -> tuple[Path, os.stat_result, int] | None:
    """The most recently modified regular file matching ``pattern``, and how many matched."""
    best: tuple[Path, os.stat_result] | None = None
    count = 0
    for name in glob.iglob(pattern, recursive=True):
        try:
            stat = os.stat(name)
        except OSError:
            continue  # removed between listing and stat (rotation): not a backup any more
        if not os.path.isfile(name):
            continue
        count += 1
        if best is None or stat.st_mtime > best[1].st_mtime:
            best = (Path(name), stat)
    return None if best is None else (best[0], best[1], count)


class Backup(Probe[BackupParams, BackupFacts]):
    """Checks that the newest backup (pgBackRest or backup files) is younger than max_age."""

    name = "postgres.backup"
    summary = "a recent backup exists (pgBackRest or backup files)"
    Params = BackupParams
    system_kinds = KINDS

    async def gather(self, params: BackupParams, ctx: ProbeContext) -> BackupFacts:
        if params.system is not None:
            ctx.system(params.system, KINDS)  # only named in reports, but it must exist
        if params.method == "files":
            return await self._files(params, ctx)
        return await self._pgbackrest(params, ctx)

    async def _files(self, params: BackupParams, ctx: ProbeContext) -> BackupFacts:
        assert params.glob is not None
        given = Path(params.glob).expanduser()
        # The plan's directory is escaped so that only the plan's own pattern is a pattern.
        pattern = (
            str(given)
            if given.is_absolute()
            else os.path.join(glob.escape(str(ctx.path("."))), params.glob)
        )
        found = await asyncio.to_thread(newest_file, pattern)
        source = f"files matching {params.glob}"
        if found is None:
            return BackupFacts(source, None, ctx.now(), problem=f"nothing matches {pattern}")
        path, stat, count = found
        mtime = datetime.fromtimestamp(stat.st_mtime, UTC)
        return BackupFacts(source, mtime, ctx.now(), str(path), stat.st_size, count)

    async def _pgbackrest(self, params: BackupParams, ctx: ProbeContext) -> BackupFacts:
        assert params.stanza is not None
        env = None if ctx.environ is None else dict(ctx.environ)
        program = params.command[0]
        search_path = (os.environ if env is None else env).get("PATH", os.defpath)
        executable = shutil.which(program, path=search_path)
        if executable is None:
            where = "" if os.sep in program else " on PATH"
            raise Unreachable(f"{program} not found{where}")
        argv = [
            executable,
            *params.command[1:],
            f"--stanza={params.stanza}",
            "info",
            "--output=json",
        ]
        out, err, code = await _run(argv, env, params.timeout)
        if code != 0:
            raise Unreachable(f"pgbackrest info failed (exit {code}): {_tool_error(err, out)}")
        try:
            info = parse_pgbackrest_info(out, params.stanza)
        except ValueError as exc:
            raise Unreachable(f"pgbackrest info printed something unexpected: {exc}") from None
        source = f"pgBackRest stanza {params.stanza}"
        problem = None if info.status_code == 0 else info.status_message
        if not info.backups:
            return BackupFacts(source, None, ctx.now(), problem=problem)
        newest = info.backups[-1]
        return BackupFacts(
            source,
            newest.stop,
            ctx.now(),
            f"{newest.label} ({newest.type})",
            count=len(info.backups),
            problem=problem,
        )

    def interpret(self, params: BackupParams, raw: BackupFacts) -> CheckResult:
        limit = format_duration(params.max_age)
        details: dict[str, JSON] = {"source": raw.source, "count": raw.count}
        if raw.problem:
            details["problem"] = raw.problem
        if raw.newest is None:
            why = f": {raw.problem}" if raw.problem else ""
            return CheckResult.fail(f"no backups found ({raw.source}{why})", **details)
        age = max(raw.now - raw.newest, timedelta(0))
        details["newest_label"] = raw.label
        details["age_seconds"] = round(age.total_seconds())
        evidence = (
            Measure("newest", raw.newest.isoformat(timespec="seconds")),
            Measure("age", human_age(age), expected=f"< {limit}", ok=age < params.max_age),
        )
        if raw.size == 0:
            return CheckResult.fail(
                f"the newest backup {raw.label} is empty (0 bytes)", *evidence, **details
            )
        if age >= params.max_age:
            return CheckResult.fail(
                f"the newest backup ({raw.label}) is {human_age(age)} old, older than {limit}",
                *evidence,
                **details,
            )
        return CheckResult.passed(
            f"the newest backup ({raw.label}) is {human_age(age)} old", *evidence, **details
        )


def human_age(age: timedelta) -> str:
    """``timedelta(hours=26, minutes=5)`` → ``"1d 2h"``: the two largest units, nothing finer."""
    seconds = int(age.total_seconds())
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (next_unit, next_size) in zip(units, (*units[1:], ("", 1)), strict=True):
        if seconds >= size or unit == "s":
            text = f"{seconds // size}{unit}"
            return f"{text} {seconds % size // next_size}{next_unit}" if next_unit else text
    raise AssertionError("unreachable: the seconds unit always matches")


async def _run(
    argv: Sequence[str], env: dict[str, str] | None, timeout: float
) -> tuple[str, str, int]:
    """Run a command (argv list, no shell); kill it on timeout or cancellation."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise Unreachable(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        raise Unreachable(f"{Path(argv[0]).name} did not finish within {timeout:g}s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return (
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
        process.returncode,
    )


def _tool_error(err: str, out: str) -> str:
    """The line of a tool's output that says what went wrong (its ERROR line, else the last)."""
    lines = [line.strip() for line in (err + "\n" + out).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR"):
            return line
    return lines[-1] if lines else "no output"


# --- postgres.schema ----------------------------------------------------------------------------


class SchemaParams(SystemParams):
    tables: list[str] = Field(
        min_length=1,
        description="Tables that must exist, as 'name' or 'schema.name' (matched exactly).",
    )
    schema_: str = Field(
        default="public", alias="schema", description="Schema of tables given without one."
    )


@dataclass(frozen=True)
class TablesFound:
    database: str
    present: frozenset[tuple[str, str]]  # (schema, table) of the requested tables that exist


def _qualify(table: str, default_schema: str) -> tuple[str, str]:
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (default_schema, table)


class Schema(Probe[SchemaParams, TablesFound]):
    """Checks that the tables the new application needs exist (migrations applied)."""

    name = "postgres.schema"
    summary = "the expected tables exist"
    Params = SchemaParams
    system_kinds = KINDS

    async def gather(self, params: SchemaParams, ctx: ProbeContext) -> TablesFound:
        wanted = [_qualify(t, params.schema_) for t in params.tables]
        async with _session(params.system, ctx, params.timeout) as session:
            rows = await session.rows(
                "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p', 'f')"
                " AND (n.nspname, c.relname) IN"
                "   (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))",
                {"schemas": [s for s, _ in wanted], "names": [n for _, n in wanted]},
            )
            database = str(session.conn.info.dbname)
        return TablesFound(database, frozenset((r["schema"], r["name"]) for r in rows))

    def interpret(self, params: SchemaParams, raw: TablesFound) -> CheckResult:
        missing = [t for t in params.tables if _qualify(t, params.schema_) not in raw.present]
        evidence = Measure(
            "missing_tables", len(missing), expected="0", ok=not missing, unit="tables"
        )
        if missing:
            return CheckResult.fail(
                f"{len(missing)} of {len(params.tables)} tables missing in database "
                f"{raw.database}: {_shortlist(missing)}",
                evidence,
                missing=missing,
            )
        return CheckResult.passed(
            f"all {len(params.tables)} tables exist in database {raw.database}",
            evidence,
            missing=[],
        )


def _shortlist(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


# --- postgres.indexes ---------------------------------------------------------------------------


class IndexesParams(SystemParams):
    schema_: str = Field(default="public", alias="schema", description="Schema to inspect.")


@dataclass(frozen=True)
class UnindexedForeignKey:
    table: str
    columns: tuple[str, ...]
    references: str

    def __str__(self) -> str:
        return f"{self.table}({', '.join(self.columns)}) → {self.references}"


@dataclass(frozen=True)
class IndexFacts:
    schema: str
    table_count: int
    without_pk: tuple[str, ...]
    unindexed: tuple[UnindexedForeignKey, ...]


# Tables of the schema, leaving out partitions (their parent holds the key) and tables that
# belong to an extension (not the application's to fix).
_TABLES: LiteralString = """
SELECT c.oid, c.relname,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')
         AS has_pk
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.relname
"""

# A foreign key is covered when a valid, non-partial index starts with exactly its columns (in
# any order): then deleting or updating a referenced row does not scan the referencing table.
# indkey is an int2vector whose array form starts at index 0.
_UNINDEXED_FKS: LiteralString = """
SELECT t.relname AS table_name,
       CASE WHEN rn.nspname = %(schema)s THEN r.relname
            ELSE rn.nspname || '.' || r.relname END AS ref_table,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
             ORDER BY u.ord) AS columns
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class r ON r.oid = k.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND n.nspname = %(schema)s AND k.conparentid = 0
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = k.conrelid AND i.indisvalid AND i.indpred IS NULL
      AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey
  )
ORDER BY t.relname, k.conname
"""


class Indexes(Probe[IndexesParams, IndexFacts]):
    """Checks that every table has a primary key and every foreign key has a supporting index."""

    name = "postgres.indexes"
    summary = "every table has a primary key and every foreign key an index"
    Params = IndexesParams
    system_kinds = KINDS

    async def gather(self, params: IndexesParams, ctx: ProbeContext) -> IndexFacts:
        args = {"schema": params.schema_}
        async with _session(params.system, ctx, params.timeout) as session:
            tables = await session.rows(_TABLES, args)
            fks = await session.rows(_UNINDEXED_FKS, args)
        return IndexFacts(
            params.schema_,
            len(tables),
            tuple(t["relname"] for t in tables if not t["has_pk"]),
            tuple(
                UnindexedForeignKey(f["table_name"], tuple(f["columns"]), f["ref_table"])
                for f in fks
            ),
        )

    def interpret(self, params: IndexesParams, raw: IndexFacts) -> CheckResult:
        unindexed = [str(fk) for fk in raw.unindexed]
        details: dict[str, JSON] = {
            "tables_without_pk": list(raw.without_pk),
            "unindexed_foreign_keys": unindexed,
        }
        evidence = (
            Measure("tables", raw.table_count),
            Measure("tables_without_pk", len(raw.without_pk), expected="0", ok=not raw.without_pk),
            Measure("unindexed_foreign_keys", len(unindexed), expected="0", ok=not unindexed),
        )
        if raw.table_count == 0:
            return CheckResult.fail(
                f"schema {raw.schema} has no tables (wrong schema name, or migrations not "
                "applied yet?)",
                *evidence,
                **details,
            )
        problems = []
        if raw.without_pk:
            problems.append(
                f"{len(raw.without_pk)} table(s) without a primary key: "
                f"{_shortlist(raw.without_pk)}"
            )
        if unindexed:
            problems.append(
                f"{len(unindexed)} foreign key(s) without an index: {_shortlist(unindexed)}"
            )
        if problems:
            return CheckResult.fail("; ".join(problems), *evidence, **details)
        return CheckResult.passed(
            f"all {raw.table_count} tables in schema {raw.schema} have a primary key and every "
            "foreign key an index",
            *evidence,
            **details,
        )


# --- postgres.heartbeat -------------------------------------------------------------------------


class HeartbeatParams(SystemParams):
    query: str = Field(
        min_length=1,
        description="One SELECT giving one row and one column: the newest heartbeat, as a "
        "timestamp (without time zone = UTC) or epoch seconds, e.g. "
        "'SELECT max(finished_at) FROM job_runs'. Runs read-only.",
    )
    max_age: Duration = Field(
        default=parse_duration("5m"), description="The newest heartbeat may be at most this old."
    )


@dataclass(frozen=True)
class HeartbeatFacts:
    where: str
    columns: int  # 0 when the statement returns no rows at all (not a SELECT)
    values: tuple[Any, ...]  # the first column of at most two rows: enough to see "more than one"
    now: datetime  # the database server's clock when the query had finished


# Heartbeats are usually written with the database's clock (DEFAULT now()), so their age is
# measured on that clock too: the probe host's clock may be off without changing the verdict.
_SERVER_CLOCK: LiteralString = "SELECT clock_timestamp() AS now"

#: a heartbeat this far ahead of the server's clock is a clock or unit problem, not "fresh"
_FUTURE_TOLERANCE = timedelta(minutes=1)


class Heartbeat(Probe[HeartbeatParams, HeartbeatFacts]):
    """Runs one read-only statement (statement_timeout set) for the newest heartbeat; checks age."""

    name = "postgres.heartbeat"
    summary = "the newest timestamp a query returns (background jobs' heartbeat) is recent"
    Params = HeartbeatParams
    system_kinds = KINDS

    async def gather(self, params: HeartbeatParams, ctx: ProbeContext) -> HeartbeatFacts:
        async with _session(params.system, ctx, params.timeout) as session:
            # What connecting left of the probe's timeout, less a margin for the reason to arrive.
            budget = max(params.timeout - session.connect_ms / 1000, 0.1) * 0.8
            await session.rows(
                "SELECT set_config('statement_timeout', %(ms)s, true)",
                {"ms": f"{math.ceil(budget * 1000)}ms"},
            )
            try:
                # The plan's text is sent as it is (no parameters, so '%' stays '%'); binary
                # results force the extended protocol, which runs exactly one statement.
                cursor = await session.conn.execute(params.query.encode(), binary=True)
                columns = len(cursor.description or ())
                rows = await cursor.fetchmany(2) if columns else []
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                raise UsageError(
                    f"the heartbeat query tries to change data ({exc.diag.message_primary}); "
                    "probes only read: give a SELECT"
                ) from None
            except psycopg.errors.QueryCanceled:
                raise Unreachable(
                    f"the heartbeat query did not finish within {round(budget, 1):g}s on "
                    f"PostgreSQL at {session.where} (statement_timeout)"
                ) from None
            except psycopg.errors.SyntaxError as exc:
                if "multiple commands" not in str(exc):
                    raise
                raise UsageError(
                    "the heartbeat query is several statements; give one SELECT"
                ) from None
            now = (await session.one(_SERVER_CLOCK))["now"]
            values = tuple(next(iter(row.values())) for row in rows)
        return HeartbeatFacts(session.where, columns, values, now)

    def interpret(self, params: HeartbeatParams, raw: HeartbeatFacts) -> CheckResult:
        limit = format_duration(params.max_age)
        if raw.columns != 1:
            gives = "no result (is it a SELECT?)" if raw.columns == 0 else f"{raw.columns} columns"
            return CheckResult(
                Status.ERROR,
                f"the heartbeat query gives {gives}; it must give one column, the newest "
                "timestamp, e.g. SELECT max(finished_at) FROM job_runs",
            )
        if len(raw.values) > 1:
            return CheckResult(
                Status.ERROR,
                "the heartbeat query gives more than one row; it must give one, e.g. "
                "SELECT max(finished_at) FROM job_runs",
            )
        if not raw.values or raw.values[0] is None:
            found = "no row" if not raw.values else "NULL"
            return CheckResult.fail(
                f"no heartbeat yet (the query gave {found})",
                Measure("newest", None, expected=f"within {limit}", ok=False),
            )
        try:
            newest = heartbeat_time(raw.values[0])
        except ValueError as exc:
            return CheckResult(Status.ERROR, str(exc))
        age = raw.now - newest
        shown = newest.isoformat(timespec="seconds")
        if age < -_FUTURE_TOLERANCE:
            return CheckResult.fail(
                f"the newest heartbeat ({shown}) is {_age_text(-age)} in the future by the "
                f"database's clock at {raw.where}: a clock is wrong, or the value is not in UTC",
                Measure("newest", shown, expected="not in the future", ok=False),
            )
        age = max(age, timedelta(0))  # a heartbeat written a moment ago on a clock a bit ahead
        fresh = age <= params.max_age
        evidence = (
            Measure("newest", shown),
            Measure("age", _age_text(age), expected=f"within {limit}", ok=fresh),
        )
        details: dict[str, JSON] = {"age_seconds": round(age.total_seconds(), 1)}
        if not fresh:
            return CheckResult.fail(
                f"the newest heartbeat is {_age_text(age)} old (expected within {limit})",
                *evidence,
                **details,
            )
        return CheckResult.passed(
            f"the newest heartbeat is {_age_text(age)} old (within {limit})", *evidence, **details
        )


_TYPE_NAMES = {"str": "text", "date": "a date", "time": "a time of day", "timedelta": "an interval"}


def heartbeat_time(value: Any) -> datetime:
    """A heartbeat value as an aware datetime: a timestamp (naive = UTC) or epoch seconds.

    Raises ``ValueError`` with the plain reason when the value is neither.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(
                f"the heartbeat query gives {value}, which is not a time in epoch seconds "
                "(milliseconds? divide by 1000)"
            ) from None
    kind = type(value).__name__
    raise ValueError(
        f"the heartbeat query gives {_TYPE_NAMES.get(kind, kind)}, not a timestamp or epoch "
        "seconds; cast it, e.g. max(finished_at)::timestamptz"
    )


def _age_text(age: timedelta) -> str:
    """``human_age`` without a zero second unit: "12m", not "12m 0s"."""
    return re.sub(r" 0[a-z]$", "", human_age(age))
