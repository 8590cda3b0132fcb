"""One keep-alive HTTP/1.1 connection of the load generator, and the record of writes.

An asyncio Protocol that carries one request at a time (a ``Flight``) and reads its answer
with httptools (Content-Length, chunked, or delimited by the close); it reports each answer,
failure and loss to its ``Owner`` (the engine), which decides what to send next. ``Recorder``
writes --record: one JSON line per write request with its status and (truncated) answer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import IO, Any, Protocol, cast

import httptools

from changeover.errors import UsageError

BODY_LIMIT = 2048  # bytes of a response body kept for --record


class Owner(Protocol):
    """What a connection tells the engine."""

    def connected(self, conn: Connection) -> None: ...
    def answered(self, conn: Connection, flight: Flight) -> None: ...
    def failed(self, conn: Connection, flight: Flight, reason: str) -> None: ...
    def lost(self, conn: Connection) -> None: ...


class Recorder:
    """--record: one JSON line per request that may change something, with its answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[str] = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the record file {path}: {exc.strerror}") from exc

    def write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Flight:
    """One request on the wire, from its send to its answer (or failure)."""

    __slots__ = (
        "body",
        "due",
        "head",
        "keep_alive",
        "method",
        "number",
        "path",
        "record",
        "sent_at",
        "status",
        "truncated",
    )

    def __init__(
        self, number: int, due: float, sent_at: float, method: str, path: str, record: bool
    ) -> None:
        self.number, self.due, self.sent_at = number, due, sent_at
        self.method, self.path, self.record = method, path, record
        self.head = method == "HEAD"
        self.status: int | None = None
        self.keep_alive = True
        self.body = bytearray()
        self.truncated = False


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, engine: Owner) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.flight: Flight | None = None
        self.parser = httptools.HttpResponseParser(self)
        # After a HEAD answer the parser still expects the body its Content-Length announced
        # (httptools cannot be told to skip it): the next request starts a fresh parser.
        self.parser_dirty = False
        self.idle_since = 0.0  # when it last became idle (the engine's clock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.engine.connected(self)

    def send(self, flight: Flight, data: bytes) -> None:
        assert self.transport is not None
        if self.parser_dirty:
            self.parser, self.parser_dirty = httptools.HttpResponseParser(self), False
        self.flight = flight
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.flight is None:  # bytes nobody asked for: this connection cannot be trusted
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"invalid HTTP response ({exc})")

    # httptools callbacks

    def on_headers_complete(self) -> None:
        flight = self.flight
        if flight is None:
            return
        flight.status = self.parser.get_status_code()
        flight.keep_alive = bool(self.parser.should_keep_alive())
        if flight.head:
            self.parser_dirty = True
            self._complete()

    def on_body(self, body: bytes) -> None:
        flight = self.flight
        if flight is not None and flight.record and not flight.truncated:
            room = BODY_LIMIT - len(flight.body)
            flight.body += body[:room]
            flight.truncated = len(body) > room

    def on_message_complete(self) -> None:
        if self.flight is not None and self.flight.status is not None:
            if self.flight.status < 200:
                self.flight.status = None  # 1xx: the real answer follows
                return
            self._complete()

    def _complete(self) -> None:
        flight, self.flight = self.flight, None
        assert flight is not None
        self.engine.answered(self, flight)

    def fail(self, reason: str) -> None:
        flight, self.flight = self.flight, None
        if flight is not None:
            self.engine.failed(self, flight, reason)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        flight, self.flight = self.flight, None
        if flight is not None:
            if flight.status is not None and not flight.keep_alive:
                self.engine.answered(self, flight)  # a body delimited by the close: complete
            else:
                self.engine.failed(self, flight, _closed_reason(exc))
        self.engine.lost(self)


def _closed_reason(exc: BaseException | None) -> str:
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if exc is not None:
        return f"connection lost ({type(exc).__name__})"
    return "connection closed by the server before the answer"
