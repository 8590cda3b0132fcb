"""One request and its answer, as the core moves it between a client and an upstream.

An ``Exchange`` holds the per-request state of ``server.ClientProtocol``: the request body on
its way up (buffered, bounded, until an upstream takes it, then passed straight on and
re-chunked when needed) and the response on its way down (it is the upstream connection's
``ResponseSink``: head rewritten, body re-framed for the client, capture for shadow reads).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from changeover.proxy.framing import BodyKind, Framing
from changeover.proxy.http import (
    IDEMPOTENT_RETRY_METHODS,
    Choice,
    RawHeaders,
    RequestHead,
    end_to_end,
    forwarded_request_headers,
    reason_phrase,
    serialize_headers,
)
from changeover.proxy.upstream import ResponseBody, UpstreamConnection

if TYPE_CHECKING:
    from changeover.proxy.server import ClientProtocol


class Exchange:
    """One request and its answer: request-body plumbing, response writing, outcome."""

    def __init__(
        self,
        conn: ClientProtocol,
        head: RequestHead,
        raw_headers: RawHeaders,
        framing: Framing | None,
        *,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.conn = conn
        self.head = head
        self.raw_headers = raw_headers
        self.framing = framing
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.error: tuple[int, str] | None = None  # answer this instead of forwarding
        loop = conn.loop
        self.first_byte: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[str | None] = loop.create_future()
        # request side
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self.body_received = 0
        self.request_complete = False
        self.upstream: UpstreamConnection | None = None
        self._streaming = False
        self.body_sent_complete = False
        self.tunnel_pending = bytearray()
        # response side
        self.status = 0
        self.response_started = False
        self.close_after = False
        self._chunked_out = False
        self._head_only = head.method == "HEAD"
        self.bytes_out = 0
        self.choice: Choice | None = None
        self.capture: bytearray | None = None
        self.capture_truncated = False
        self.capture_head: tuple[int, RawHeaders] | None = None

    @property
    def retryable(self) -> bool:
        return self.head.method in IDEMPOTENT_RETRY_METHODS and not self.head.has_body

    # ---- request body, from the client parser ----------------------------------------------
    def feed_body(self, data: bytes) -> None:
        self.body_received += len(data)
        if self._streaming:
            self._send_body(data)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > self.conn.state.limits.body_buffer_bytes:
            self.conn.flow.pause_reading("body-buffer")

    def end_body(self) -> None:
        self.request_complete = True
        if self._streaming:
            self._finish_body()

    def fail_request(self, status: int, reason: str) -> None:
        """The request turned out malformed (e.g. a bad chunk) after its head was accepted."""
        self.error = (status, reason)
        if self.upstream is not None:
            self.upstream.abort()
        if not self.done.done():
            self.done.set_result(reason)
        if not self.first_byte.done():
            self.first_byte.set_result(None)

    def start_streaming(self, upstream: UpstreamConnection) -> None:
        """The head went upstream: send what was buffered, then pass body bytes straight on."""
        self._streaming = True
        while self._pending:
            self._send_body(self._pending.popleft())
        self._pending_bytes = 0
        self.conn.flow.resume_reading("body-buffer")
        if self.request_complete:
            self._finish_body()

    def _send_body(self, data: bytes) -> None:
        assert self.upstream is not None and self.framing is not None
        if self.framing.body is BodyKind.CHUNKED:
            self.upstream.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.upstream.write(data)

    def _finish_body(self) -> None:
        assert self.upstream is not None and self.framing is not None
        if self.framing.body is BodyKind.CHUNKED:
            self.upstream.write(b"0\r\n\r\n")  # request trailers are not forwarded
        self.body_sent_complete = True

    def request_bytes(self) -> bytes:
        """The head forwarded upstream (always HTTP/1.1, origin-form)."""
        assert self.framing is not None
        head = self.head
        headers = forwarded_request_headers(
            self.raw_headers,
            client_ip=head.client[0],
            request_id=head.request_id,
            host=self.framing.host,
        )
        if self.framing.body is BodyKind.CHUNKED:
            headers.append((b"Transfer-Encoding", b"chunked"))
        if self.upgrade:
            upgrade = head.header("upgrade") or ""
            headers.append((b"Connection", b"Upgrade"))
            headers.append((b"Upgrade", upgrade.encode("latin-1")))
        line = b"%s %s HTTP/1.1\r\n" % (
            head.method.encode("ascii"),
            self.framing.target.encode("latin-1"),
        )
        return line + serialize_headers(headers) + b"\r\n"

    # ---- ResponseSink: events from the upstream connection -----------------------------------
    def response_head(
        self, status: int, headers: RawHeaders, body: ResponseBody, keep_alive: bool
    ) -> None:
        if not self.first_byte.done():
            self.first_byte.set_result(None)
        if status == 101 and not self.upgrade:
            self.response_failed("upstream switched protocols without being asked")
            if self.upstream is not None:
                self.upstream.abort()
            return
        self.status = status
        self.response_started = True
        out = end_to_end(headers)
        if self.choice is not None:
            out.extend(
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in self.choice.extra_response_headers
            )
        if status == 101:
            upgrade = next((v for n, v in headers if n.lower() == b"upgrade"), b"websocket")
            out.append((b"Connection", b"Upgrade"))
            out.append((b"Upgrade", upgrade))
            self.conn.write(
                b"HTTP/1.1 101 Switching Protocols\r\n" + serialize_headers(out) + b"\r\n"
            )
            self.close_after = True  # a tunnel ends with the connection
            self.conn.enter_tunnel(self)
            return
        if self.upgrade or not self.request_complete or not self.keep_alive:
            self.close_after = True
        if self.conn.state.closing:
            self.close_after = True
        if body is ResponseBody.CHUNKED or body is ResponseBody.UNTIL_CLOSE:
            out = [(n, v) for n, v in out if n.lower() != b"content-length"]
            if self.head.version == "1.1":
                out.append((b"Transfer-Encoding", b"chunked"))
                self._chunked_out = True
            else:
                self.close_after = True  # HTTP/1.0 client: the end of the body is the close
        if self.close_after:
            out.append((b"Connection", b"close"))
        elif self.head.version == "1.0":
            out.append((b"Connection", b"keep-alive"))
        if self.capture is not None:
            self.capture_head = (status, list(headers))
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
        self.conn.write(line + serialize_headers(out) + b"\r\n")

    def response_body(self, data: bytes) -> None:
        if self._head_only:
            return
        self.bytes_out += len(data)
        if self._chunked_out:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.conn.write(data)
        if self.capture is not None:
            room = self.conn.state.limits.mirror_capture_bytes - len(self.capture)
            if len(data) > room:
                self.capture_truncated = True
            if room > 0:
                self.capture += data[:room]
        if self.conn.flow.write_paused and self.upstream is not None:
            self.upstream.pause_reading("client")

    def response_complete(self) -> None:
        if self._chunked_out:
            self.conn.write(b"0\r\n\r\n")
        if not self.done.done():
            self.done.set_result(None)

    def response_failed(self, error: str) -> None:
        if not self.first_byte.done():
            self.first_byte.set_result(None)
        if not self.done.done():
            self.done.set_result(error)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.conn.flow.pause_reading("upstream")
        else:
            self.conn.flow.resume_reading("upstream")

    def response_batch(self, active: bool) -> None:
        if active:
            self.conn.cork()
        else:
            self.conn.uncork()

    def tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.write(data)
        if self.conn.flow.write_paused and self.upstream is not None:
            self.upstream.pause_reading("client")
