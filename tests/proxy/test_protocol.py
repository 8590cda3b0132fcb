"""The client protocol driven byte by byte, without network.

The transport, the upstream pool and the timers are injected: the test plays the client (feeding
``data_received``), the upstream (feeding the ``UpstreamConnection`` its answers) and the clock
(firing timers by hand). Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from changeover.proxy.http import Choice, NullObserver, Reject, RequestHead
from changeover.proxy.limits import Limits
from changeover.proxy.server import ClientProtocol, ProxyState
from changeover.proxy.state import Instance
from changeover.proxy.upstream import UpstreamConnection

INSTANCE = Instance("legacy", "a", "127.0.0.1", 1)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeTransport:
    def __init__(self, peer: tuple[str, int] = ("10.0.0.9", 5555)) -> None:
        self.peer = peer
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class FakePool:
    """Hands out UpstreamConnections on fake transports; keeps released reusable ones."""

    def __init__(self) -> None:
        self.conns: list[UpstreamConnection] = []
        self.idle: list[UpstreamConnection] = []
        self.refuse = False

    async def acquire(
        self, instance: Instance, *, fresh: bool = False
    ) -> tuple[UpstreamConnection, bool]:
        if self.idle and not fresh:
            return self.idle.pop(), True
        conn = UpstreamConnection(instance)
        conn.connection_made(FakeTransport(("127.0.0.1", 1)))  # type: ignore[arg-type]
        self.conns.append(conn)
        return conn, False

    def release(self, conn: UpstreamConnection) -> None:
        conn.detach()
        if conn.reusable():
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        pass


class Timers:
    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None], Handle]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle()
        self.pending.append((delay, callback, handle))
        return handle

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for _, callback, handle in due:
            if not handle.cancelled:
                callback()

    def live(self) -> list[float]:
        return [delay for delay, _, handle in self.pending if not handle.cancelled]


class Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def choose_a(head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
    return Choice(INSTANCE)


class Harness:
    def __init__(
        self,
        limits: Limits | None = None,
        chooser: Callable[[RequestHead, int, frozenset[str]], Awaitable[Choice]] = choose_a,
    ) -> None:
        self.pool = FakePool()
        self.timers = Timers()
        self.state = ProxyState(
            chooser=chooser,
            observer=NullObserver(),
            limits=limits or Limits(),
            pool=self.pool,
            call_later=self.timers.call_later,
        )
        self.client, self.transport = self.connect()

    def connect(self) -> tuple[ClientProtocol, FakeTransport]:
        protocol = ClientProtocol(self.state)
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport

    def feed(self, data: bytes, *, byte_by_byte: bool = False) -> None:
        if byte_by_byte:
            for i in range(len(data)):
                self.client.data_received(data[i : i + 1])
        else:
            self.client.data_received(data)

    def upstream(self, n: int = -1) -> UpstreamConnection:
        return self.pool.conns[n]

    def sent_upstream(self, n: int = -1) -> bytes:
        transport = self.upstream(n).transport
        assert isinstance(transport, FakeTransport)
        return transport.take()


async def settle() -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_request_fed_byte_by_byte_is_forwarded_and_answered() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Thing: 1\r\n\r\n", byte_by_byte=True)
        await settle()
        sent = h.sent_upstream()
        assert sent.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Thing: 1\r\n")
        assert b"X-Forwarded-For: 10.0.0.9\r\n" in sent
        assert b"X-Forwarded-Host: example\r\n" in sent
        assert b"X-Request-Id: " in sent
        for i in range(len(OK)):
            h.upstream().data_received(OK[i : i + 1])
        await settle()
        assert h.transport.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        assert not h.transport.closed

    run(scenario)


def test_rejects_conflicting_content_length_and_transfer_encoding() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        await settle()
        out = h.transport.take()
        assert status_of(out) == 400
        assert b"Connection: close\r\n" in out
        assert h.transport.closed
        assert h.pool.conns == []

    run(scenario)


def test_head_over_the_limit_answers_431() -> None:
    async def scenario() -> None:
        h = Harness(Limits(max_header_bytes=1024))
        h.feed(b"GET / HTTP/1.1\r\nHost: a\r\n", byte_by_byte=True)
        h.feed(b"X-Big: " + b"x" * 2000 + b"\r\n\r\n", byte_by_byte=True)
        await settle()
        assert status_of(h.transport.take()) == 431
        assert h.transport.closed
        assert h.pool.conns == []

    run(scenario)


def test_chunked_body_over_the_limit_answers_413_while_streaming() -> None:
    async def scenario() -> None:
        h = Harness(Limits(max_body_bytes=10))
        h.feed(
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
        )
        await settle()
        assert h.sent_upstream().endswith(b"8\r\n12345678\r\n")  # streamed as it came
        h.feed(b"8\r\n12345678\r\n")
        await settle()
        out = h.transport.take()
        assert status_of(out) == 413
        assert h.transport.closed
        assert h.upstream().closed  # the half-sent request is not reused

    run(scenario)


def test_concurrency_limit_answers_503() -> None:
    async def scenario() -> None:
        h = Harness(Limits(max_concurrency=1))
        h.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        other, transport = h.connect()
        other.data_received(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        out = transport.take()
        assert status_of(out) == 503
        assert b"Retry-After: 1\r\n" in out
        assert not transport.closed  # the request was complete: the connection stays usable
        h.upstream().data_received(OK)
        await settle()
        other.data_received(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        assert len(h.pool.conns) == 1 and h.pool.idle == []  # /3 reused /1's connection

    run(scenario)


def test_pipelined_answers_leave_in_order_when_the_second_is_slower() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        await settle()
        assert h.sent_upstream().startswith(b"GET /1 ")
        h.upstream().data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#1")
        await settle()
        assert h.sent_upstream().startswith(b"GET /2 ")
        await settle()  # /2's upstream is slow: nothing of /3 may overtake it
        assert h.transport.take().endswith(b"#1")
        h.upstream().data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#2")
        await settle()
        h.upstream().data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#3")
        await settle()
        out = h.transport.take()
        assert out.index(b"#2") < out.index(b"#3")
        assert len(h.pool.conns) == 1  # one upstream connection, reused three times

    run(scenario)


def test_connection_close_from_the_client_closes_after_the_answer() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n")
        await settle()
        assert b"Connection" not in h.sent_upstream()
        h.upstream().data_received(OK)
        await settle()
        out = h.transport.take()
        assert b"Connection: close\r\n" in out
        assert h.transport.closed
        assert len(h.pool.conns) == 1

    run(scenario)


def test_http10_without_keep_alive_closes_and_with_keep_alive_stays() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await settle()
        assert h.sent_upstream().startswith(b"GET / HTTP/1.1\r\n")
        h.upstream().data_received(OK)
        await settle()
        assert b"Connection: keep-alive\r\n" in h.transport.take()
        assert not h.transport.closed
        h.feed(b"GET / HTTP/1.0\r\n\r\n")
        await settle()
        h.upstream().data_received(OK)
        await settle()
        assert b"Connection: close\r\n" in h.transport.take()
        assert h.transport.closed

    run(scenario)


def test_client_reading_pauses_while_the_upstream_cannot_take_more_body() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        upstream = h.upstream()
        upstream.pause_writing()
        assert not h.transport.reading
        upstream.pause_writing()  # idempotent
        h.feed(b"def")
        upstream.resume_writing()
        assert h.transport.reading
        h.feed(b"ghij")
        assert h.sent_upstream().endswith(b"\r\n\r\nabcdefghij")

    run(scenario)


def test_upstream_reading_pauses_while_the_client_cannot_take_more() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        upstream = h.upstream()
        upstream_transport = upstream.transport
        assert isinstance(upstream_transport, FakeTransport)
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        h.client.pause_writing()
        assert not upstream_transport.reading
        h.client.resume_writing()
        assert upstream_transport.reading
        upstream.data_received(b"def")
        await settle()
        assert h.transport.take().endswith(b"abcdef")

    run(scenario)


def test_body_arriving_before_the_upstream_is_ready_is_buffered_then_bounded() -> None:
    release = asyncio.Event()

    async def slow_choice(head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
        await release.wait()
        return Choice(INSTANCE)

    async def scenario() -> None:
        h = Harness(Limits(body_buffer_bytes=8), chooser=slow_choice)
        h.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nabcdef")
        await settle()
        assert h.transport.reading
        h.feed(b"ghi")
        assert not h.transport.reading  # 9 bytes held > 8: stop reading until an upstream
        release.set()
        await settle()
        assert h.transport.reading
        h.feed(b"jkl")
        assert h.sent_upstream().endswith(b"\r\n\r\nabcdefghijkl")

    run(scenario)


def test_pipeline_limit_pauses_reading() -> None:
    async def scenario() -> None:
        h = Harness(Limits(max_pipeline=2))
        h.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        assert not h.transport.reading
        h.upstream().data_received(OK)
        await settle()
        assert h.transport.reading

    run(scenario)


def test_header_timeout_answers_408_for_a_partial_head() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET / HTTP/1.1\r\nHost:")
        h.timers.fire()
        await settle()
        assert status_of(h.transport.take()) == 408
        assert h.transport.closed

    run(scenario)


def test_silent_connection_is_closed_at_the_header_timeout() -> None:
    async def scenario() -> None:
        h = Harness()
        h.timers.fire()
        await settle()
        assert h.transport.take() == b""
        assert h.transport.closed

    run(scenario)


def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    async def scenario() -> None:
        h = Harness(Limits(keepalive_timeout=7, header_timeout=3))
        h.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        h.upstream().data_received(OK)
        await settle()
        assert h.timers.live() == [7]
        assert not h.transport.closed
        h.timers.fire()
        assert h.transport.closed

    run(scenario)


def test_reject_is_answered_and_the_connection_kept() -> None:
    async def refuse(head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
        raise Reject(503, "held too long", (("Retry-After", "3"),))

    async def scenario() -> None:
        h = Harness(chooser=refuse)
        h.feed(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        out = h.transport.take()
        assert status_of(out) == 503
        assert b"Retry-After: 3\r\n" in out
        assert b"X-Request-Id: " in out
        assert b"held too long" in out
        assert not h.transport.closed

    run(scenario)


def test_stale_pooled_connection_is_replaced_for_a_get() -> None:
    async def scenario() -> None:
        h = Harness()
        h.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        h.upstream().data_received(OK)
        await settle()
        h.feed(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        stale = h.upstream()
        stale.connection_lost(None)  # the upstream closed its idle connection as we sent
        await settle()
        assert len(h.pool.conns) == 2
        assert h.sent_upstream().startswith(b"GET /2 ")
        h.upstream().data_received(OK)
        await settle()
        assert h.transport.take().count(b"200 OK") == 2

    run(scenario)
