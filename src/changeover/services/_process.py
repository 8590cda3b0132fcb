"""Server processes that cannot outlive changeover: start, wait for, stop, and clean up after.

Every server runs in its own session, so a terminal's Ctrl-C reaches only changeover, which then
stops the servers in order. A process-wide safety net (atexit plus SIGTERM/SIGHUP handlers) stops
whatever is still registered, newest first; on Linux the kernel also signals a server whose
parent is killed outright (PR_SET_PDEATHSIG), so even ``kill -9`` leaves no stray server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import psutil

from changeover.errors import ServiceError
from changeover.secrets import REDACTOR
from changeover.services._accounts import Account

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0  # seconds a server gets to accept connections
STOP_TIMEOUT = 10.0  # seconds a server gets to shut down before it is killed
TOOL_TIMEOUT = 120.0  # seconds initdb / pg_basebackup get
LOG_TAIL_LINES = 20

# ---------------------------------------------------------------------------------------------
# The safety net: cleanups registered by live servers, run newest first at exit or on a signal.

_cleanups: dict[int, Callable[[], None]] = {}
# Re-entrant: a signal handler may run stop_all() while the main thread holds the lock.
_cleanups_lock = threading.RLock()
_tokens = itertools.count(1)
_signals_installed = False
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def register_cleanup(cleanup: Callable[[], None]) -> int:
    """Run ``cleanup`` at interpreter exit or on SIGTERM/SIGHUP unless unregistered first."""
    _install_signal_handlers()
    with _cleanups_lock:
        token = next(_tokens)
        _cleanups[token] = cleanup
    return token


def unregister_cleanup(token: int) -> None:
    with _cleanups_lock:
        _cleanups.pop(token, None)


def stop_all() -> None:
    """Stop every server still running in this process, newest first (replicas before primaries)."""
    while True:
        with _cleanups_lock:
            if not _cleanups:
                return
            token = max(_cleanups)
            cleanup = _cleanups.pop(token)
        try:
            cleanup()
        except Exception:  # one failed cleanup must not keep the others from running
            log.exception("cleanup of an embedded server failed")


atexit.register(stop_all)


def _stop_all_then_die(signum: int, frame: FrameType | None) -> None:
    stop_all()
    # Die of the same signal, as the default disposition would have, so exit status is honest.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """Take over SIGTERM/SIGHUP only where nobody else has (default disposition, main thread)."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    for signum in _HANDLED_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _stop_all_then_die)


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the PostgreSQL and Redis modules.


def free_port(maximum: int = 65535) -> int:
    """A TCP port on 127.0.0.1 that is free right now (callers retry if it is taken meanwhile),
    at most ``maximum`` (a Redis cluster node also listens on its port + 10000)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port <= maximum:
            return port
    raise OSError(f"no free loopback port at or below {maximum}")


def server_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server or tool: ours without PG* variables (they would redirect
    initdb or pg_basebackup), a HOME the server user can read, and the C locale."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update({"HOME": str(home), "LC_ALL": "C", "LANG": "C"})
    if extra:
        env.update(extra)
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, indented, with known secrets scrubbed."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"    (cannot read the log: {exc.strerror})"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    if not tail:
        return "    (the log is empty)"
    return REDACTOR.scrub("\n".join(f"    {line}" for line in tail))


def failure(message: str, *, binary: Path | str, log_path: Path) -> ServiceError:
    """A ServiceError naming what failed, the binary, the log file and the log's last lines."""
    return ServiceError(
        REDACTOR.scrub(
            f"{message}\n  binary: {binary}\n  log: {log_path}\n"
            f"  last lines of the log:\n{log_tail(log_path)}"
        )
    )


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _open_log(path: Path) -> BinaryIO:
    try:
        return path.open("ab")
    except OSError as exc:
        raise ServiceError(f"cannot write the log file {path}: {exc.strerror or exc}") from exc


def _popen_kwargs(account: Account | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    except OSError:
        return None


def _death_signal(signum: int) -> Callable[[], None] | None:
    """A preexec function asking Linux to send ``signum`` to the child if we die.

    Only from the main thread: the kernel fires it when the *thread* that started the child
    exits, which for a worker thread would kill a healthy server under a live changeover.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl()
    if prctl is None:
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)

    return set_death_signal


def run_tool(
    argv: Sequence[str | Path],
    *,
    what: str,
    log_path: Path,
    account: Account | None,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = TOOL_TIMEOUT,
) -> None:
    """Run a setup tool (initdb, pg_basebackup) to completion, its output appended to ``log_path``.

    The tool runs in its own session; if it overruns or we are interrupted, its whole process
    group is killed, so no half-finished initdb keeps running behind us.
    """
    with _open_log(log_path) as log_file:
        try:
            process = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                **_popen_kwargs(account),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError(f"could not run {argv[0]}: {_reason(exc)}") from exc
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(process)
        raise failure(
            f"{what} did not finish within {timeout:.0f} s", binary=argv[0], log_path=log_path
        ) from exc
    except BaseException:
        _kill_group(process)
        raise
    if code != 0:
        raise failure(f"{what} failed with exit code {code}", binary=argv[0], log_path=log_path)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)


# ---------------------------------------------------------------------------------------------


class ManagedProcess:
    """One long-running server process, its log, and a stop that always ends in its death."""

    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        name: str,
        log_path: Path,
        account: Account | None,
        env: Mapping[str, str],
        cwd: Path,
        stop_signal: int,
        death_signal: int,
    ) -> None:
        self.name = name
        self.binary = str(argv[0])
        self.log_path = log_path
        self._stop_signal = stop_signal
        self._lock = threading.RLock()
        with _open_log(log_path) as log_file:
            self._log_offset = log_file.tell()
            try:
                self._popen = subprocess.Popen(
                    [str(arg) for arg in argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=_death_signal(death_signal),
                    **_popen_kwargs(account),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise ServiceError(f"could not run {self.binary}: {_reason(exc)}") from exc
        self._token = register_cleanup(self.stop)
        log.debug("started %s (pid %d): %s", name, self.pid, self.binary)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running, else the exit code (negative: killed by that signal)."""
        return self._popen.poll()

    def failure(self, message: str) -> ServiceError:
        return failure(message, binary=self.binary, log_path=self.log_path)

    def log_mentions(self, text: str) -> bool:
        """Whether this run of the process (not an earlier one sharing the log) wrote ``text``."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return text.encode() in handle.read()
        except OSError:
            return False

    def wait_until(
        self, ready: Callable[[], bool], *, goal: str = "ready", timeout: float = READY_TIMEOUT
    ) -> None:
        """Poll ``ready`` until it holds; a clear ServiceError if we die or the deadline passes."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            code = self.returncode
            if code is not None:
                raise self.failure(f"{self.name} exited with code {code} before it was {goal}")
            if ready():
                return
            if time.monotonic() >= deadline:
                raise self.failure(f"{self.name} was not {goal} within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the server to stop, kill its process group if it overruns, wait for all of it."""
        with self._lock:
            unregister_cleanup(self._token)
            popen = self._popen
            if popen.poll() is not None:
                return
            try:
                children = psutil.Process(popen.pid).children(recursive=True)
            except psutil.Error:
                children = []
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(self._stop_signal)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
                _kill_group(popen)
            # Backends normally exit with their postmaster; make sure none lingers.
            _, alive = psutil.wait_procs(children, timeout=2)
            for child in alive:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs(alive, timeout=2)
