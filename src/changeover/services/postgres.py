"""Throwaway PostgreSQL servers — a primary and streaming replicas — for the demo and the tests.

``start_postgres()`` runs initdb in a temporary directory and starts the server on a free port of
127.0.0.1 with a superuser ``changeover`` whose random password is required on every connection
(scram-sha-256). ``start_replica()`` clones a running server with ``pg_basebackup -R`` and waits
until it streams. Both return a ``PostgresServer``, ended by ``stop()`` or its ``with`` block.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from changeover.errors import ServiceError, UsageError
from changeover.secrets import REDACTOR
from changeover.services._accounts import (
    Account,
    ensure_reachable,
    give,
    make_base_dir,
    private_dir,
    reachable_bin_dir,
    server_account,
)
from changeover.services._process import (
    READY_TIMEOUT,
    ManagedProcess,
    free_port,
    register_cleanup,
    run_tool,
    server_env,
    unregister_cleanup,
)
from changeover.services.binaries import find_postgres_bin_dir, has_postgres_tools

USER = "changeover"
HOST = "127.0.0.1"

# Chosen by changeover for every start: a free loopback port and a private socket directory.
_RESERVED_SETTINGS = frozenset({"listen_addresses", "port", "unix_socket_directories"})
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SOCKET_PATH_MAX = 90  # sun_path holds 107 bytes, and "/.s.PGSQL.65535.lock" must fit after it
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
# The postmaster's shutdown mode is chosen by signal: SIGINT is "fast" (roll back, checkpoint,
# exit), SIGQUIT "immediate" (exit now; recovery at next start, which a throwaway never has).
_FAST_SHUTDOWN = signal.SIGINT
_IMMEDIATE_SHUTDOWN = signal.SIGQUIT

_PG_HBA = """\
# Written by changeover: password (scram-sha-256) logins from loopback only. Any role may log
# in (tests and demos create application roles); replication only for {user}.
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     {user}          127.0.0.1/32            scram-sha-256
"""


@dataclass
class _Layout:
    """The files of one server: everything lives under ``base``."""

    base: Path
    owned: bool  # we created base, so stop() removes it
    data_created: bool = False  # we created data/, so a failed start may remove it

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def setup_log(self) -> Path:
        return self.base / "setup.log"

    @property
    def socket_dir(self) -> Path | None:
        socket_dir = self.base / "socket"
        return socket_dir if len(str(socket_dir)) <= _SOCKET_PATH_MAX else None

    def discard(self) -> None:
        """After a stop: remove everything if the directory is ours, else leave it to its owner."""
        if self.owned:
            shutil.rmtree(self.base, ignore_errors=True)

    def discard_failed(self) -> None:
        """After a failed start: remove the data, keep the logs the error message points to."""
        if self.data_created:
            shutil.rmtree(self.data, ignore_errors=True)
        shutil.rmtree(self.base / "socket", ignore_errors=True)
        (self.base / "superuser-password").unlink(missing_ok=True)


class PostgresServer:
    """A running throwaway PostgreSQL server; ``stop()`` it or use it as a context manager.

    Made by ``start_postgres()`` and ``start_replica()``. ``url`` carries the password; the
    password is registered with the REDACTOR, so it is scrubbed from any output.
    """

    user = USER
    host = HOST

    def __init__(
        self,
        *,
        layout: _Layout,
        process: ManagedProcess,
        port: int,
        password: str,
        bin_dir: Path,
        exec_dir: Path,
        version: int,
        settings: Mapping[str, str],
        primary: PostgresServer | None,
    ) -> None:
        self._layout = layout
        self._process = process
        self.port = port
        self.password = password
        self.bin_dir = bin_dir
        self._exec_dir = exec_dir  # bin_dir, or a mirror of it the server user can reach
        self.version = version
        self._settings = dict(settings)
        self.primary = primary
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._token = register_cleanup(self.stop)

    # -- where it is ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://changeover:<password>@127.0.0.1:<port>/postgres``."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@{HOST}:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self._layout.data

    @property
    def log_path(self) -> Path:
        return self._layout.log

    @property
    def socket_dir(self) -> Path | None:
        """The unix socket's directory (None when the work directory's path is too long)."""
        return self._layout.socket_dir

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        return self._process.pid

    @property
    def is_replica(self) -> bool:
        return self.primary is not None

    @property
    def running(self) -> bool:
        return not self._stopped and self._process.returncode is None

    @property
    def settings(self) -> dict[str, str]:
        """The settings written to the server's ``changeover.conf`` (without port and socket)."""
        return dict(self._settings)

    def __repr__(self) -> str:
        role = "replica" if self.is_replica else "primary"
        state = "running" if self.running else "stopped"
        return f"<PostgresServer {role} {HOST}:{self.port} {state} data_dir={self.data_dir}>"

    # -- using it ------------------------------------------------------------------------------

    def connect(self, database: str = "postgres") -> psycopg.Connection[TupleRow]:
        """An autocommit connection as the superuser; close it (``with`` block) when done."""
        try:
            return psycopg.connect(
                host=HOST,
                port=self.port,
                user=USER,
                password=self.password,
                dbname=database,
                connect_timeout=10,
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise ServiceError(
                REDACTOR.scrub(f"cannot connect to PostgreSQL at {HOST}:{self.port}: {exc}")
            ) from exc

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self._check_writable_database(name)
        try:
            with self.connect() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise ServiceError(
                REDACTOR.scrub(f"cannot create the database {name!r} at port {self.port}: {exc}")
            ) from exc
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any sessions still connected to it."""
        self._check_writable_database(name)
        force = " WITH (FORCE)" if self.version >= 13 else ""
        statement = sql.SQL("DROP DATABASE IF EXISTS {}" + force).format(sql.Identifier(name))
        try:
            with self.connect() as conn:
                conn.execute(statement)
        except psycopg.Error as exc:
            raise ServiceError(
                REDACTOR.scrub(f"cannot drop the database {name!r} at port {self.port}: {exc}")
            ) from exc

    def _check_writable_database(self, name: str) -> None:
        if not _DATABASE_NAME.fullmatch(name):
            raise UsageError(
                f"database name {name!r}: use letters, digits and '_' (at most 63, not first digit)"
            )
        if self.is_replica:
            raise UsageError(f"the server at port {self.port} is a read-only replica")

    # -- ending it -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Shut the server down (fast shutdown, killed if it overruns) and remove its temp files."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._process.stop()
        self._layout.discard()
        unregister_cleanup(self._token)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------


def start_postgres(
    workdir: Path | None = None,
    *,
    settings: Mapping[str, str] | None = None,
    bin_dir: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> PostgresServer:
    """Initialise and start a PostgreSQL server on a free loopback port.

    ``workdir``: where its files go (data, log, socket); default a temporary directory removed
    at stop. ``settings``: extra ``postgresql.conf`` settings, e.g.
    ``{"log_min_duration_statement": "0"}``. ``bin_dir``: the binaries to use; default
    ``find_postgres_bin_dir()``. Raises ServiceError (naming the log) if it does not come up.
    """
    extra = _check_settings(settings)
    bin_dir = _resolve_bin_dir(bin_dir)
    account = server_account()
    exec_dir = reachable_bin_dir(bin_dir, account)
    layout = _make_layout(workdir, account, "changeover-pg-")
    password = secrets.token_urlsafe(24)
    REDACTOR.register(password)
    try:
        _initdb(exec_dir, layout, account, password)
        version = _read_version(layout.data)
        _configure_cluster(layout.data)
        server_settings = _base_settings(exec_dir, version) | extra
        process, port = _launch(exec_dir, layout, account, password, server_settings, timeout)
    except BaseException as exc:
        layout.discard_failed()
        if not isinstance(exc, ServiceError):  # interrupted: no error message points here
            layout.discard()
        raise
    return PostgresServer(
        layout=layout,
        process=process,
        port=port,
        password=password,
        bin_dir=bin_dir,
        exec_dir=exec_dir,
        version=version,
        settings=server_settings,
        primary=None,
    )


def start_replica(
    primary: PostgresServer, workdir: Path | None = None, *, timeout: float = READY_TIMEOUT
) -> PostgresServer:
    """Clone ``primary`` with ``pg_basebackup -R`` and start it as a hot standby on its own port.

    Returns once the primary's ``pg_stat_replication`` shows the replica ``streaming`` with a
    reported replay position.
    """
    if not primary.running:
        raise ServiceError(f"cannot start a replica: the primary at port {primary.port} is stopped")
    exec_dir = primary._exec_dir
    if not has_postgres_tools(exec_dir, ("pg_basebackup",)):
        raise ServiceError(
            f"pg_basebackup not found in {primary.bin_dir}: install the PostgreSQL client tools"
        )
    account = server_account()
    layout = _make_layout(workdir, account, "changeover-pg-replica-")
    process: ManagedProcess | None = None
    try:
        private_dir(layout.data, account)
        layout.data_created = True
        run_tool(
            [
                exec_dir / "pg_basebackup",
                "--pgdata",
                layout.data,
                "--host",
                HOST,
                "--port",
                str(primary.port),
                "--username",
                USER,
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            what="pg_basebackup",
            log_path=layout.setup_log,
            account=account,
            # The password goes through the environment: argv is visible to every user in ps.
            env=server_env(layout.base, {"PGPASSWORD": primary.password}),
            cwd=layout.base,
        )
        # The walreceiver reports cluster_name as its application_name on the primary.
        name = f"changeover_replica_{secrets.token_hex(4)}"
        replica_settings = primary.settings | {"cluster_name": name}
        process, port = _launch(
            exec_dir, layout, account, primary.password, replica_settings, timeout
        )
        process.wait_until(
            functools.partial(_is_streaming, primary, name),
            goal="streaming from the primary",
            timeout=timeout,
        )
    except BaseException as exc:
        if process is not None:
            process.stop()
        layout.discard_failed()
        if not isinstance(exc, ServiceError):  # interrupted: no error message points here
            layout.discard()
        raise
    return PostgresServer(
        layout=layout,
        process=process,
        port=port,
        password=primary.password,
        bin_dir=primary.bin_dir,
        exec_dir=exec_dir,
        version=primary.version,
        settings=replica_settings,
        primary=primary,
    )


# ---------------------------------------------------------------------------------------------


def _check_settings(settings: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in (settings or {}).items():
        if not _SETTING_NAME.fullmatch(name):
            raise UsageError(f"not a PostgreSQL setting name: {name!r}")
        if name.lower() in _RESERVED_SETTINGS:
            raise UsageError(
                f"the setting {name} is chosen by changeover (a free loopback port and a private "
                "socket directory) and cannot be set"
            )
        text = str(value)
        if any(char in text for char in "\r\n\0"):
            raise UsageError(f"the value of the setting {name} contains a line break")
        checked[name] = text
    return checked


def _resolve_bin_dir(bin_dir: Path | None) -> Path:
    if bin_dir is None:
        found = find_postgres_bin_dir()
        if found is None:
            raise ServiceError(
                "PostgreSQL not found: install the Debian package 'postgresql' "
                "(apt-get install postgresql) or the pgserver wheel (pip install pgserver)"
            )
        return found.path
    bin_dir = bin_dir.absolute()
    if not has_postgres_tools(bin_dir):
        raise ServiceError(f"{bin_dir} does not hold the PostgreSQL programs postgres and initdb")
    return bin_dir


def _make_layout(workdir: Path | None, account: Account | None, prefix: str) -> _Layout:
    base, owned = make_base_dir(workdir, prefix)
    layout = _Layout(base, owned)
    try:
        ensure_reachable(base, account)
        if layout.data.exists():
            raise ServiceError(
                f"{layout.data} already exists: a new server needs a fresh work directory"
            )
    except ServiceError:
        layout.discard()
        raise
    return layout


def _initdb(exec_dir: Path, layout: _Layout, account: Account | None, password: str) -> None:
    private_dir(layout.data, account)
    layout.data_created = True
    pwfile = layout.base / "superuser-password"
    try:
        descriptor = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
    except OSError as exc:
        raise ServiceError(f"cannot write {pwfile}: {exc.strerror or exc}") from exc
    try:
        give(pwfile, account)
        run_tool(
            [
                exec_dir / "initdb",
                "--pgdata",
                layout.data,
                "--username",
                USER,
                "--pwfile",
                pwfile,
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # a throwaway server: durability is not worth the seconds
            ],
            what="initdb",
            log_path=layout.setup_log,
            account=account,
            env=server_env(layout.base),
            cwd=layout.base,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _configure_cluster(data_dir: Path) -> None:
    """Our pg_hba.conf, and postgresql.conf reading the settings we rewrite at every start."""
    try:
        (data_dir / "pg_hba.conf").write_text(_PG_HBA.format(user=USER))
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Added by changeover: the settings of this throwaway server.\n")
            conf.write("include_if_exists 'changeover.conf'\n")
    except OSError as exc:
        raise ServiceError(f"cannot configure PostgreSQL in {data_dir}: {exc}") from exc


def _read_version(data_dir: Path) -> int:
    try:
        return int((data_dir / "PG_VERSION").read_text().strip().split(".")[0])
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read the PostgreSQL version in {data_dir}: {exc}") from exc


@functools.cache
def _has_pg_stat_statements(exec_dir: Path) -> bool:
    """Whether this installation ships pg_stat_statements (the wheel does not)."""
    pg_config = exec_dir / "pg_config"
    try:
        result = subprocess.run(
            [str(pg_config), "--sharedir", "--pkglibdir"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    lines = result.stdout.splitlines()
    if len(lines) < 2:
        return False
    control = Path(lines[0]) / "extension" / "pg_stat_statements.control"
    return control.is_file() and any(Path(lines[1]).glob("pg_stat_statements.*"))


def _base_settings(exec_dir: Path, version: int) -> dict[str, str]:
    """Settings for fast tests and for the probes (replication, statement statistics)."""
    settings = {
        "listen_addresses": HOST,
        "fsync": "off",
        "wal_level": "replica",
        "max_wal_senders": "5",
        "max_replication_slots": "5",
        "hot_standby": "on",
        "shared_buffers": "32MB",
        "logging_collector": "off",
        "log_destination": "stderr",
        "log_line_prefix": "%m [%p] ",
    }
    if version >= 13:
        settings["wal_keep_size"] = "128MB"  # lets a replica catch up without a slot
    if _has_pg_stat_statements(exec_dir):
        settings["shared_preload_libraries"] = "pg_stat_statements"
    return settings


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _write_conf(layout: _Layout, settings: Mapping[str, str], account: Account | None) -> None:
    path = layout.data / "changeover.conf"
    lines = ["# Written by changeover at every start of this throwaway server.\n"]
    lines += [f"{name} = {_quote(value)}\n" for name, value in settings.items()]
    try:
        path.write_text("".join(lines))
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from exc
    give(path, account)


def _launch(
    exec_dir: Path,
    layout: _Layout,
    account: Account | None,
    password: str,
    settings: Mapping[str, str],
    timeout: float,
) -> tuple[ManagedProcess, int]:
    """Start the postmaster on a free port and wait until the superuser can log in."""
    socket_dir = layout.socket_dir
    if socket_dir is not None and not socket_dir.exists():
        private_dir(socket_dir, account)
    role = "PostgreSQL replica" if (layout.data / "standby.signal").exists() else "PostgreSQL"
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = free_port()
        placement = {
            "port": str(port),
            "unix_socket_directories": str(socket_dir) if socket_dir is not None else "",
        }
        _write_conf(layout, {**settings, **placement}, account)
        process = ManagedProcess(
            [exec_dir / "postgres", "-D", layout.data],
            name=f"{role} on port {port}",
            log_path=layout.log,
            account=account,
            env=server_env(layout.base),
            cwd=layout.base,
            stop_signal=_FAST_SHUTDOWN,
            death_signal=_IMMEDIATE_SHUTDOWN,
        )
        try:
            process.wait_until(functools.partial(_accepts_login, port, password), timeout=timeout)
        except BaseException as exc:
            process.stop()
            retry = isinstance(exc, ServiceError) and attempt < _PORT_ATTEMPTS
            if retry and process.log_mentions("Address already in use"):
                continue
            raise
        return process, port
    raise AssertionError("unreachable: the last attempt returns or raises")


def _accepts_login(port: int, password: str) -> bool:
    try:
        with psycopg.connect(
            host=HOST, port=port, user=USER, password=password, dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _is_streaming(primary: PostgresServer, application_name: str) -> bool:
    """Streaming, and the replica has reported a replay position (lag is measurable).

    A fresh standby reports ``replay_lsn`` only after it replays new WAL (or after
    ``wal_receiver_status_interval``, 10 s); writing a transaction id makes it report at once.
    """
    try:
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT state, replay_lsn IS NOT NULL FROM pg_stat_replication"
                " WHERE application_name = %s",
                (application_name,),
            ).fetchone()
            if row is not None and row[0] == "streaming" and not row[1]:
                conn.execute("SELECT txid_current()")
    except (ServiceError, psycopg.Error):
        return False
    return row is not None and row[0] == "streaming" and bool(row[1])
