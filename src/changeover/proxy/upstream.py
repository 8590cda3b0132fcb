"""Connections to upstream instances: a response-parsing protocol and a keep-alive pool.

``UpstreamConnection`` speaks HTTP/1.1 to one instance, parses responses with llhttp and hands
each event to the ``ResponseSink`` attached for the current exchange (the client side of the
proxy, or a capture for shadow requests). ``UpstreamPool`` keeps a bounded number of idle
connections per instance; a connection goes back only after its response was read to the end,
the request was sent completely, and neither side said ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections import deque
from enum import Enum
from typing import Protocol, cast

import httptools

from changeover.proxy.flow import FlowControl
from changeover.proxy.http import Captured, RawHeaders
from changeover.proxy.limits import Limits
from changeover.proxy.state import Instance


class ResponseBody(Enum):
    NONE = "none"  # HEAD, 1xx, 204, 304
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


class UpstreamError(Exception):
    """No usable connection to an instance; ``timeout`` distinguishes 504 from 502."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


class ResponseSink(Protocol):
    """Receives one exchange's response events from an ``UpstreamConnection``."""

    def response_head(
        self, status: int, headers: RawHeaders, body: ResponseBody, keep_alive: bool
    ) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_complete(self) -> None: ...

    def response_failed(self, error: str) -> None: ...

    def upstream_write_paused(self, paused: bool) -> None: ...

    def tunnel_data(self, data: bytes) -> None: ...

    def response_batch(self, active: bool) -> None:
        """True before the events of one upstream read, False after: the sink may coalesce
        what it writes meanwhile into one send (a response head and body in one syscall)."""
        ...


class _StopAfterHead(Exception):
    """Raised inside the parser callback to end a HEAD response at its head (llhttp would
    otherwise wait for the Content-Length it announces)."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, instance: Instance, pool: UpstreamPool | None = None) -> None:
        self.instance = instance
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.sink: ResponseSink | None = None
        self.closed = False
        self.tunnel = False
        self.responses = 0  # complete responses read on this connection
        self.idle_handle: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset_exchange(head_request=False)

    def _reset_exchange(self, *, head_request: bool) -> None:
        self._head_request = head_request
        self._headers: RawHeaders = []
        self._head_done = False
        self._status = 0
        self._body = ResponseBody.NONE
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False  # any response byte of this exchange arrived

    # ---- used by the core -------------------------------------------------------------------
    def begin(self, sink: ResponseSink, *, head_request: bool) -> None:
        """Attach the sink of a new exchange; the caller then writes the request."""
        self._reset_exchange(head_request=head_request)
        self.sink = sink
        if self.flow is not None:
            self.flow.on_write_pause = sink.upstream_write_paused

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def detach(self) -> None:
        self.sink = None
        if self.flow is not None:
            self.flow.on_write_pause = None
            self.flow.resume_reading("client")  # that client's pause ends with its exchange

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self.tunnel

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def pause_reading(self, reason: str) -> None:
        if self.flow is not None:
            self.flow.pause_reading(reason)

    def resume_reading(self, reason: str) -> None:
        if self.flow is not None:
            self.flow.resume_reading(reason)

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.flow = FlowControl(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.flow is not None:
            self.flow.release()
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if self._pool is not None:
            self._pool.forget(self)
        sink = self.sink
        if sink is None or self.complete:
            return
        if self.tunnel:
            self.complete = True
            sink.response_complete()
        elif self._head_done and self._body is ResponseBody.UNTIL_CLOSE:
            self.complete = True
            self.keep_alive = False
            sink.response_complete()
        else:
            reason = "upstream closed the connection"
            if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
                reason = "upstream reset the connection"
            sink.response_failed(reason)

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost decides what the EOF meant

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        sink = self.sink
        if self.tunnel:
            if sink is not None:
                sink.tunnel_data(data)
            return
        if sink is None or self.complete:
            # Bytes while no request is outstanding: the connection is out of step; drop it.
            self.abort()
            return
        sink.response_batch(True)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel = True
            rest = data[int(upgrade.args[0]) :]
            if rest:
                sink.tunnel_data(rest)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopAfterHead):
                raise
            # A HEAD answer ends at its head. The parser stopped mid-stream, so use a new one;
            # reuse the connection only if nothing followed the head in this read.
            self._parser = httptools.HttpResponseParser(self)
            if not data.endswith(b"\r\n\r\n"):
                self.keep_alive = False
            self._finish()
        except httptools.HttpParserError as exc:
            self.abort()
            if not self.complete:
                self.complete = True
                sink.response_failed(f"invalid response from upstream: {exc}")
        finally:
            sink.response_batch(False)

    # ---- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim answer (100 Continue, 103 Early Hints): not forwarded
        self._head_done = True
        self._status = status
        self.keep_alive = self._parser.should_keep_alive()
        body = self._body_kind(status)
        self._body = body
        assert self.sink is not None
        self.sink.response_head(status, self._headers, body, self.keep_alive)
        if self._head_request and status != 101:
            raise _StopAfterHead

    def on_body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.response_body(data)

    def on_message_complete(self) -> None:
        if self._head_done and self._status != 101:
            self._finish()

    def _finish(self) -> None:
        if self.complete:
            return
        self.complete = True
        self.responses += 1
        if self.sink is not None:
            self.sink.response_complete()

    def _body_kind(self, status: int) -> ResponseBody:
        if self._head_request or status < 200 or status in (204, 304):
            return ResponseBody.NONE
        for name, _ in self._headers:
            low = name.lower()
            if low == b"transfer-encoding":
                return ResponseBody.CHUNKED  # llhttp accepted it: chunked is the final coding
            if low == b"content-length":
                return ResponseBody.LENGTH
        return ResponseBody.UNTIL_CLOSE


class UpstreamPool:
    """Idle keep-alive connections per instance, bounded and expiring."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._limits = limits
        self._loop = loop
        self._idle: dict[str, deque[UpstreamConnection]] = {}
        self.opened = 0  # connections opened since start (tests and stats read it)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    async def acquire(
        self, instance: Instance, *, fresh: bool = False
    ) -> tuple[UpstreamConnection, bool]:
        """An idle connection to ``instance`` (reused=True) or a new one; ``UpstreamError``."""
        idle = self._idle.get(instance.key)
        while idle and not fresh:
            conn = idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            if not conn.closed:
                return conn, True
        loop = self._get_loop()
        timeout = self._limits.upstream_connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamConnection(instance, self), instance.host, instance.port
                )
        except TimeoutError as exc:
            raise UpstreamError(f"connect timed out after {timeout:g}s", timeout=True) from exc
        except ConnectionRefusedError as exc:
            raise UpstreamError("connection refused") from exc
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {exc.strerror or exc}") from exc
        self.opened += 1
        return protocol, False

    def release(self, conn: UpstreamConnection) -> None:
        """Give a connection back after an exchange: kept if reusable and there is room."""
        conn.detach()
        if not conn.reusable():
            conn.close()
            return
        idle = self._idle.setdefault(conn.instance.key, deque())
        if len(idle) >= self._limits.max_idle_per_instance:
            conn.close()
            return
        conn.idle_handle = self._get_loop().call_later(
            self._limits.upstream_idle_timeout, conn.close
        )
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.instance.key)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(conn)

    def idle_count(self, instance: Instance) -> int:
        return len(self._idle.get(instance.key, ()))

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in list(idle):
                conn.close()
        self._idle.clear()


class _Capture:
    """A sink that keeps the response (body capped) for a shadow comparison."""

    def __init__(self, cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.cap = cap
        self.status = 0
        self.headers: RawHeaders = []
        self.body = bytearray()
        self.truncated = False
        self.done: asyncio.Future[str | None] = loop.create_future()

    def response_head(
        self, status: int, headers: RawHeaders, body: ResponseBody, keep_alive: bool
    ) -> None:
        self.status, self.headers = status, list(headers)

    def response_body(self, data: bytes) -> None:
        room = self.cap - len(self.body)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            self.body += data[:room]

    def response_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def response_failed(self, error: str) -> None:
        if not self.done.done():
            self.done.set_result(error)

    def upstream_write_paused(self, paused: bool) -> None:
        pass

    def tunnel_data(self, data: bytes) -> None:
        pass

    def response_batch(self, active: bool) -> None:
        pass


def captured(status: int, headers: RawHeaders, body: bytes, truncated: bool) -> Captured:
    return Captured(
        status=status,
        headers=tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in headers),
        body=bytes(body),
        truncated=truncated,
    )


async def fetch_captured(
    pool: UpstreamPool, instance: Instance, request: bytes, *, cap: int, timeout: float
) -> Captured:
    """Send a complete bodiless request to ``instance`` and capture the answer (shadow reads).
    Raises ``UpstreamError`` on any failure, with a plain reason."""
    conn, _ = await pool.acquire(instance)
    sink = _Capture(cap, asyncio.get_running_loop())
    conn.begin(sink, head_request=request.startswith(b"HEAD "))
    conn.write(request)
    try:
        async with asyncio.timeout(timeout):
            error = await sink.done
    except TimeoutError as exc:
        conn.abort()
        raise UpstreamError(f"no complete answer within {timeout:g}s", timeout=True) from exc
    if error is not None:
        conn.abort()
        raise UpstreamError(error)
    pool.release(conn)
    return captured(sink.status, sink.headers, bytes(sink.body), sink.truncated)
