"""Stand-in apps for the controller tests: tiny keep-alive HTTP servers that say who they are,
with a fault switch, and the built-in proxy in front of a pair of them (``start_proxy``).

Each answers every request with ``{"app": name}`` and an ``X-Backend`` header, reading request
bodies by Content-Length: fast and predictable where the demo's real sample apps are not.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import httptools

from changeover.proxy.app import ProxyServer
from changeover.proxy.config import load_proxy_config


@dataclass
class Faults:
    """The stand-in's fault switch, changed while it runs: a share of 500 answers."""

    error_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))


def _answer(name: str, status: str) -> bytes:
    body = json.dumps({"app": name}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode()
        + f"X-Backend: {name}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class _StandIn(asyncio.Protocol):
    def __init__(self, name: str, faults: Faults) -> None:
        self.answer = _answer(name, "200 OK")
        self.failure = _answer(name, "500 Internal Server Error")
        self.faults = faults
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            faults = self.faults
            failing = faults.error_rate > 0 and faults.rng.random() < faults.error_rate
            self.transport.write(self.failure if failing else self.answer)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def start_stand_in(name: str, faults: Faults | None = None) -> asyncio.Server:
    """Listen on a free loopback port; ``server.sockets[0].getsockname()[1]`` is the port."""
    loop = asyncio.get_running_loop()
    switch = faults if faults is not None else Faults()
    return await loop.create_server(lambda: _StandIn(name, switch), "127.0.0.1", 0)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def start_proxy(workdir: Path, legacy_port: int, new_port: int) -> tuple[ProxyServer, str]:
    """The built-in proxy in this process in front of two loopback apps; (proxy, admin token)."""
    config = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "backends": {
            "legacy": [{"name": "legacy", "url": f"http://127.0.0.1:{legacy_port}"}],
            "new": [{"name": "new", "url": f"http://127.0.0.1:{new_port}"}],
        },
        "state_file": "proxy-state.json",
    }
    path = workdir / "proxy.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    token = secrets.token_urlsafe(24)
    proxy = ProxyServer(load_proxy_config(path), token=token)
    await proxy.start()
    return proxy, token
