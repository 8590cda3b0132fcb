"""Drive nginx by rendering its upstream block, testing it (``nginx -t``) and reloading.

changeover owns one include file inside the ``http {}`` block (by default
``changeover-upstream.conf`` next to ``nginx.conf``). It holds the upstream the operator's
``proxy_pass http://changeover_app;`` points at, a log format and access log for per-server
counters, and optionally a small status server whose answer names the loaded config version::

    upstream changeover_app {
        hash $cookie_co_session consistent;      # sticky per session cookie
        server 127.0.0.1:8101 weight=256;        # legacy/legacy-1
        server 127.0.0.1:8102 weight=57;         # new/new-1
    }

Why ``hash … consistent`` and not ``split_clients``: nginx's consistent hash (ketama) places
160 points per unit of weight, so sessions follow the weights, a session keeps its server while
the weights are unchanged, and requests without the cookie (empty key) fall back to weighted
round robin, which is exact. nginx refuses ``weight=0``, so 0 % (and a drained server, since
nginx OSS has no drain) is rendered as ``down``: its sessions move to the other servers, while
requests in flight finish in the old workers (reload is graceful).

A change is written atomically, checked with ``nginx -t`` and applied with ``nginx -s reload``;
a rejected config is rolled back to the previous file, and the change is confirmed by reading
the file back and, with a status URL, by the new workers answering the new version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from changeover.secrets import REDACTOR
from changeover.traffic.router import (
    RESPONSE_CLASSES,
    InstanceStats,
    RouterError,
    RouterStats,
    Server,
    WeightMismatch,
    Weights,
    normalise_percent,
    server_weights,
    servers_by_backend,
    shares,
)

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_HOST = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")
_STATE_PREFIX = "# changeover-state: "
_SERVER_LINE = re.compile(r"^\s*server\s+(\S+)\s+(weight=(\d+)|down)\s*;")
LOG_FORMAT = "changeover_upstream"


@dataclass(frozen=True)
class UpstreamState:
    """What the include file encodes: version, desired shares, per-server weights, drained."""

    version: int
    percent: dict[str, float]
    weights: dict[str, int]  # server name → weight; 0 is rendered as ``down``
    drained: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "percent": self.percent,
                "weights": self.weights,
                "drained": sorted(self.drained),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> UpstreamState:
        data = json.loads(text)
        return cls(
            version=int(data["version"]),
            percent={str(k): float(v) for k, v in data["percent"].items()},
            weights={str(k): int(v) for k, v in data["weights"].items()},
            drained=frozenset(str(x) for x in data.get("drained", ())),
        )


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the state that the rendered include depends on."""

    upstream: str = "changeover_app"
    cookie: str = "co_session"
    access_log: Path | None = None
    status_listen: str | None = None  # host:port of the status server, or none
    status_path: str = "/changeover-status"


Render = Callable[[UpstreamState, Sequence[Server], RenderSettings], str]


def render_upstream(
    state: UpstreamState, servers: Sequence[Server], settings: RenderSettings
) -> str:
    """The include file for ``state`` (pure)."""
    lines = [
        "# Written by changeover: 'changeover route set' rewrites this file; do not edit it.",
        f"{_STATE_PREFIX}{state.to_json()}",
    ]
    if settings.access_log is not None:
        lines += [
            f"log_format {LOG_FORMAT} '$msec $status $upstream_addr';",
            f"access_log {settings.access_log} {LOG_FORMAT};",
        ]
    lines += [
        f"upstream {settings.upstream} {{",
        f"    hash $cookie_{settings.cookie} consistent;",
    ]
    for server in servers:
        weight = state.weights.get(server.name, 0)
        option = f"weight={weight}" if weight > 0 else "down"
        note = " drained" if server.name in state.drained else ""
        lines.append(
            f"    server {server.address} {option};  # {server.backend}/{server.name}{note}"
        )
    lines.append("}")
    if settings.status_listen is not None:
        lines += [
            "server {",
            f"    listen {settings.status_listen};",
            f"    location = {settings.status_path} {{",
            "        default_type application/json;",
            # $pid: the worker answering, so the router can tell old workers from new ones
            f"        return 200 '{state.to_json()[:-1]}, \"worker\": $pid}}\\n';",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def parse_include(text: str) -> tuple[UpstreamState | None, dict[str, int | None]]:
    """The state header and the server lines (address → weight, None for ``down``) of a file."""
    state = None
    servers: dict[str, int | None] = {}
    for line in text.splitlines():
        if line.startswith(_STATE_PREFIX):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                state = UpstreamState.from_json(line.removeprefix(_STATE_PREFIX))
            continue
        match = _SERVER_LINE.match(line)
        if match:
            servers[match.group(1)] = int(match.group(3)) if match.group(3) else None
    return state, servers


class NginxRouter:
    """A ``Router`` that renders nginx's upstream include and reloads nginx.

    ``config`` is the main ``nginx.conf`` (``nginx -t -c``); ``include`` the file changeover
    owns (default ``changeover-upstream.conf`` beside it); ``status_url`` (optional,
    ``http://127.0.0.1:9902/changeover-status``) is served by the include itself and proves the
    reload reached the workers; ``access_log`` (default ``changeover-access.log`` beside the
    include) feeds ``stats()``. ``render`` is replaceable (tests inject a broken render).

    ``stats()`` counts the access log from its start, then incrementally (nginx OSS has no
    per-server counters; a server block with its own ``access_log`` — or ``access_log off`` —
    hides its requests from it, so add ``access_log <file> changeover_upstream;`` there).
    Current sessions are unknown (None); status is DRAIN for drained servers, else UP.
    """

    def __init__(
        self,
        config: Path,
        servers: Sequence[Server],
        *,
        include: Path | None = None,
        status_url: str | None = None,
        access_log: Path | None = None,
        prefix: Path | None = None,
        nginx: str | None = None,
        upstream: str = "changeover_app",
        cookie: str = "co_session",
        timeout: float = 10.0,
        render: Render = render_upstream,
    ) -> None:
        if not servers:
            raise RouterError("an nginx router needs at least one server")
        for server in servers:
            if not (_NAME.match(server.name) and _NAME.match(server.backend)):
                raise RouterError(
                    f"server name {server.backend}/{server.name}: "
                    "only letters, digits and _.:- are allowed"
                )
            if not _HOST.match(server.host) or not 0 < server.port < 65536:
                raise RouterError(f"server {server.name} has no valid address: {server.address!r}")
        for word in (upstream, cookie):
            if not re.match(r"^[A-Za-z0-9_]+$", word):
                raise RouterError(f"nginx name {word!r} may only hold letters, digits and _")
        self.config = config
        self.include = include or config.parent / "changeover-upstream.conf"
        self.prefix = prefix
        self.timeout = timeout
        self.status_url = status_url
        self._nginx = nginx
        self._servers = list(servers)
        self._by_backend = servers_by_backend(servers)
        self._by_address = {server.address: server for server in servers}
        self._render = render
        status_listen, status_path = _status_listen(status_url) if status_url else (None, "")
        self.settings = RenderSettings(
            upstream=upstream,
            cookie=cookie,
            access_log=access_log or self.include.parent / "changeover-access.log",
            status_listen=status_listen,
            status_path=status_path or "/changeover-status",
        )
        self._log_offset = 0
        self._log_counts: dict[str, Counter[str]] = {s.name: Counter() for s in servers}
        self._lock = asyncio.Lock()

    # -- the Router protocol -------------------------------------------------------------

    async def set_weights(self, weights: Mapping[str, float]) -> Weights:
        percent = normalise_percent(weights, list(self._by_backend))
        async with self._lock:
            current = self._read_state()
            drained = current.drained if current else frozenset()
            await self._apply(percent, drained, current, redistribute=False)
            return self._observed()

    async def weights(self) -> Weights:
        return self._observed()

    async def drain(self, backend: str, instance: str) -> None:
        await self._set_drained(backend, instance, drained=True)

    async def ready(self, backend: str, instance: str) -> None:
        await self._set_drained(backend, instance, drained=False)

    async def stats(self) -> RouterStats:
        self._read_log()
        state = self._read_state()
        weights = state.weights if state else {}
        drained = state.drained if state else frozenset()
        return RouterStats(
            tuple(
                InstanceStats(
                    backend=server.backend,
                    instance=server.name,
                    status="DRAIN" if server.name in drained else "UP",
                    weight=weights.get(server.name),
                    current_sessions=None,  # nginx OSS has no per-server session gauge
                    requests=sum(self._log_counts[server.name].values()),
                    responses={k: self._log_counts[server.name][k] for k in RESPONSE_CLASSES},
                )
                for server in self._servers
            )
        )

    async def close(self) -> None:
        """Nothing to release: nginx is driven by files and short-lived commands."""

    # -- applying a state ----------------------------------------------------------------

    async def _apply(
        self,
        percent: Mapping[str, float],
        drained: frozenset[str],
        current: UpstreamState | None,
        *,
        redistribute: bool,
    ) -> None:
        in_service = {
            backend: [name for name in names if name not in drained]
            for backend, names in self._by_backend.items()
        }
        effective = dict(percent)
        if redistribute:  # after a drain: a backend left without a server gives its share away
            effective = {b: p for b, p in percent.items() if in_service[b]}
            total = sum(effective.values())
            effective = {b: p * 100.0 / total for b, p in effective.items()} if total else {}
        if not effective:
            raise RouterError("no server is left in service: nginx needs at least one")
        weights = server_weights(effective, in_service)
        for server in self._servers:
            weights.setdefault(server.name, 0)
        state = UpstreamState(
            version=(current.version if current else 0) + 1,
            percent=dict(percent),
            weights=weights,
            drained=drained,
        )
        await self._install(self._render(state, self._servers, self.settings), state)

    async def _install(self, text: str, state: UpstreamState) -> None:
        """Write, read back, ``nginx -t``, reload, confirm; any failure restores the old file."""
        previous = self.include.read_bytes() if self.include.exists() else None
        _write_atomically(self.include, text.encode())
        try:
            self._confirm_file(state)
            await self._nginx_command("-t", action="nginx -t rejected the new upstream config")
        except RouterError:
            self._restore(previous)
            raise
        try:
            old_workers = await self._workers()
            await self._nginx_command("-s", "reload", action="nginx -s reload failed")
            if self.status_url is not None:
                await self._confirm_loaded(state.version, old_workers)
        except RouterError:
            self._restore(previous)
            # nginx may have loaded the new file after all: bring it back to the restored one
            with contextlib.suppress(RouterError):
                await self._nginx_command("-s", "reload", action="reloading the previous config")
            raise

    def _restore(self, previous: bytes | None) -> None:
        if previous is None:
            self.include.unlink(missing_ok=True)
        else:
            _write_atomically(self.include, previous)

    def _confirm_file(self, state: UpstreamState) -> None:
        seen_state, seen_servers = parse_include(self.include.read_text())
        for server in self._servers:
            seen = seen_servers.get(server.address, -1)
            wanted = state.weights[server.name] or None
            if seen != wanted:
                shown = "missing" if seen == -1 else "down" if seen is None else f"weight={seen}"
                raise WeightMismatch(
                    f"nginx upstream file {self.include}: {server.name} ({server.address}) "
                    f"is {shown} after writing {'down' if wanted is None else f'weight={wanted}'}"
                )
        if seen_state is None or seen_state.version != state.version:
            raise WeightMismatch(f"nginx upstream file {self.include}: state line not as written")

    async def _status(self) -> dict[str, Any] | None:
        """The status server's answer on a fresh connection (None if it does not answer)."""
        assert self.status_url is not None
        limits = httpx.Limits(max_keepalive_connections=0)  # never ask an old worker again
        try:
            async with httpx.AsyncClient(timeout=2.0, trust_env=False, limits=limits) as client:
                answer = (await client.get(self.status_url)).json()
        except (httpx.HTTPError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    async def _workers(self) -> list[psutil.Process]:
        """nginx's worker processes now (siblings of the one answering the status URL)."""
        status = await self._status() if self.status_url is not None else None
        if status is None or not isinstance(status.get("worker"), int):
            return []
        try:
            master = psutil.Process(status["worker"]).parent()
            children = master.children() if master is not None else []
            return [child for child in children if "worker process" in " ".join(child.cmdline())]
        except psutil.Error:
            return []  # another machine's nginx, or gone: confirmation by version only

    async def _confirm_loaded(self, version: int, old_workers: list[psutil.Process]) -> None:
        """Wait until the workers answer ``version`` and the old workers stopped accepting.

        Reload is asynchronous: the master starts new workers and tells the old ones to finish
        their requests; until an old worker has closed its listening sockets (its title then
        says "shutting down") it may still take a new connection and route it the old way.
        """
        deadline = time.monotonic() + self.timeout
        seen: Any = None
        while time.monotonic() < deadline:
            status = await self._status()
            seen = status.get("version") if status else None
            if seen == version and all(_retired(worker) for worker in old_workers):
                return
            await asyncio.sleep(0.02)
        raise RouterError(
            REDACTOR.scrub(
                f"nginx did not load upstream version {version} within {self.timeout:g} s "
                f"({self.status_url} shows {seen if seen is not None else 'nothing'}); "
                f"the previous file is restored — see nginx's error log"
            )
        )

    async def _nginx_command(self, *args: str, action: str) -> None:
        argv = [self._binary(), *args, "-c", str(self.config)]
        if self.prefix is not None:
            argv += ["-p", f"{self.prefix}/"]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RouterError(f"{action}: cannot run {argv[0]} ({exc.strerror})") from exc
        try:
            async with asyncio.timeout(self.timeout):
                _out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RouterError(f"{action}: no answer within {self.timeout:g} s") from None
        if process.returncode != 0:
            raise RouterError(
                REDACTOR.scrub(f"{action}; the previous config is kept: {nginx_message(err)}")
            )

    def _binary(self) -> str:
        if self._nginx is not None:
            return self._nginx
        found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        if found is None:
            raise RouterError("nginx not found on PATH: install the Debian package 'nginx'")
        return found

    # -- drain / ready ---------------------------------------------------------------------

    async def _set_drained(self, backend: str, instance: str, *, drained: bool) -> None:
        if instance not in self._by_backend.get(backend, ()):
            raise RouterError(
                f"{backend}/{instance} is not a server of this router (known: "
                + ", ".join(f"{s.backend}/{s.name}" for s in self._servers)
                + ")"
            )
        async with self._lock:
            current = self._read_state()
            if current is None:
                raise RouterError(
                    f"nginx upstream file {self.include} was not written by changeover yet: "
                    "set the weights first"
                )
            names = set(current.drained)
            if drained:
                names.add(instance)
            else:
                names.discard(instance)
            await self._apply(current.percent, frozenset(names), current, redistribute=True)

    # -- reading back ------------------------------------------------------------------------

    def _read_state(self) -> UpstreamState | None:
        try:
            text = self.include.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RouterError(
                f"cannot read nginx upstream file {self.include}: {exc.strerror}"
            ) from exc
        return parse_include(text)[0]

    def _observed(self) -> Weights:
        try:
            _state, by_address = parse_include(self.include.read_text())
        except FileNotFoundError:
            raise RouterError(
                f"nginx upstream file {self.include} does not exist: set the weights first"
            ) from None
        weights = {server.name: by_address.get(server.address) or 0 for server in self._servers}
        return Weights(percent=shares(weights, self._by_backend), servers=weights)

    def _read_log(self) -> None:
        """Count new complete lines of the access log since the last call (rotation-safe)."""
        log = self.settings.access_log
        assert log is not None
        try:
            with open(log, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size < self._log_offset:  # rotated or truncated: start again
                    self._log_offset = 0
                file.seek(self._log_offset)
                data = file.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            counted = count_log_line(line)
            if counted is None:
                continue
            address, klass = counted
            server = self._by_address.get(address)
            if server is not None:
                self._log_counts[server.name][klass] += 1


def count_log_line(line: str) -> tuple[str, str] | None:
    """``(upstream address, "2xx")`` from one ``$msec $status $upstream_addr`` line.

    The last address counts when nginx tried several (``a, b`` or ``a : b``); lines that
    never reached an upstream (``-``) are skipped.
    """
    parts = line.split(" ", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    address = re.split(r"[,:]\s", parts[2].strip())[-1].strip()
    if address in ("", "-"):
        return None
    klass = f"{parts[1][0]}xx"
    return (address, klass) if klass in RESPONSE_CLASSES else None


def nginx_message(stderr: bytes) -> str:
    """The lines of nginx's output that say what is wrong (``[emerg]``, ``[error]``, ...)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    important = [line for line in lines if re.search(r"\[(emerg|alert|crit|error)\]", line)]
    chosen = important or lines[-2:] or ["no message"]
    return "; ".join(re.sub(r"^nginx: ", "", line) for line in chosen)


def _retired(worker: psutil.Process) -> bool:
    """An old worker no longer accepts connections once it is gone or shutting down."""
    try:
        return not worker.is_running() or "shutting down" in " ".join(worker.cmdline())
    except psutil.Error:
        return True


def _status_listen(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise RouterError(
            REDACTOR.scrub(
                f"nginx status URL {url!r}: expected http://host:port/path (served by the include)"
            )
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    path = parts.path or "/changeover-status"
    if not re.match(r"^/[A-Za-z0-9_./-]*$", path):
        raise RouterError(f"nginx status path {path!r} may only hold letters, digits and _./-")
    return f"{host}:{parts.port}", path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise RouterError(f"cannot write nginx upstream file {path}: {exc.strerror}") from exc
