"""The redis.* probes against real Redis servers on loopback, and their interpret steps.

Read-only checks use the session's shared ``redis_server``; a test that needs its own
configuration, counters or replication starts a dedicated server (``start_redis``), since the
shared one serves other tests in parallel.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from changeover.plan.systems import GitSystem, RedisSystem
from changeover.probes.base import CheckResult, ProbeContext, ProbeParams, Status, run_probe
from changeover.probes.redis import (
    ClusterParams,
    ClusterRaw,
    HitRateParams,
    HitRateRaw,
    MaxmemoryParams,
    PingParams,
    PingRaw,
    RedisCluster,
    RedisHitRate,
    RedisMaxmemoryPolicy,
    RedisPing,
    RedisReplication,
    ReplicationParams,
    parse_info,
    redis_address,
)
from changeover.services import RedisServer, find_redis_server, start_redis, start_redis_replica
from support.binaries import missing


def check(
    name: str, params: ProbeParams, url: str, environ: dict[str, str] | None = None
) -> CheckResult:
    ctx = ProbeContext({"cache": RedisSystem(url=url)}, environ=environ)
    return asyncio.run(run_probe(name, params, ctx))


@pytest.fixture
def needs_redis() -> None:
    """Skip (or fail under CHANGEOVER_REQUIRE_ALL=1) where no redis-server can be found."""
    if find_redis_server() is None:
        missing("redis-server", "redis-server")


@pytest.fixture
def own_redis(needs_redis: None, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server for this test alone (its counters and CONFIG are not shared)."""
    with start_redis(tmp_path / "redis") as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- connection and authentication ---------------------------------------------------------------


def test_ping_passes_and_reports_version(redis_url: str) -> None:
    result = check("redis.ping", PingParams(system="cache"), redis_url)
    assert result.status is Status.PASS, result.reason
    latency, version = result.evidence
    assert latency.name == "latency_ms" and latency.ok is True
    assert version.name == "redis_version" and version.value[0].isdigit()


def test_ping_fails_when_slower_than_max_latency(redis_url: str) -> None:
    result = check("redis.ping", PingParams(system="cache", max_latency="0ms"), redis_url)
    assert result.status is Status.FAIL
    assert "slower than the 0 ms allowed" in result.reason


def test_unreachable_redis_fails_with_a_plain_reason() -> None:
    port = free_port()
    result = check("redis.ping", PingParams(system="cache"), f"redis://127.0.0.1:{port}/0")
    assert result.status is Status.FAIL
    assert result.reason == f"cannot connect to Redis at 127.0.0.1:{port}: connection refused"


def test_authentication_failures_are_plain_and_never_show_the_password(
    needs_redis: None, tmp_path: Path
) -> None:
    password = "pw-7c41d2e9-canary"
    with start_redis(tmp_path / "redis", password=password) as server:
        no_password = f"redis://127.0.0.1:{server.port}/0"
        result = check("redis.ping", PingParams(system="cache"), no_password)
        assert result.status is Status.FAIL
        assert result.reason == (
            f"Redis at 127.0.0.1:{server.port} requires a password, "
            "but systems.cache.url gives none"
        )

        wrong = {"REDIS_URL": f"redis://:wrong-password-0000@127.0.0.1:{server.port}/0"}
        result = check("redis.ping", PingParams(system="cache"), "${REDIS_URL}", wrong)
        assert result.status is Status.FAIL
        assert result.reason.startswith(
            f"Redis at 127.0.0.1:{server.port} rejected the username or password"
        )
        assert "wrong-password-0000" not in json.dumps(result.to_json())

        right = {"REDIS_URL": server.url}
        result = check("redis.ping", PingParams(system="cache"), "${REDIS_URL}", right)
        assert result.status is Status.PASS, result.reason
        assert password not in json.dumps(result.to_json()) + result.reason


def test_refuses_a_system_that_is_not_redis() -> None:
    ctx = ProbeContext({"cache": GitSystem(path=".")})
    result = asyncio.run(run_probe("redis.ping", PingParams(system="cache"), ctx))
    assert result.status is Status.ERROR
    assert result.reason == "system 'cache' is a git, expected redis"


# --- redis.replication ---------------------------------------------------------------------------


def test_replication_passes_for_master_and_replica_and_fails_when_replica_stopped(
    needs_redis: None, tmp_path: Path
) -> None:
    with start_redis(tmp_path / "primary") as primary:
        replica = start_redis_replica(primary, tmp_path / "replica")
        try:
            master_check = ReplicationParams(system="cache", role="master", min_replicas=1)
            result = check("redis.replication", master_check, primary.url)
            assert result.status is Status.PASS, result.reason
            assert result.details["replicas"][0]["address"].endswith(f":{replica.port}")

            replica_check = ReplicationParams(system="cache", role="replica")
            result = check("redis.replication", replica_check, replica.url)
            assert result.status is Status.PASS, result.reason
            assert result.reason == f"replica of 127.0.0.1:{primary.port}, link up"

            result = check("redis.replication", master_check, replica.url)
            assert result.status is Status.FAIL
            assert result.reason == (
                f"expected a master, but this Redis is a replica of 127.0.0.1:{primary.port}"
            )
        finally:
            replica.stop()
        result = _until_status(Status.FAIL, "redis.replication", master_check, primary.url)
        assert result.reason == "0 connected replicas, need at least 1"


def test_replication_fails_when_replica_lost_its_master(needs_redis: None, tmp_path: Path) -> None:
    primary = start_redis(tmp_path / "primary")
    try:
        with start_redis_replica(primary, tmp_path / "replica") as replica:
            primary.stop()
            params = ReplicationParams(system="cache")
            result = _until_status(Status.FAIL, "redis.replication", params, replica.url)
            assert result.reason == f"replica's link to its master 127.0.0.1:{primary.port} is down"
    finally:
        primary.stop()


def _until_status(status: Status, name: str, params: ProbeParams, url: str) -> CheckResult:
    """Redis notices a lost peer within a moment; poll, bounded, until it does."""
    deadline = time.monotonic() + 10
    while True:
        result = check(name, params, url)
        if result.status is status or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


# --- redis.cluster -------------------------------------------------------------------------------


def test_cluster_passes_for_standalone_unless_a_cluster_is_required(redis_url: str) -> None:
    result = check("redis.cluster", ClusterParams(system="cache"), redis_url)
    assert result.status is Status.PASS
    assert result.reason == "standalone, not clustered"
    result = check("redis.cluster", ClusterParams(system="cache", require_cluster=True), redis_url)
    assert result.status is Status.FAIL
    assert result.reason == "standalone Redis, but the plan requires a Redis Cluster"


def test_cluster_fails_until_every_slot_is_assigned(needs_redis: None, tmp_path: Path) -> None:
    settings = {"cluster-enabled": "yes", "cluster-node-timeout": "1000"}
    with start_redis(tmp_path / "node", settings=settings) as node:
        params = ClusterParams(system="cache", require_cluster=True)
        result = check("redis.cluster", params, node.url)
        assert result.status is Status.FAIL
        assert "only 0 of 16384 hash slots are assigned" in result.reason

        with node.client() as client:
            client.execute_command("CLUSTER ADDSLOTS", *range(16384))
        result = _until_status(Status.PASS, "redis.cluster", params, node.url)
        assert result.status is Status.PASS, result.reason
        assert result.reason == "cluster ok, all 16384 slots assigned (1 nodes)"


# --- redis.maxmemory-policy ----------------------------------------------------------------------


def test_maxmemory_policy_passes_for_evicting_cache_and_fails_for_the_noeviction_trap(
    needs_redis: None, tmp_path: Path
) -> None:
    settings = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}
    with start_redis(tmp_path / "redis", settings=settings) as server:
        params = MaxmemoryParams(system="cache")
        result = check("redis.maxmemory-policy", params, server.url)
        assert result.status is Status.PASS, result.reason
        assert result.reason == f"allkeys-lru with maxmemory {64 * 1024 * 1024} bytes"

        with server.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", "0")
        result = check("redis.maxmemory-policy", params, server.url)
        assert result.status is Status.FAIL
        assert result.reason.startswith(
            "maxmemory-policy is noeviction and no maxmemory is set: the cache grows until "
            "the machine runs out of memory"
        )


# --- redis.hit-rate ------------------------------------------------------------------------------


async def _hit_rate_with_traffic(
    url: str, params: HitRateParams, hits_per_miss: int
) -> CheckResult:
    """Run the probe while a concurrent client reads: ``hits_per_miss`` hits for every miss."""
    ctx = ProbeContext({"cache": RedisSystem(url=url)})
    client = aioredis.Redis.from_url(url)
    await client.set("present", "1")
    done = asyncio.Event()

    async def traffic() -> None:
        while not done.is_set():
            for _ in range(hits_per_miss):
                await client.get("present")
            await client.get("absent")
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(traffic())
    try:
        return await run_probe("redis.hit-rate", params, ctx)
    finally:
        done.set()
        await reader
        await client.aclose()


def test_hit_rate_passes_for_a_warm_cache_and_fails_for_a_cold_one(own_redis: RedisServer) -> None:
    params = HitRateParams(system="cache", interval="0.5s", min="80%")
    result = asyncio.run(_hit_rate_with_traffic(own_redis.url, params, hits_per_miss=9))
    assert result.status is Status.PASS, result.reason
    rate = result.evidence[0]
    assert rate.name == "hit_rate" and 85 <= rate.value <= 95

    result = asyncio.run(_hit_rate_with_traffic(own_redis.url, params, hits_per_miss=1))
    assert result.status is Status.FAIL
    assert "below 80%" in result.reason


def test_hit_rate_warns_when_there_is_no_cache_traffic(own_redis: RedisServer) -> None:
    params = HitRateParams(system="cache", interval="0.3s")
    result = check("redis.hit-rate", params, own_redis.url)
    assert result.status is Status.WARN
    assert result.reason.startswith("no cache traffic in the interval: 0 lookups")


def test_hit_rate_timeout_defaults_to_interval_plus_ten_seconds() -> None:
    assert HitRateParams(system="cache", interval="30s").timeout == 40
    assert HitRateParams(system="cache").timeout == 20


def test_hit_rate_rejects_a_timeout_shorter_than_the_interval() -> None:
    with pytest.raises(
        ValidationError, match=r"timeout \(5s\) must be longer than interval \(10s\)"
    ):
        HitRateParams(system="cache", interval="10s", timeout=5)


# --- interpret: the decisions without a server ---------------------------------------------------

MASTER_INFO = """# Replication
role:master
connected_slaves:2
slave0:ip=10.0.0.2,port=6379,state=online,offset=5000000,lag=0
slave1:ip=10.0.0.3,port=6379,state=online,offset=3000000,lag=1
master_repl_offset:5000100
"""


def test_replication_fails_for_a_replica_lagging_by_too_many_bytes() -> None:
    result = RedisReplication().interpret(
        ReplicationParams(system="cache"), parse_info(MASTER_INFO)
    )
    assert result.status is Status.FAIL
    assert result.reason == "replica 10.0.0.3:6379 is 2000100 bytes behind (allowed 1048576)"
    lags = {m.name: m.value for m in result.evidence if m.name.startswith("lag_bytes")}
    assert lags == {"lag_bytes[10.0.0.2:6379]": 100, "lag_bytes[10.0.0.3:6379]": 2000100}


def test_replication_fails_for_a_replica_still_syncing() -> None:
    info = MASTER_INFO.replace("offset=3000000", "offset=5000100").replace(
        "state=online,offset=5000100,lag=1", "state=wait_bgsave,offset=5000100,lag=1"
    )
    result = RedisReplication().interpret(ReplicationParams(system="cache"), parse_info(info))
    assert result.status is Status.FAIL
    assert result.reason == "replica 10.0.0.3:6379 is wait_bgsave, not online"


def test_replication_any_role_accepts_a_replica_with_its_link_up() -> None:
    info = parse_info("role:slave\nmaster_host:10.0.0.1\nmaster_port:6379\nmaster_link_status:up\n")
    result = RedisReplication().interpret(ReplicationParams(system="cache"), info)
    assert result.status is Status.PASS


def test_replication_names_a_full_resync_in_progress() -> None:
    info = parse_info(
        "role:slave\nmaster_host:h\nmaster_port:1\nmaster_link_status:down\n"
        "master_sync_in_progress:1\n"
    )
    result = RedisReplication().interpret(ReplicationParams(system="cache"), info)
    assert result.reason == (
        "replica's link to its master h:1 is down (a full resynchronisation is in progress)"
    )


def test_cluster_fails_when_slots_are_on_failing_nodes() -> None:
    info = parse_info(
        "cluster_state:fail\ncluster_slots_assigned:16384\ncluster_slots_ok:10000\n"
        "cluster_slots_pfail:0\ncluster_slots_fail:6384\ncluster_known_nodes:6\n"
    )
    result = RedisCluster().interpret(ClusterParams(system="cache"), ClusterRaw(True, info))
    assert result.status is Status.FAIL
    assert result.reason == "cluster_state is fail; 6384 hash slots are on failing nodes"


@pytest.mark.parametrize(
    ("info", "params", "status", "reason"),
    [
        ("maxmemory:1000\nmaxmemory_policy:volatile-lfu", {}, Status.PASS,
         "volatile-lfu with maxmemory 1000 bytes"),
        ("maxmemory:1000\nmaxmemory_policy:noeviction", {}, Status.FAIL,
         "maxmemory-policy is noeviction: once maxmemory is reached every write fails with an "
         "OOM error; use an evicting policy such as allkeys-lru"),
        ("maxmemory:0\nmaxmemory_policy:allkeys-lru", {}, Status.FAIL,
         "no maxmemory is set: the cache can grow until the machine runs out of memory"),
        ("maxmemory:0\nmaxmemory_policy:allkeys-lru", {"require_maxmemory": False}, Status.PASS,
         "allkeys-lru with no maxmemory"),
        ("maxmemory:1000\nmaxmemory_policy:noeviction", {"allowed": ["noeviction"]}, Status.PASS,
         "noeviction with maxmemory 1000 bytes"),
        ("maxmemory:1000\nmaxmemory_policy:allkeys-random", {"allowed": ["allkeys-lru"]},
         Status.FAIL, "maxmemory-policy is allkeys-random, expected one of allkeys-lru"),
    ],
)  # fmt: skip
def test_maxmemory_policy_decisions(
    info: str, params: dict[str, Any], status: Status, reason: str
) -> None:
    result = RedisMaxmemoryPolicy().interpret(
        MaxmemoryParams(system="cache", **params), parse_info(info)
    )
    assert (result.status, result.reason) == (status, reason)


def test_hit_rate_of_the_interval_not_of_the_server_lifetime() -> None:
    # Lifetime: 1000 hits / 1100 lookups (91%); this interval: 10 hits, 90 misses (10%).
    raw = HitRateRaw(1000, 100, 1010, 190, 10.0)
    result = RedisHitRate().interpret(HitRateParams(system="cache"), raw)
    assert result.status is Status.FAIL
    assert result.evidence[0].value == 10.0


def test_hit_rate_warns_when_counters_went_backwards() -> None:
    raw = HitRateRaw(1000, 100, 5, 1, 10.0)
    result = RedisHitRate().interpret(HitRateParams(system="cache"), raw)
    assert result.status is Status.WARN
    assert "counters went backwards" in result.reason


def test_hit_rate_needs_min_lookups_to_judge() -> None:
    raw = HitRateRaw(0, 0, 3, 1, 10.0)
    params = HitRateParams(system="cache", min_lookups=10)
    assert RedisHitRate().interpret(params, raw).status is Status.WARN
    params = HitRateParams(system="cache", min_lookups=4, min="70%")
    assert RedisHitRate().interpret(params, raw).status is Status.PASS


def test_ping_interpret_compares_against_max_latency() -> None:
    params = PingParams(system="cache", max_latency="5ms")
    assert RedisPing().interpret(params, PingRaw(4.9, "7.2.4")).status is Status.PASS
    assert RedisPing().interpret(params, PingRaw(5.1, "7.2.4")).status is Status.FAIL


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://:secret@cache.internal:6380/0", "cache.internal:6380"),
        ("rediss://user:secret@[::1]/0", "[::1]:6379"),
        ("unix:///run/redis/redis.sock", "/run/redis/redis.sock"),
    ],
)
def test_redis_address_never_includes_the_password(url: str, address: str) -> None:
    assert redis_address(url) == address


def test_parse_info_skips_headers_and_keeps_colons_in_values() -> None:
    assert parse_info("# Server\r\nredis_version:7.2.4\r\nexecutable:/a:b\r\n\r\n") == {
        "redis_version": "7.2.4",
        "executable": "/a:b",
    }
