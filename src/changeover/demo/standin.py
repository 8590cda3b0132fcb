"""Stand-in apps for the demo's traffic step: tiny keep-alive HTTP servers that say who they are.

Each answers every request with ``{"app": name}`` and an ``X-Backend`` header, reading request
bodies by Content-Length. They stand where the legacy and new apps will (the sample-apps
capability replaces them with a Python/SQLite and an async PostgreSQL + Redis app).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field

import httptools


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
