"""Stand-in apps for the demo's traffic step: tiny keep-alive HTTP servers that say who they are.

Each answers every request with ``{"app": name}`` and an ``X-Backend`` header, reading request
bodies by Content-Length. They stand where the legacy and new apps will (the sample-apps
capability replaces them with a Python/SQLite and an async PostgreSQL + Redis app).
"""

from __future__ import annotations

import asyncio
import json

import httptools


class _StandIn(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        body = json.dumps({"app": name}).encode()
        self.answer = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"X-Backend: {name}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
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
            self.transport.write(self.answer)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def start_stand_in(name: str) -> asyncio.Server:
    """Listen on a free loopback port; ``server.sockets[0].getsockname()[1]`` is the port."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _StandIn(name), "127.0.0.1", 0)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
