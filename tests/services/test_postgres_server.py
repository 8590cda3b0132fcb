"""Throwaway PostgreSQL: login with the password, settings, streaming replica, stop, failures."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest

from changeover.errors import ServiceError, UsageError
from changeover.services import (
    PostgresServer,
    find_postgres_bin_dir,
    postgres_version,
    start_postgres,
    start_replica,
    wheel_postgres_bin_dir,
)
from support.binaries import missing, require_all


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(text in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture
def bin_dir() -> Path:
    found = find_postgres_bin_dir()
    if found is None:
        missing("PostgreSQL", "postgresql")
    assert found is not None
    return found.path


def test_primary_accepts_the_password_over_tcp(pg_primary: PostgresServer) -> None:
    with psycopg.connect(pg_primary.url, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, inet_server_addr()::text").fetchone()
    assert row == ("changeover", "127.0.0.1/32")
    assert pg_primary.url == (
        f"postgresql://changeover:{pg_primary.password}@127.0.0.1:{pg_primary.port}/postgres"
    )


def test_primary_rejects_a_wrong_password(pg_primary: PostgresServer) -> None:
    wrong = pg_primary.url.replace(pg_primary.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_primary_has_the_settings_the_probes_need(pg_primary: PostgresServer) -> None:
    with pg_primary.connect() as conn:

        def show(name: str) -> str:
            row = conn.execute(f"SHOW {name}").fetchone()
            assert row is not None
            return str(row[0])

        assert show("listen_addresses") == "127.0.0.1"
        assert show("wal_level") == "replica"
        assert show("fsync") == "off"
        assert show("hot_standby") == "on"
        assert int(show("max_wal_senders")) == 5
        assert show("server_version_num").startswith(str(pg_primary.version))
        preload = show("shared_preload_libraries")
    ships_extension = "shared_preload_libraries" in pg_primary.settings
    assert ("pg_stat_statements" in preload) == ships_extension


def test_pg_stat_statements_records_statements_when_shipped(
    pg_primary: PostgresServer, pg_url: str
) -> None:
    if "shared_preload_libraries" not in pg_primary.settings:
        pytest.skip(f"the PostgreSQL in {pg_primary.bin_dir} does not ship pg_stat_statements")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SELECT 4242 AS marker")
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s", ("%marker%",)
        ).fetchone()
    assert row is not None
    assert row[0] >= 1


def test_primary_runs_as_an_unprivileged_user(pg_primary: PostgresServer) -> None:
    postmaster = psutil.Process(pg_primary.pid)
    assert postmaster.uids().real != 0
    if os.geteuid() != 0:
        assert postmaster.uids().real == os.geteuid()


def test_unix_socket_is_in_the_servers_own_directory(pg_primary: PostgresServer) -> None:
    assert pg_primary.socket_dir is not None
    socket_path = pg_primary.socket_dir / f".s.PGSQL.{pg_primary.port}"
    assert socket_path.is_socket()
    with psycopg.connect(
        host=str(pg_primary.socket_dir),
        port=pg_primary.port,
        user="changeover",
        password=pg_primary.password,
        dbname="postgres",
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_version_is_the_binaries_major_version(pg_primary: PostgresServer) -> None:
    assert pg_primary.version == postgres_version(pg_primary.bin_dir)


def test_create_database_returns_a_url_to_an_empty_database(pg_primary: PostgresServer) -> None:
    url = pg_primary.create_database("test_created_here")
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("test_created_here",)
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchone()
            assert tables == (0,)
    finally:
        pg_primary.drop_database("test_created_here")


def test_create_database_rejects_an_unsafe_name(pg_primary: PostgresServer) -> None:
    with pytest.raises(UsageError, match="database name"):
        pg_primary.create_database('x"; DROP DATABASE postgres; --')


def test_pg_url_gives_each_test_its_own_database(pg_url: str, pg_primary: PostgresServer) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0].startswith("test_")
    assert row[0] != "postgres"


def test_replica_streams_a_row_written_on_the_primary(
    pg_primary: PostgresServer, pg_replica: PostgresServer, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders VALUES (1, 'written on the primary')")
    database = pg_url.rsplit("/", 1)[1]

    def visible_on_replica() -> bool:
        try:
            with psycopg.connect(pg_replica.url_for(database), connect_timeout=2) as conn:
                row = conn.execute("SELECT note FROM orders WHERE id = 1").fetchone()
        except psycopg.Error:
            return False
        return row == ("written on the primary",)

    assert _wait_for(visible_on_replica)
    with pg_primary.connect() as conn:
        states = conn.execute("SELECT state FROM pg_stat_replication").fetchall()
    assert ("streaming",) in states


def test_replica_is_read_only(pg_replica: PostgresServer) -> None:
    assert pg_replica.is_replica
    with pg_replica.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (id int)")
    with pytest.raises(UsageError, match="read-only replica"):
        pg_replica.create_database("nope")


def test_stop_leaves_no_process_and_no_files(bin_dir: Path) -> None:
    server = start_postgres(bin_dir=bin_dir, settings={"log_min_duration_statement": "0"})
    with server.connect() as conn:
        assert conn.execute("SHOW log_min_duration_statement").fetchone() == ("0",)
    processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    assert len(processes) > 1  # the postmaster and its background workers
    base = server.data_dir.parent

    server.stop()

    assert not server.running
    assert not any(process.is_running() for process in processes)
    assert not base.exists()
    server.stop()  # a second stop is harmless


def test_a_bad_setting_fails_with_a_service_error_quoting_the_log(bin_dir: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        start_postgres(bin_dir=bin_dir, settings={"shared_buffers": "lots"})
    message = str(caught.value)
    assert "exited with code" in message
    assert 'invalid value for parameter "shared_buffers"' in message
    log_path = Path(message.split("log: ", 1)[1].split("\n", 1)[0])
    try:
        assert log_path.name == "postgres.log"
        # The log stays for the operator to read; the data directory is gone.
        assert "shared_buffers" in log_path.read_text()
        assert not (log_path.parent / "data").exists()
        assert not _processes_mentioning(str(log_path.parent))
    finally:
        shutil.rmtree(log_path.parent)


def test_a_workdir_holding_data_is_refused_and_left_alone(bin_dir: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="changeover-test-"))
    workdir.chmod(0o755)  # reachable by the server user, so only the data/ check can refuse
    (workdir / "data").mkdir()
    (workdir / "data" / "precious").write_text("keep me")
    try:
        with pytest.raises(ServiceError, match="already exists"):
            start_postgres(workdir, bin_dir=bin_dir)
        assert (workdir / "data" / "precious").read_text() == "keep me"
    finally:
        shutil.rmtree(workdir)


def test_settings_changeover_chooses_cannot_be_overridden() -> None:
    with pytest.raises(UsageError, match="chosen by changeover"):
        start_postgres(settings={"port": "5432"})
    with pytest.raises(UsageError, match="setting name"):
        start_postgres(settings={"fsync = on\nport": "1"})


def test_bin_dir_without_postgres_is_a_service_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="does not hold the PostgreSQL programs"):
        start_postgres(bin_dir=tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's servers switch user")
def test_workdir_the_server_user_cannot_enter_is_refused(bin_dir: Path) -> None:
    closed = Path(tempfile.mkdtemp())  # mode 0700, owned by root
    try:
        with pytest.raises(ServiceError, match="not reachable by the user"):
            start_postgres(closed / "pg", bin_dir=bin_dir)
    finally:
        shutil.rmtree(closed)


def test_workdir_keeps_the_files_after_stop(bin_dir: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="changeover-test-"))
    workdir.chmod(0o755)
    try:
        with start_postgres(workdir / "pg", bin_dir=bin_dir) as server:
            assert server.data_dir == workdir / "pg" / "data"
        assert (workdir / "pg" / "data" / "PG_VERSION").exists()
        assert "database system is shut down" in (workdir / "pg" / "postgres.log").read_text()
    finally:
        shutil.rmtree(workdir)


def test_the_pgserver_wheels_binaries_run_a_primary_and_a_replica() -> None:
    wheel = wheel_postgres_bin_dir()
    if wheel is None:
        if require_all():
            pytest.fail("CHANGEOVER_REQUIRE_ALL=1 and the pgserver wheel is not installed")
        pytest.skip("the pgserver wheel is not installed (pip install pgserver)")
    with start_postgres(bin_dir=wheel) as server:
        assert server.bin_dir == wheel
        assert server.version == postgres_version(wheel)
        with psycopg.connect(server.url) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None
        assert row[0] // 10000 == server.version
        # As root, the wheel's binaries (usually under a private /root) run as another user.
        assert psutil.Process(server.pid).uids().real != 0
        with start_replica(server) as replica, replica.connect() as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
