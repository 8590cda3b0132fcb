"""The postgres.* probes: pure verdicts on plain data, then each probe against real servers.

The real-server tests use the session's primary and streaming replica (``pg_primary``,
``pg_replica``, a fresh database ``pg_url``), plus one dedicated server per module and worker
(``plain_server``: no pg_stat_statements preloaded, no replicas) for the cases that need other
server settings than the session's, so the shared servers are never reconfigured. Backups are
read with the real pgBackRest from a repository the test writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from changeover.plan.systems import PostgresSystem, RedisSystem
from changeover.probes.base import (
    CheckResult,
    ProbeContext,
    ProbeParams,
    Status,
    Unreachable,
    run_probe,
)
from changeover.probes.postgres import Backup as BackupProbe
from changeover.probes.postgres import (
    BackupFacts,
    BackupParams,
    ConnectionLimits,
    ConnectParams,
    ExtensionParams,
    ExtensionState,
    HeartbeatFacts,
    HeartbeatParams,
    IndexesParams,
    IndexFacts,
    PoolParams,
    Replica,
    ReplicationParams,
    ReplicationState,
    SchemaParams,
    ServerFacts,
    SlowQueryLogParams,
    SlowQuerySetting,
    TablesFound,
    UnindexedForeignKey,
    _session,
    connect_failure,
    human_age,
    parse_library_list,
    parse_pgbackrest_info,
    pg_address,
)
from changeover.probes.postgres import Connect as ConnectProbe
from changeover.probes.postgres import Extension as ExtensionProbe
from changeover.probes.postgres import Heartbeat as HeartbeatProbe
from changeover.probes.postgres import Indexes as IndexesProbe
from changeover.probes.postgres import Pool as PoolProbe
from changeover.probes.postgres import Replication as ReplicationProbe
from changeover.probes.postgres import Schema as SchemaProbe
from changeover.probes.postgres import SlowQueryLog as SlowQueryLogProbe
from changeover.services import PostgresServer, start_postgres
from changeover.services._process import free_port
from support.binaries import missing, require_binary

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
MiB = 1024 * 1024


def run(name: str, params: ProbeParams, ctx: ProbeContext) -> CheckResult:
    return asyncio.run(run_probe(name, params, ctx))


def context(url: str, **kwargs: Any) -> ProbeContext:
    """The plan's way: the system holds a ``${PG_URL}`` reference, resolved at use."""
    return ProbeContext(
        systems={"db": PostgresSystem(url="${PG_URL}")}, environ={"PG_URL": url}, **kwargs
    )


def measure(result: CheckResult, name: str) -> Any:
    return next(m for m in result.evidence if m.name == name)


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[-1]


# --- pure: addresses and connection failures ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:pw@db.internal:6543/app", "db.internal:6543"),
        ("postgresql://app:pw@db.internal/app", "db.internal:5432"),
        ("postgresql://app@[::1]:5433/app", "[::1]:5433"),
        ("host=a,b port=5432,5433 user=app password=pw", "a:5432, b:5433"),
        ("host=/run/postgresql dbname=app", "socket /run/postgresql/.s.PGSQL.5432"),
        ("dbname=app", "the default socket (port 5432)"),
        ("not a url at all", "the configured address"),
    ],
)
def test_address_names_host_and_port_without_credentials(url: str, expected: str) -> None:
    assert pg_address(url) == expected


@pytest.mark.parametrize(
    ("libpq_message", "expected"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
            "Connection refused\n\tIs the server running on that host?",
            "cannot connect to PostgreSQL at HERE: connection refused",
        ),
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  password authentication failed for user "app"',
            "authentication failed for user app",
        ),
        (
            'connection failed: connection to server on socket "/s/.s.PGSQL.5432" failed: '
            "fe_sendauth: no password supplied",
            "authentication failed for user fallback: the server wants a password, none was given",
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: '
            'FATAL:  database "shop" does not exist',
            "database shop does not exist on HERE",
        ),
        (
            "failed to resolve host 'db.invalid': [Errno -2] Name or service not known",
            "cannot connect to PostgreSQL at HERE: the host name does not resolve",
        ),
        (
            "connection timeout expired",
            "cannot connect to PostgreSQL at HERE: no answer within 7s",
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: '
            "FATAL:  sorry, too many clients already",
            "cannot connect to PostgreSQL at HERE: the server has no free connection slots "
            "(sorry, too many clients already)",
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: '
            "server does not support SSL, but SSL was required",
            "cannot connect to PostgreSQL at HERE: TLS failed "
            "(server does not support SSL, but SSL was required)",
        ),
    ],
)
def test_connect_failures_become_plain_reasons(libpq_message: str, expected: str) -> None:
    error = psycopg.OperationalError(libpq_message)
    assert connect_failure(error, "HERE", "fallback", 7) == expected


# --- pure: interpret ----------------------------------------------------------------------------


def connect_facts(num: int = 150008, in_recovery: bool = False) -> ServerFacts:
    return ServerFacts("db:5432", f"{num // 10000}.{num % 100} (Debian)", num, in_recovery, 4.2)


def test_connect_passes_on_a_recent_primary() -> None:
    result = ConnectProbe().interpret(ConnectParams(system="db"), connect_facts())
    assert result.status is Status.PASS
    assert measure(result, "server_version").value == "15.8"
    assert measure(result, "in_recovery").ok is True
    assert measure(result, "connect_ms").value == 4.2


def test_connect_reads_old_style_version_numbers() -> None:
    facts = ServerFacts("db:5432", "9.6.24", 90624, False, 1.0)
    assert facts.major == 9
    result = ConnectProbe().interpret(ConnectParams(system="db", min_version=10), facts)
    assert result.status is Status.FAIL
    assert result.reason == "PostgreSQL 9.6.24 at db:5432 is older than the required 10"


def test_connect_fails_on_a_replica_unless_allowed() -> None:
    facts = connect_facts(in_recovery=True)
    refused = ConnectProbe().interpret(ConnectParams(system="db"), facts)
    assert refused.status is Status.FAIL
    assert "replica in recovery" in refused.reason and "allow_replica" in refused.reason
    allowed = ConnectProbe().interpret(ConnectParams(system="db", allow_replica=True), facts)
    assert allowed.status is Status.PASS
    assert "(replica)" in allowed.reason


def test_pool_passes_when_connections_exactly_suffice() -> None:
    limits = ConnectionLimits(max_connections=100, superuser_reserved=3, reserved=0)
    params = PoolParams(system="db", instances=4, pool_size=20, reserve=17)  # 97 of 97
    result = PoolProbe().interpret(params, limits)
    assert result.status is Status.PASS
    assert measure(result, "needed").value == 97


def test_pool_fails_one_connection_short_and_says_how_many_are_needed() -> None:
    limits = ConnectionLimits(max_connections=100, superuser_reserved=3, reserved=2)
    params = PoolParams(system="db", instances=4, pool_size=20, reserve=16)  # 96 of 95
    result = PoolProbe().interpret(params, limits)
    assert result.status is Status.FAIL
    assert measure(result, "reserved").value == 5
    assert "raise max_connections to at least 101" in result.reason


@pytest.mark.parametrize(
    ("setting", "max_ms", "status", "fragment"),
    [
        (-1, None, Status.FAIL, "ALTER SYSTEM SET log_min_duration_statement = '250ms'"),
        (-1, 100, Status.FAIL, "log_min_duration_statement = '100ms'"),
        (500, 100, Status.FAIL, "threshold is 500 ms, above the required 100 ms"),
        (100, 100, Status.PASS, "slower than 100 ms are logged"),
        (2000, None, Status.PASS, "slower than 2000 ms are logged"),
        (0, None, Status.WARN, "every statement is logged"),
    ],
)
def test_slow_query_log_verdicts(
    setting: int, max_ms: int | None, status: Status, fragment: str
) -> None:
    params = SlowQueryLogParams(system="db", max_ms=max_ms)
    result = SlowQueryLogProbe().interpret(params, SlowQuerySetting(setting, "default"))
    assert result.status is status
    assert fragment in result.reason
    assert result.details["source"] == "default"


def test_library_list_is_parsed_like_postgres_does() -> None:
    value = 'pg_stat_statements, "$libdir/auto_explain" , timescaledb.so'
    assert parse_library_list(value) == ("pg_stat_statements", "auto_explain", "timescaledb")
    assert parse_library_list("") == ()


@pytest.mark.parametrize(
    ("state", "status", "fragments"),
    [
        (ExtensionState("app", "1.10", "1.10", ("pg_stat_statements",)), Status.PASS, []),
        (
            ExtensionState("app", "1.10", "1.10", ()),
            Status.FAIL,
            ["pg_stat_statements exists but is not in shared_preload_libraries"],
        ),
        (
            ExtensionState("app", None, "1.10", ("pg_stat_statements",)),
            Status.FAIL,
            ["not installed in database app (run CREATE EXTENSION pg_stat_statements;)"],
        ),
        (
            ExtensionState("app", None, "1.10", ()),
            Status.FAIL,
            ["CREATE EXTENSION", "not in shared_preload_libraries either"],
        ),
        (
            ExtensionState("app", None, None, ()),
            Status.FAIL,
            ["not available on the server"],
        ),
        (
            ExtensionState("app", "1.10", "1.10", None),
            Status.FAIL,
            ["grant pg_read_all_settings"],
        ),
    ],
)
def test_pg_stat_statements_needs_install_and_preload(
    state: ExtensionState, status: Status, fragments: list[str]
) -> None:
    result = ExtensionProbe().interpret(ExtensionParams(system="db"), state)
    assert result.status is status
    for fragment in fragments:
        assert fragment in result.reason


def test_extension_without_a_library_needs_no_preload() -> None:
    state = ExtensionState("app", "1.6", "1.6", ())
    result = ExtensionProbe().interpret(ExtensionParams(system="db", name="citext"), state)
    assert result.status is Status.PASS
    assert [m.name for m in result.evidence] == ["installed_version"]


def replica(
    name: str = "r1",
    state: str | None = "streaming",
    lag_bytes: int | None = 0,
    lag_ms: float | None = None,
) -> Replica:
    return Replica(name, "10.0.0.2", state, "async", lag_bytes, lag_ms)


def replication(*replicas: Replica) -> ReplicationState:
    return ReplicationState("db:5432", False, replicas)


def test_idle_replica_without_replay_lag_counts_as_no_lag() -> None:
    result = ReplicationProbe().interpret(ReplicationParams(system="db"), replication(replica()))
    assert result.status is Status.PASS
    assert measure(result, "replay_lag_ms").value == 0
    assert result.details["replicas"][0]["client_addr"] == "10.0.0.2"


def test_replication_fails_when_one_replica_lags_in_time() -> None:
    raw = replication(replica("r1", lag_ms=20.0), replica("r2", lag_ms=250.0))
    result = ReplicationProbe().interpret(ReplicationParams(system="db"), raw)
    assert result.status is Status.FAIL
    assert result.reason == ("r2 (10.0.0.2) lags 0 bytes / 250 ms (allowed 16777216 bytes / 100ms)")
    assert measure(result, "replay_lag_ms").value == 250.0


def test_replication_fails_when_lag_in_bytes_is_over_the_bound() -> None:
    raw = replication(replica(lag_bytes=17 * MiB, lag_ms=5.0))
    result = ReplicationProbe().interpret(ReplicationParams(system="db"), raw)
    assert result.status is Status.FAIL
    assert measure(result, "replay_lag_bytes").ok is False


def test_replica_that_has_not_reported_its_position_has_unknown_lag() -> None:
    raw = replication(replica(lag_bytes=None))
    result = ReplicationProbe().interpret(ReplicationParams(system="db"), raw)
    assert result.status is Status.FAIL
    assert "has not reported its replay position yet" in result.reason
    assert measure(result, "replay_lag_bytes").value is None


def test_catching_up_replica_does_not_count_as_streaming() -> None:
    raw = replication(replica("r1"), replica("r2", state="catchup", lag_bytes=9 * MiB))
    result = ReplicationProbe().interpret(ReplicationParams(system="db", min_replicas=2), raw)
    assert result.status is Status.FAIL
    assert result.reason == "1 replica(s) streaming, 2 required (r2 (10.0.0.2) is catchup)"
    assert len(result.details["replicas"]) == 2


def test_replication_state_hidden_from_the_role_says_which_grant_is_missing() -> None:
    raw = replication(replica(state=None, lag_bytes=None))
    result = ReplicationProbe().interpret(ReplicationParams(system="db"), raw)
    assert result.status is Status.FAIL
    assert "grant pg_monitor" in result.reason


def test_no_replicas_pass_only_when_none_are_required() -> None:
    probe = ReplicationProbe()
    assert probe.interpret(ReplicationParams(system="db"), replication()).status is Status.FAIL
    none_needed = probe.interpret(ReplicationParams(system="db", min_replicas=0), replication())
    assert none_needed.status is Status.PASS


def backup_facts(age: timedelta | None, size: int | None = None) -> BackupFacts:
    newest = None if age is None else NOW - age
    return BackupFacts("files matching b/*", newest, NOW, "b/x.dump", size, 1)


def test_backup_younger_than_max_age_passes_and_one_at_the_limit_fails() -> None:
    params = BackupParams(method="files", glob="b/*", max_age="26h")
    probe = BackupProbe()
    fresh = probe.interpret(params, backup_facts(timedelta(hours=25, minutes=59)))
    assert fresh.status is Status.PASS
    assert measure(fresh, "age").value == "1d 1h"
    stale = probe.interpret(params, backup_facts(timedelta(hours=26)))
    assert stale.status is Status.FAIL
    assert stale.reason == "the newest backup (b/x.dump) is 1d 2h old, older than 26h"
    assert stale.details["age_seconds"] == 26 * 3600


def test_empty_backup_file_fails() -> None:
    params = BackupParams(method="files", glob="b/*")
    result = BackupProbe().interpret(params, backup_facts(timedelta(hours=1), size=0))
    assert result.status is Status.FAIL
    assert "is empty (0 bytes)" in result.reason


def test_no_backup_fails_with_what_the_tool_said() -> None:
    facts = BackupFacts("pgBackRest stanza main", None, NOW, problem="missing stanza path")
    params = BackupParams(method="pgbackrest", stanza="main")
    result = BackupProbe().interpret(params, facts)
    assert result.status is Status.FAIL
    assert result.reason == "no backups found (pgBackRest stanza main: missing stanza path)"


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(minutes=3, seconds=4), "3m 4s"),
        (timedelta(hours=5, minutes=0, seconds=9), "5h 0m"),
        (timedelta(days=3, hours=2, minutes=1), "3d 2h"),
    ],
)
def test_human_age(age: timedelta, text: str) -> None:
    assert human_age(age) == text


def test_backup_params_need_the_fields_of_their_method() -> None:
    with pytest.raises(ValidationError, match="needs a stanza"):
        BackupParams(method="pgbackrest")
    with pytest.raises(ValidationError, match="needs a glob"):
        BackupParams(method="files")
    assert BackupParams(method="files", glob="*.dump").system is None


PGBACKREST_INFO = [
    {
        "name": "main",
        "status": {"code": 0, "message": "ok"},
        "backup": [
            {"label": "20261130-010000F", "type": "full", "timestamp": {"start": 1, "stop": 100}},
            {
                "label": "20261130-010000F_20261201-010000I",
                "type": "incr",
                "timestamp": {"start": 200, "stop": 300},
            },
        ],
    },
    {"name": "other", "status": {"code": 2, "message": "no valid backups"}, "backup": []},
]


def test_pgbackrest_info_gives_the_newest_backup_of_the_stanza() -> None:
    info = parse_pgbackrest_info(json.dumps(PGBACKREST_INFO), "main")
    assert info.status_code == 0
    assert info.backups[-1].label == "20261130-010000F_20261201-010000I"
    assert info.backups[-1].stop == datetime.fromtimestamp(300, UTC)
    other = parse_pgbackrest_info(json.dumps(PGBACKREST_INFO), "other")
    assert (other.backups, other.status_code, other.status_message) == ((), 2, "no valid backups")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ERROR: [031]: invalid option", "not JSON"),
        ('{"name": "main"}', "list of stanzas"),
        ("[]", "stanza 'main' is not in the output"),
        ('[{"name": "main", "backup": [{"label": "x"}]}]', "timestamp.stop"),
    ],
)
def test_pgbackrest_info_rejects_what_is_not_its_format(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_pgbackrest_info(text, "main")


def test_schema_lists_missing_tables_as_written() -> None:
    params = SchemaParams(system="db", tables=["users", "orders", "audit.events"])
    raw = TablesFound("app", frozenset({("public", "users")}))
    result = SchemaProbe().interpret(params, raw)
    assert result.status is Status.FAIL
    assert result.details["missing"] == ["orders", "audit.events"]
    assert result.reason == "2 of 3 tables missing in database app: orders, audit.events"


def test_indexes_name_every_offender() -> None:
    raw = IndexFacts(
        "public",
        3,
        ("events",),
        (UnindexedForeignKey("orders", ("user_id",), "users"),),
    )
    result = IndexesProbe().interpret(IndexesParams(system="db"), raw)
    assert result.status is Status.FAIL
    assert result.details == {
        "tables_without_pk": ["events"],
        "unindexed_foreign_keys": ["orders(user_id) → users"],
    }


def test_indexes_fail_on_a_schema_without_tables() -> None:
    raw = IndexFacts("app", 0, (), ())
    result = IndexesProbe().interpret(IndexesParams(system="db", schema="app"), raw)
    assert result.status is Status.FAIL
    assert "schema app has no tables" in result.reason


# --- real servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(pg_primary: PostgresServer) -> Iterator[PostgresServer]:
    """A server of this module alone: nothing preloaded, no replicas (pg_primary proves the
    binaries are there)."""
    with start_postgres(settings={"shared_preload_libraries": ""}) as server:
        yield server


# postgres.connect


def test_connect_passes_against_the_session_primary(pg_url: str) -> None:
    result = run("postgres.connect", ConnectParams(system="db"), context(pg_url))
    assert result.status is Status.PASS, result.reason
    assert measure(result, "in_recovery").value is False
    assert measure(result, "connect_ms").value > 0
    assert "(primary)" in result.reason


def test_connect_fails_when_the_server_is_older_than_required(pg_url: str) -> None:
    result = run("postgres.connect", ConnectParams(system="db", min_version=99), context(pg_url))
    assert result.status is Status.FAIL
    assert "is older than the required 99" in result.reason


def test_connect_fails_on_the_replica_unless_replicas_are_allowed(
    pg_replica: PostgresServer,
) -> None:
    ctx = context(pg_replica.url)
    refused = run("postgres.connect", ConnectParams(system="db"), ctx)
    assert refused.status is Status.FAIL
    assert "is a replica in recovery" in refused.reason
    allowed = run("postgres.connect", ConnectParams(system="db", allow_replica=True), ctx)
    assert allowed.status is Status.PASS, allowed.reason


def test_connect_refused_names_the_address_and_never_the_password() -> None:
    port = free_port()
    password = f"pw-{secrets.token_hex(8)}"
    url = f"postgresql://app:{password}@127.0.0.1:{port}/app"
    result = run("postgres.connect", ConnectParams(system="db", timeout=5), context(url))
    assert result.status is Status.FAIL
    assert result.reason == f"cannot connect to PostgreSQL at 127.0.0.1:{port}: connection refused"
    text = json.dumps(result.to_json())
    assert password not in text and "postgresql://" not in text


def test_connect_to_a_server_that_never_answers_times_out_naming_it() -> None:
    # A listening socket nobody accepts from: TCP connects, PostgreSQL's handshake never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql://app:pw-{secrets.token_hex(8)}@127.0.0.1:{port}/app"
        started = time.monotonic()
        result = run("postgres.connect", ConnectParams(system="db", timeout=1), context(url))
        elapsed = time.monotonic() - started
    assert result.status is Status.FAIL
    assert (
        result.reason == f"cannot connect to PostgreSQL at 127.0.0.1:{port}: no answer within 0.9s"
    )
    assert elapsed < 3


def test_connect_with_a_wrong_password_says_authentication_failed(
    pg_primary: PostgresServer,
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    url = f"postgresql://{pg_primary.user}:{wrong}@127.0.0.1:{pg_primary.port}/postgres"
    result = run("postgres.connect", ConnectParams(system="db"), context(url))
    assert result.status is Status.FAIL
    assert result.reason == f"authentication failed for user {pg_primary.user}"
    assert wrong not in json.dumps(result.to_json())


def test_connect_to_a_missing_database_names_it(pg_primary: PostgresServer) -> None:
    url = pg_primary.url_for("no_such_database")
    result = run("postgres.connect", ConnectParams(system="db"), context(url))
    assert result.status is Status.FAIL
    assert result.reason == (
        f"database no_such_database does not exist on 127.0.0.1:{pg_primary.port}"
    )


def test_connect_with_an_unparsable_url_is_a_configuration_error() -> None:
    result = run("postgres.connect", ConnectParams(system="db"), context("host='unterminated"))
    assert result.status is Status.ERROR
    assert result.reason == "systems.db.url is not a valid PostgreSQL URL or connection string"


def test_connect_to_a_system_of_another_kind_is_an_error() -> None:
    ctx = ProbeContext(systems={"db": RedisSystem(url="${REDIS_URL}")})
    result = run("postgres.connect", ConnectParams(system="db"), ctx)
    assert result.status is Status.ERROR
    assert "is a redis, expected postgres" in result.reason


def test_probe_session_is_read_only(pg_url: str) -> None:
    # The probes' guard: whatever a query tried, the server would refuse to write.
    async def try_to_write() -> None:
        async with _session("db", context(pg_url), 5) as session:
            await session.rows("CREATE TABLE should_not_exist (id int)")

    with pytest.raises(Unreachable, match="read-only transaction"):
        asyncio.run(try_to_write())


# postgres.pool


def test_pool_passes_when_max_connections_fits_the_pools(pg_url: str) -> None:
    params = PoolParams(system="db", instances=2, pool_size=10, reserve=5)
    result = run("postgres.pool", params, context(pg_url))
    assert result.status is Status.PASS, result.reason
    assert measure(result, "needed").value == 25
    assert measure(result, "max_connections").value >= 25


def test_pool_fails_when_the_pools_need_more_than_max_connections(pg_url: str) -> None:
    params = PoolParams(system="db", instances=10, pool_size=500)
    result = run("postgres.pool", params, context(pg_url))
    assert result.status is Status.FAIL
    assert "not enough connections" in result.reason
    assert measure(result, "needed").value == 5010


# postgres.slow-query-log: set per database, so the session server's settings stay as they are


def test_slow_query_log_passes_when_a_threshold_is_set(pg_url: str) -> None:
    execute(pg_url, f"ALTER DATABASE {dbname(pg_url)} SET log_min_duration_statement = '250ms'")
    result = run("postgres.slow-query-log", SlowQueryLogParams(system="db"), context(pg_url))
    assert result.status is Status.PASS, result.reason
    assert measure(result, "log_min_duration_statement").value == 250
    assert result.details["source"] == "database"


def test_slow_query_log_fails_when_the_threshold_is_above_max(pg_url: str) -> None:
    execute(pg_url, f"ALTER DATABASE {dbname(pg_url)} SET log_min_duration_statement = '2s'")
    params = SlowQueryLogParams(system="db", max_ms=500)
    result = run("postgres.slow-query-log", params, context(pg_url))
    assert result.status is Status.FAIL
    assert "threshold is 2000 ms, above the required 500 ms" in result.reason


def test_slow_query_log_fails_when_disabled_and_says_how_to_enable(pg_url: str) -> None:
    execute(pg_url, f"ALTER DATABASE {dbname(pg_url)} SET log_min_duration_statement = -1")
    result = run("postgres.slow-query-log", SlowQueryLogParams(system="db"), context(pg_url))
    assert result.status is Status.FAIL
    assert result.reason.startswith("slow query log is disabled")
    assert "SELECT pg_reload_conf();" in result.reason
    assert "set per database with ALTER ... SET" in result.reason


# postgres.extension


def test_extension_passes_once_created(pg_url: str) -> None:
    params = ExtensionParams(system="db", name="citext")
    before = run("postgres.extension", params, context(pg_url))
    assert before.status is Status.FAIL
    assert "run CREATE EXTENSION citext;" in before.reason
    execute(pg_url, "CREATE EXTENSION citext")
    after = run("postgres.extension", params, context(pg_url))
    assert after.status is Status.PASS, after.reason


def test_unknown_extension_is_not_available(pg_url: str) -> None:
    params = ExtensionParams(system="db", name="no_such_extension")
    result = run("postgres.extension", params, context(pg_url))
    assert result.status is Status.FAIL
    assert "not available on the server" in result.reason


def test_pg_stat_statements_passes_when_installed_and_preloaded(
    pg_primary: PostgresServer, pg_url: str
) -> None:
    if "pg_stat_statements" not in pg_primary.settings.get("shared_preload_libraries", ""):
        missing("pg_stat_statements", "postgresql")  # the pgserver wheel lacks it
    execute(pg_url, "CREATE EXTENSION pg_stat_statements")
    result = run("postgres.extension", ExtensionParams(system="db"), context(pg_url))
    assert result.status is Status.PASS, result.reason


def test_pg_stat_statements_fails_when_created_but_not_preloaded(
    plain_server: PostgresServer,
) -> None:
    url = plain_server.create_database(f"ext_{secrets.token_hex(4)}")
    try:
        execute(url, "CREATE EXTENSION pg_stat_statements")
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile):
        missing("pg_stat_statements", "postgresql")  # the pgserver wheel lacks it
    result = run("postgres.extension", ExtensionParams(system="db"), context(url))
    assert result.status is Status.FAIL
    assert "exists but is not in shared_preload_libraries, so it collects nothing" in (
        result.reason
    )


# postgres.replication


@pytest.fixture
def reporting_replica(pg_primary: PostgresServer, pg_replica: PostgresServer) -> PostgresServer:
    """``pg_replica`` once the primary has its replay position: a replica reports it only every
    wal_receiver_status_interval (10s) or when WAL arrives, so the fixture writes a little WAL."""
    deadline = time.monotonic() + 20
    with pg_primary.connect() as primary:
        while time.monotonic() < deadline:
            row = primary.execute(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE state = 'streaming' AND replay_lsn IS NOT NULL"
            ).fetchone()
            if row is not None and row[0] >= 1:
                return pg_replica
            primary.execute("CREATE TEMPORARY TABLE nudge (id int)")
            primary.execute("DROP TABLE nudge")
            time.sleep(0.1)
    pytest.fail("the replica did not report its replay position within 20s")


def test_replication_passes_with_the_streaming_replica(
    pg_primary: PostgresServer, reporting_replica: PostgresServer
) -> None:
    pg_replica = reporting_replica
    # A generous time bound: an earlier test may have paused replay on this replica, and the
    # lag it then measured is shown for a while. The bounds themselves are tested elsewhere.
    params = ReplicationParams(system="db", min_replicas=1, max_lag="1m")
    result = run("postgres.replication", params, context(pg_primary.url))
    assert result.status is Status.PASS, result.reason
    [replica_row] = result.details["replicas"]
    assert replica_row["state"] == "streaming"
    assert replica_row["client_addr"] == "127.0.0.1"
    assert replica_row["application_name"] == pg_replica.settings["cluster_name"]


def test_replication_fails_when_fewer_replicas_stream_than_required(
    pg_primary: PostgresServer, reporting_replica: PostgresServer
) -> None:
    params = ReplicationParams(system="db", min_replicas=2, max_lag="1m")
    result = run("postgres.replication", params, context(pg_primary.url))
    assert result.status is Status.FAIL
    assert result.reason == "1 replica(s) streaming, 2 required"


def test_replication_fails_when_the_primary_has_no_replica(plain_server: PostgresServer) -> None:
    result = run("postgres.replication", ReplicationParams(system="db"), context(plain_server.url))
    assert result.status is Status.FAIL
    assert result.reason == "0 replica(s) streaming, 1 required"
    assert result.details["replicas"] == []


def test_replication_fails_when_pointed_at_the_replica(pg_replica: PostgresServer) -> None:
    result = run("postgres.replication", ReplicationParams(system="db"), context(pg_replica.url))
    assert result.status is Status.FAIL
    assert "is itself a replica in recovery" in result.reason


def test_replication_fails_while_the_replica_has_not_replayed_new_wal(
    pg_primary: PostgresServer, reporting_replica: PostgresServer, pg_url: str
) -> None:
    pg_replica = reporting_replica
    # Replay paused on the replica and a commit on the primary: the replica's replay position
    # is behind the primary's WAL for certain, so any lag bound of 0 bytes must fail.
    with pg_replica.connect() as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            _wait_until_paused(standby)
            execute(pg_url, "CREATE TABLE wal_writer (id int)", "INSERT INTO wal_writer VALUES (1)")
            params = ReplicationParams(system="db", max_lag_bytes=0, max_lag="1h")
            result = run("postgres.replication", params, context(pg_primary.url))
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            _wait_until_caught_up(pg_primary)  # leave the shared replica as it was
    assert result.status is Status.FAIL
    assert measure(result, "replay_lag_bytes").value > 0
    assert "lags" in result.reason and "(allowed 0 bytes / 1h)" in result.reason


def _wait_until_caught_up(pg_primary: PostgresServer) -> None:
    """New WAL makes the replica report; wait until it reports having replayed everything."""
    deadline = time.monotonic() + 20
    with pg_primary.connect() as primary:
        primary.execute("CREATE TEMPORARY TABLE nudge (id int)")
        row = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        target = row[0]
        while time.monotonic() < deadline:
            behind = primary.execute(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE replay_lsn IS NULL OR replay_lsn < %s::pg_lsn",
                (target,),
            ).fetchone()
            if behind is not None and behind[0] == 0:
                return
            primary.execute("DROP TABLE IF EXISTS nudge")
            primary.execute("CREATE TEMPORARY TABLE nudge (id int)")
            time.sleep(0.05)
    pytest.fail("the replica did not catch up within 20s after replay resumed")


def _wait_until_paused(standby: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
        if row is not None and row[0] == "paused":
            return
        time.sleep(0.05)
    pytest.fail("replay on the replica did not pause within 10s")


# postgres.schema and postgres.indexes


APP_SCHEMA = (
    "CREATE TABLE users (id bigint PRIMARY KEY, email text)",
    "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint REFERENCES users)",
    "CREATE INDEX orders_user_id ON orders (user_id)",
    "CREATE TABLE order_lines (order_id bigint, line int, sku text,"
    " PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders)",
    "CREATE SCHEMA audit",
    "CREATE TABLE audit.events (id bigint PRIMARY KEY, user_id bigint REFERENCES users)",
    "CREATE INDEX ON audit.events (user_id)",
)


def test_schema_passes_when_every_table_exists(pg_url: str) -> None:
    execute(pg_url, *APP_SCHEMA)
    params = SchemaParams(system="db", tables=["users", "orders", "audit.events"])
    result = run("postgres.schema", params, context(pg_url))
    assert result.status is Status.PASS, result.reason
    assert result.details["missing"] == []


def test_schema_fails_naming_the_missing_tables(pg_url: str) -> None:
    execute(pg_url, *APP_SCHEMA, "CREATE VIEW payments AS SELECT 1 AS id")
    params = SchemaParams(system="db", tables=["users", "payments", "audit.users", "Users"])
    result = run("postgres.schema", params, context(pg_url))
    assert result.status is Status.FAIL
    # A view is not a table, and names are matched exactly (no case folding).
    assert result.details["missing"] == ["payments", "audit.users", "Users"]


def test_indexes_pass_when_keys_and_foreign_keys_are_indexed(pg_url: str) -> None:
    execute(pg_url, *APP_SCHEMA)
    for schema in ("public", "audit"):
        result = run("postgres.indexes", IndexesParams(system="db", schema=schema), context(pg_url))
        assert result.status is Status.PASS, result.reason


def test_indexes_fail_naming_tables_without_pk_and_unindexed_foreign_keys(pg_url: str) -> None:
    execute(
        pg_url,
        *APP_SCHEMA,
        "DROP INDEX orders_user_id",
        "CREATE TABLE log (at timestamptz, line text)",
        "CREATE TABLE shipments (id int PRIMARY KEY, order_id bigint, line int, carrier text,"
        " FOREIGN KEY (order_id, line) REFERENCES order_lines)",
        # Leading columns in another order still serve the lookup; ...
        "CREATE INDEX ON shipments (line, order_id, carrier)",
        "CREATE TABLE returns (id int PRIMARY KEY, order_id bigint REFERENCES orders,"
        " user_id bigint REFERENCES audit.events)",
        # ... a partial index does not (it misses rows), nor one where the column is not first.
        "CREATE INDEX ON returns (order_id) WHERE id > 0",
        "CREATE INDEX ON returns (id, user_id)",
    )
    result = run("postgres.indexes", IndexesParams(system="db"), context(pg_url))
    assert result.status is Status.FAIL
    assert result.details == {
        "tables_without_pk": ["log"],
        "unindexed_foreign_keys": [
            "orders(user_id) → users",
            "returns(order_id) → orders",
            "returns(user_id) → audit.events",
        ],
    }
    assert measure(result, "tables").value == 6


def test_indexes_fail_on_an_empty_schema(pg_url: str) -> None:
    result = run("postgres.indexes", IndexesParams(system="db"), context(pg_url))
    assert result.status is Status.FAIL
    assert "schema public has no tables" in result.reason


# postgres.backup: files


def make_backup(path: Path, age: timedelta, content: bytes = b"PGDMP backup") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    when = time.time() - age.total_seconds()
    os.utime(path, (when, when))
    return path


def test_backup_files_pass_when_the_newest_is_recent(tmp_path: Path) -> None:
    make_backup(tmp_path / "backups" / "app-1.dump", timedelta(hours=40))
    newest = make_backup(tmp_path / "backups" / "app-2.dump", timedelta(hours=2))
    make_backup(tmp_path / "backups" / "notes.txt", timedelta(0))  # does not match the glob
    params = BackupParams(method="files", glob="backups/*.dump")
    result = run("postgres.backup", params, ProbeContext(base_dir=tmp_path))
    assert result.status is Status.PASS, result.reason
    assert result.details["newest_label"] == str(newest)
    assert result.details["count"] == 2
    assert measure(result, "age").value.startswith("2h")


def test_backup_files_fail_when_the_newest_is_too_old(tmp_path: Path) -> None:
    make_backup(tmp_path / "backups" / "daily" / "app.dump", timedelta(hours=30))
    params = BackupParams(method="files", glob="backups/**/*.dump", max_age="26h")
    result = run("postgres.backup", params, ProbeContext(base_dir=tmp_path))
    assert result.status is Status.FAIL
    assert "is 1d 6h old, older than 26h" in result.reason


def test_backup_files_fail_when_nothing_matches(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    params = BackupParams(method="files", glob="backups/*.dump")
    result = run("postgres.backup", params, ProbeContext(base_dir=tmp_path))
    assert result.status is Status.FAIL
    assert result.reason.startswith("no backups found (files matching backups/*.dump")


def test_backup_files_fail_when_the_newest_is_empty(tmp_path: Path) -> None:
    make_backup(tmp_path / "a.dump", timedelta(hours=3))
    make_backup(tmp_path / "b.dump", timedelta(hours=1), content=b"")
    params = BackupParams(method="files", glob=str(tmp_path / "*.dump"))  # absolute glob
    result = run("postgres.backup", params, ProbeContext(base_dir=Path("/nonexistent")))
    assert result.status is Status.FAIL
    assert "b.dump is empty (0 bytes)" in result.reason


# postgres.backup: pgBackRest, for real


class PgBackRest:
    """A pgBackRest repository in a temporary directory, backing up ``plain_server``."""

    def __init__(self, binary: str, server: PostgresServer, base: Path) -> None:
        assert server.socket_dir is not None, "pgBackRest reaches PostgreSQL through its socket"
        self.binary = binary
        self.server = server
        self.config = base / "pgbackrest.conf"
        stanza_options = "\n".join(
            [
                f"pg1-path={server.data_dir}",
                f"pg1-port={server.port}",
                f"pg1-socket-path={server.socket_dir}",
                f"pg1-user={server.user}",
            ]
        )
        self.config.write_text(
            "[global]\n"
            f"repo1-path={base / 'repo'}\n"
            f"lock-path={base / 'lock'}\n"
            f"log-path={base / 'log'}\n"
            "log-level-file=off\nlog-level-console=error\n"
            "repo1-retention-full=2\nstart-fast=y\n"
            # The throwaway server archives no WAL; the test is about reading `info`. Bundled,
            # uncompressed files make a full backup take about a second instead of fifteen.
            "archive-check=n\nrepo1-bundle=y\ncompress-type=none\n"
            f"[main]\n{stanza_options}\n[empty]\n{stanza_options}\n"
        )

    @property
    def command(self) -> list[str]:
        return [self.binary, f"--config={self.config}"]

    def __call__(self, stanza: str, *args: str) -> None:
        subprocess.run(
            [*self.command, f"--stanza={stanza}", *args],
            env={**os.environ, "PGPASSWORD": self.server.password},
            check=True,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def pgbackrest(
    plain_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> PgBackRest:
    binary = require_binary("pgbackrest", "pgbackrest")
    repo = PgBackRest(binary, plain_server, tmp_path_factory.mktemp("pgbackrest"))
    repo("main", "stanza-create")
    repo("main", "backup", "--type=full")
    repo("empty", "stanza-create")
    return repo


def test_pgbackrest_passes_after_a_fresh_full_backup(pgbackrest: PgBackRest) -> None:
    params = BackupParams(method="pgbackrest", stanza="main", command=pgbackrest.command)
    result = run("postgres.backup", params, ProbeContext())
    assert result.status is Status.PASS, result.reason
    assert result.details["newest_label"].endswith("F (full)")
    assert result.details["age_seconds"] < 600


def test_pgbackrest_fails_when_the_newest_backup_is_too_old(pgbackrest: PgBackRest) -> None:
    params = BackupParams(method="pgbackrest", stanza="main", command=pgbackrest.command)
    two_days_later = datetime.now(UTC) + timedelta(days=2)
    result = run("postgres.backup", params, ProbeContext(clock=lambda: two_days_later))
    assert result.status is Status.FAIL
    assert "old, older than 26h" in result.reason


def test_pgbackrest_fails_when_the_stanza_has_no_backup(pgbackrest: PgBackRest) -> None:
    params = BackupParams(method="pgbackrest", stanza="empty", command=pgbackrest.command)
    result = run("postgres.backup", params, ProbeContext())
    assert result.status is Status.FAIL
    assert result.reason == "no backups found (pgBackRest stanza empty: no valid backups)"


def test_pgbackrest_fails_for_a_stanza_that_was_never_created(pgbackrest: PgBackRest) -> None:
    params = BackupParams(method="pgbackrest", stanza="absent", command=pgbackrest.command)
    result = run("postgres.backup", params, ProbeContext())
    assert result.status is Status.FAIL
    assert result.reason == "no backups found (pgBackRest stanza absent: missing stanza path)"


def test_pgbackrest_error_exit_is_reported_with_its_message(pgbackrest: PgBackRest) -> None:
    command = [*pgbackrest.command, "--no-such-option"]
    params = BackupParams(method="pgbackrest", stanza="main", command=command)
    result = run("postgres.backup", params, ProbeContext())
    assert result.status is Status.FAIL
    assert result.reason.startswith("pgbackrest info failed (exit 31): ERROR: [031]:")


def test_pgbackrest_not_installed_is_a_plain_reason(tmp_path: Path) -> None:
    params = BackupParams(method="pgbackrest", stanza="main")
    result = run("postgres.backup", params, ProbeContext(environ={"PATH": str(tmp_path)}))
    assert result.status is Status.FAIL
    assert result.reason == "pgbackrest not found on PATH"


# --- postgres.heartbeat: pure verdicts ----------------------------------------------------------


def heartbeat(*values: Any, columns: int = 1, max_age: str = "5m") -> CheckResult:
    params = HeartbeatParams(system="db", query="SELECT 1", max_age=max_age)
    facts = HeartbeatFacts("db:5432", columns, values, NOW)
    return HeartbeatProbe().interpret(params, facts)


@pytest.mark.parametrize(
    "value",
    [
        NOW - timedelta(minutes=5),  # at the limit: still fresh
        (NOW - timedelta(seconds=3)).replace(tzinfo=None),  # without time zone: UTC
        (NOW - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5))),
        int((NOW - timedelta(seconds=30)).timestamp()),
        Decimal((NOW - timedelta(seconds=30)).timestamp()),
        NOW + timedelta(seconds=20),  # a clock a little ahead counts as "just now"
    ],
)
def test_heartbeat_within_max_age_passes(value: Any) -> None:
    result = heartbeat(value)
    assert result.status is Status.PASS, result.reason


def test_stale_heartbeat_fails_naming_its_age_and_the_limit() -> None:
    result = heartbeat(NOW - timedelta(minutes=12))
    assert result.status is Status.FAIL
    assert result.reason == "the newest heartbeat is 12m old (expected within 5m)"
    assert measure(result, "age").ok is False
    assert result.details["age_seconds"] == 720


@pytest.mark.parametrize(("values", "found"), [((), "no row"), ((None,), "NULL")])
def test_no_heartbeat_yet_fails(values: tuple[Any, ...], found: str) -> None:
    result = heartbeat(*values)
    assert result.status is Status.FAIL
    assert result.reason == f"no heartbeat yet (the query gave {found})"


def test_heartbeat_far_in_the_future_fails_instead_of_counting_as_fresh() -> None:
    result = heartbeat(NOW + timedelta(hours=5))
    assert result.status is Status.FAIL
    assert "is 5h in the future by the database's clock" in result.reason


@pytest.mark.parametrize(
    ("values", "columns", "message"),
    [
        ((NOW,), 2, "gives 2 columns; it must give one column"),
        ((NOW,), 0, "gives no result (is it a SELECT?)"),
        ((NOW, NOW), 1, "gives more than one row"),
        (("2026-12-01 02:00",), 1, "gives text, not a timestamp or epoch seconds"),
        ((NOW.date(),), 1, "gives a date, not a timestamp"),
        ((True,), 1, "gives bool, not a timestamp"),
        ((NOW.timestamp() * 1000 * 1000,), 1, "not a time in epoch seconds (milliseconds?"),
    ],
)
def test_heartbeat_of_another_shape_is_an_error(
    values: tuple[Any, ...], columns: int, message: str
) -> None:
    result = heartbeat(*values, columns=columns)
    assert result.status is Status.ERROR
    assert message in result.reason


# --- postgres.heartbeat against the real server -------------------------------------------------


def job_runs(url: str, *ages: str) -> None:
    """A job_runs table with one finished run per age ('12 minutes'), by the server's clock."""
    execute(url, "CREATE TABLE job_runs (id serial PRIMARY KEY, finished_at timestamptz)")
    for age in ages:
        execute(url, f"INSERT INTO job_runs (finished_at) VALUES (now() - interval '{age}')")


def heartbeat_on(url: str, query: str, **params: Any) -> CheckResult:
    return run(
        "postgres.heartbeat", HeartbeatParams(system="db", query=query, **params), context(url)
    )


NEWEST_RUN = "SELECT max(finished_at) FROM job_runs"


def test_heartbeat_passes_when_a_job_finished_recently(pg_url: str) -> None:
    job_runs(pg_url, "2 hours", "10 seconds")
    result = heartbeat_on(pg_url, NEWEST_RUN, max_age="5m")
    assert result.status is Status.PASS, result.reason
    assert result.details["age_seconds"] < 60


def test_heartbeat_fails_when_the_newest_job_is_stale(pg_url: str) -> None:
    job_runs(pg_url, "2 hours", "12 minutes")
    result = heartbeat_on(pg_url, NEWEST_RUN, max_age="5m")
    assert result.status is Status.FAIL
    assert result.reason.startswith("the newest heartbeat is 12m")
    assert result.reason.endswith("old (expected within 5m)")


def test_heartbeat_reads_epoch_seconds_and_timestamps_without_time_zone(pg_url: str) -> None:
    job_runs(pg_url, "30 seconds")
    for query in (
        "SELECT extract(epoch FROM max(finished_at)) FROM job_runs",
        "SELECT max(finished_at) AT TIME ZONE 'UTC' FROM job_runs",
        "SELECT max(finished_at) FROM job_runs WHERE finished_at::text LIKE '%'",
    ):
        result = heartbeat_on(pg_url, query)
        assert result.status is Status.PASS, (query, result.reason)


def test_heartbeat_fails_when_no_job_ran_yet(pg_url: str) -> None:
    job_runs(pg_url)
    assert heartbeat_on(pg_url, NEWEST_RUN).reason == "no heartbeat yet (the query gave NULL)"
    no_row = heartbeat_on(pg_url, "SELECT finished_at FROM job_runs LIMIT 1")
    assert no_row.reason == "no heartbeat yet (the query gave no row)"


def test_heartbeat_query_of_another_shape_is_an_error(pg_url: str) -> None:
    job_runs(pg_url, "1 minute", "2 minutes")
    two_columns = heartbeat_on(pg_url, "SELECT max(finished_at), count(*) FROM job_runs")
    two_rows = heartbeat_on(pg_url, "SELECT finished_at FROM job_runs")
    text = heartbeat_on(pg_url, "SELECT max(finished_at)::text FROM job_runs")
    assert two_columns.status is Status.ERROR and "gives 2 columns" in two_columns.reason
    assert two_rows.status is Status.ERROR and "more than one row" in two_rows.reason
    assert text.status is Status.ERROR and "gives text" in text.reason


def test_heartbeat_query_may_not_write(pg_url: str) -> None:
    job_runs(pg_url, "1 minute")
    writes = heartbeat_on(
        pg_url, "INSERT INTO job_runs (finished_at) VALUES (now()) RETURNING finished_at"
    )
    assert writes.status is Status.ERROR
    assert writes.reason.startswith("the heartbeat query tries to change data")
    assert "read-only transaction" in writes.reason
    # A second statement would escape the read-only transaction after a COMMIT: refused whole.
    smuggled = heartbeat_on(
        pg_url, "SELECT now(); COMMIT; INSERT INTO job_runs (finished_at) VALUES (now())"
    )
    assert smuggled.status is Status.ERROR
    assert smuggled.reason == "the heartbeat query is several statements; give one SELECT"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM job_runs").fetchone() == (1,)


def test_heartbeat_query_is_stopped_by_the_statement_timeout(pg_url: str) -> None:
    started = time.monotonic()
    result = heartbeat_on(pg_url, "SELECT now() FROM pg_sleep(30)", timeout=1)
    assert time.monotonic() - started < 5
    assert result.status is Status.FAIL
    # The statement_timeout is what is left of the second after connecting, less a margin.
    assert re.fullmatch(
        r"the heartbeat query did not finish within 0\.\ds on PostgreSQL at 127\.0\.0\.1:\d+ "
        r"\(statement_timeout\)",
        result.reason,
    ), result.reason


def test_heartbeat_on_a_missing_table_names_it(pg_url: str) -> None:
    result = heartbeat_on(pg_url, NEWEST_RUN)
    assert result.status is Status.FAIL
    assert 'relation "job_runs" does not exist' in result.reason
