"""The running proxy: config, routing state, balancer, data path, health, stats and admin API.

``ProxyServer`` wires the parts together in one event loop: the HTTP core (``server.py``) asks
the ``Balancer`` where each request goes; ``ProxyStats`` and passive health observe every
attempt; active checks probe each instance's health path; the admin API (Starlette on uvicorn,
its own port) changes the routing state, which is persisted before it takes effect so that a
restarted proxy keeps its weights, write owner and drains. ``serve`` runs it until SIGTERM or
SIGINT and then drains in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from changeover.errors import ServiceError, UsageError
from changeover.proxy.admin import AdminRefused, build_admin_app
from changeover.proxy.balance import Balancer, WriteRules
from changeover.proxy.config import LoadedProxyConfig, is_loopback
from changeover.proxy.health import (
    ActiveChecker,
    HealthPolicy,
    HealthTracker,
    PassiveHealthObserver,
)
from changeover.proxy.hold import WriteHold
from changeover.proxy.http import Captured, RequestHead
from changeover.proxy.persist import StateStore
from changeover.proxy.server import RunningServer, start_proxy
from changeover.proxy.shadow import ShadowComparer, ShadowLog
from changeover.proxy.state import Instance, RoutingState
from changeover.proxy.stats import ProxyStats

log = logging.getLogger(__name__)

TOKEN_FILE = "proxy-admin-token"


class _Observers:
    """Fans the core's observer calls out to statistics and passive health."""

    def __init__(self, stats: ProxyStats, health: PassiveHealthObserver) -> None:
        self.stats = stats
        self.health = health

    def request_started(self, instance: Instance) -> None:
        self.stats.request_started(instance)
        self.health.request_started(instance)

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.stats.request_finished(instance, status, seconds, bytes_in, bytes_out)
        self.health.request_finished(instance, status, seconds, bytes_in, bytes_out)

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None:
        self.stats.upstream_failed(instance, error, reached_upstream)
        self.health.upstream_failed(instance, error, reached_upstream)

    def client_error(self, status: int, reason: str) -> None:
        self.stats.client_error(status, reason)

    def mirrored(
        self, head: RequestHead, primary: Captured, shadow: Captured | None, error: str | None
    ) -> None:
        self.stats.mirrored(head, primary, shadow, error)


async def http_health_probe(instance: Instance, path: str, timeout: float) -> bool:
    """GET the instance's health path on a fresh connection: 2xx or 3xx is healthy."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(instance.host, instance.port), timeout
    )
    try:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {instance.host}:{instance.port}\r\n"
            "User-Agent: changeover-health\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split()
        return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _AdminServer(uvicorn.Server):
    """uvicorn serving the admin API inside the proxy's loop; the proxy owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ProxyServer:
    """One proxy process's parts; ``start`` listens, ``close`` drains and stops."""

    def __init__(self, loaded: LoadedProxyConfig, *, token: str | None = None) -> None:
        config = loaded.config
        self.loaded = loaded
        self.config = config
        self.backends = config.instances()
        self.store = StateStore(loaded.state_path)
        names = {b: [i.name for i in insts] for b, insts in self.backends.items()}
        initial = self.store.load_or(config.initial_state(), names)
        self.token = token if token is not None else loaded.admin_token()
        self.tracker = HealthTracker(HealthPolicy(rise=config.health.rise, fall=config.health.fall))
        self.write_hold = WriteHold(
            max_waiters=config.hold.max_queue, max_hold=config.hold.max_hold.total_seconds()
        )
        self.balancer = Balancer(
            initial,
            self.backends,
            write_rules=WriteRules(
                methods=tuple(config.writes.methods),
                include=tuple(config.writes.include),
                exclude=tuple(config.writes.exclude),
                also=tuple(config.writes.also),
            ),
            ryw_window=config.ryw_window.total_seconds(),
            cookie_name=config.session_cookie,
            health=self.tracker,
            hold=self.write_hold,
        )
        self.shadow = ShadowLog(ShadowComparer(ignore=tuple(config.mirror.ignore_paths)))
        self.proxy_stats = ProxyStats(
            self.instances(),
            routing=lambda: self.balancer.state,
            held=lambda: self.write_hold.held_now,
            on_mirror=self.shadow.mirrored,
        )
        self.checker = ActiveChecker(
            self.tracker,
            self.instances,
            lambda instance: http_health_probe(
                instance, config.health.path, config.health.timeout.total_seconds()
            ),
            interval=config.health.interval.total_seconds(),
            timeout=config.health.timeout.total_seconds(),
        )
        self._lock = asyncio.Lock()  # one routing change at a time, saved before it applies
        self.data: RunningServer | None = None
        self._admin: _AdminServer | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self.admin_port: int | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        listen, admin = self.config.listen, self.config.admin
        # Bind the admin socket first, ourselves: a taken port is then a plain error here
        # rather than uvicorn exiting the process from inside its task.
        admin_socket = _bind(admin.host, admin.port, "admin API")
        try:
            self.data = await start_proxy(
                listen.host,
                listen.port,
                chooser=self.balancer.chooser,
                observer=_Observers(self.proxy_stats, PassiveHealthObserver(self.tracker)),
                limits=self.config.limits.to_limits(),
            )
        except OSError as exc:
            admin_socket.close()
            raise ServiceError(
                f"proxy cannot listen on {listen.host}:{listen.port}: "
                f"{exc.strerror or exc} (is another proxy running there?)"
            ) from exc
        self.checker.start()
        app = build_admin_app(self, token=self.token, open_reads=is_loopback(admin.host))
        uv_config = uvicorn.Config(
            app,
            host=admin.host,
            port=admin.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
        )
        self._admin = _AdminServer(uv_config)
        self._admin_task = asyncio.create_task(self._admin.serve(sockets=[admin_socket]))
        while not self._admin.started:
            if self._admin_task.done():
                await self._admin_task
                raise ServiceError(f"admin API could not start on {admin.host}:{admin.port}")
            await asyncio.sleep(0.01)
        self.admin_port = int(admin_socket.getsockname()[1])

    @property
    def port(self) -> int:
        assert self.data is not None, "start() first"
        return self.data.port

    async def close(self, grace: float = 10.0) -> None:
        await self.checker.stop()
        if self.data is not None:
            await self.data.close(grace)
        if self._admin is not None and self._admin_task is not None:
            self._admin.should_exit = True
            with contextlib.suppress(Exception):
                await self._admin_task

    # --- AdminController -----------------------------------------------------------------

    def state(self) -> RoutingState:
        return self.balancer.state

    def instances(self) -> Sequence[Instance]:
        return [i for insts in self.backends.values() for i in insts]

    async def _change(self, **changes: Any) -> RoutingState:
        async with self._lock:
            new = self.store.commit(self.balancer.state, **changes)
            self.balancer.state = new  # a hold ending here releases held writes to the owner
            log.info("routing state v%d: %s", new.version, new.to_json())
            return new

    async def set_weights(self, weights: dict[str, float]) -> RoutingState:
        unknown = sorted(set(weights) - set(self.backends))
        if unknown:
            raise AdminRefused(404, f"unknown backend {unknown[0]!r}", "weights")
        full = {name: float(weights.get(name, 0.0)) for name in self.backends}
        return await self._change(weights=full)

    async def set_write_owner(self, backend: str) -> RoutingState:
        if backend not in self.backends:
            raise AdminRefused(404, f"unknown backend {backend!r}", "backend")
        return await self._change(write_owner=backend)

    async def hold(self) -> RoutingState:
        return await self._change(holding=True)

    async def release(self) -> RoutingState:
        return await self._change(holding=False)

    def writes_in_flight(self) -> dict[str, int]:
        return self.balancer.writes.by_backend(self.backends)

    async def wait_writes(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no write routed earlier is still in flight."""
        started = asyncio.get_running_loop().time()
        settled = await self.balancer.writes.settle(timeout)
        waited = asyncio.get_running_loop().time() - started
        if settled:
            log.info("writes in flight: none left after %.3fs", waited)
        else:
            log.warning(
                "writes in flight: %d still running after %.3fs (%s)",
                self.balancer.writes.total,
                waited,
                ", ".join(f"{b}={n}" for b, n in self.writes_in_flight().items() if n),
            )
        return settled

    async def set_mirror_share(self, share: float) -> RoutingState:
        return await self._change(mirror_share=share)

    async def set_drained(self, instance: Instance, drained: bool) -> RoutingState:
        current = self.balancer.state.drained
        keys = current | {instance.key} if drained else current - {instance.key}
        return await self._change(drained=frozenset(keys))

    def stats(self, window_s: int | None) -> dict[str, Any]:
        data = self.proxy_stats.snapshot(window_s)
        data["hold"] = self.write_hold.stats().to_json()
        data["writes_in_flight"] = self.writes_in_flight()
        return data

    def metrics(self) -> bytes:
        return self.proxy_stats.render_prometheus()

    def shadow_report(self) -> dict[str, Any]:
        return self.shadow.to_json()

    def health(self) -> dict[str, Any]:
        return self.tracker.snapshot()


def _bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"{what} cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(is another proxy running there?)"
        ) from exc
    sock.setblocking(False)
    return sock


def ensure_token(loaded: LoadedProxyConfig) -> tuple[str, Path | None]:
    """The admin token: the configured reference, else a random one kept in a 0600 file.

    Changes always need a token; a proxy without one in its config makes one at first start and
    writes it next to its state file, where ``changeover route`` (and the operator) read it.
    """
    configured = loaded.admin_token()
    if configured:
        return configured, None
    path = loaded.state_path.parent / TOKEN_FILE
    try:
        if path.exists():
            return path.read_text(encoding="utf-8").strip(), path
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
    except OSError as exc:
        raise UsageError(f"cannot keep the admin token in {path}: {exc.strerror or exc}") from exc
    return token, path


async def serve(loaded: LoadedProxyConfig, *, ready: Any = None) -> None:
    """Run the proxy until SIGTERM/SIGINT, then drain in-flight requests and stop."""
    token, token_path = ensure_token(loaded)
    server = ProxyServer(loaded, token=token)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server, token_path)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.close()
