"""The client side of the proxy: one ``ClientProtocol`` per accepted connection.

Requests are parsed with llhttp (httptools), validated by ``framing``, queued in arrival order
and served one after the other (pipelined answers therefore leave in order). Each request is an
``Exchange`` (exchange.py): the chooser picks an instance, the pool gives a connection, the head
is forwarded and the body streamed with backpressure both ways (client reading pauses while the
upstream's write buffer is full, upstream reading pauses while the client's is). Retries, the
proxy's own answers (400/408/413/417/431/502/503/504) and shadow requests are decided here.
``start_proxy`` listens and returns a ``RunningServer`` with a graceful ``close``.

``Expect: 100-continue`` is answered by the proxy itself once the upstream connection is ready,
and not forwarded: an upstream that ignores Expect cannot then stall the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, cast

import httptools

from changeover.proxy.exchange import Exchange
from changeover.proxy.flow import FlowControl
from changeover.proxy.framing import BodyKind, FramingError, request_framing
from changeover.proxy.http import (
    Captured,
    Chooser,
    NullObserver,
    Observer,
    RawHeaders,
    Reject,
    RequestHead,
    new_request_id,
    request_id_from,
    simple_response,
)
from changeover.proxy.limits import Limits
from changeover.proxy.state import Instance
from changeover.proxy.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    captured,
    fetch_captured,
)

log = logging.getLogger(__name__)

CLIENT_GONE = 499  # status recorded when the client disconnected before its answer (nginx's)


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]


class Pool(Protocol):
    """What the core needs from the upstream pool (tests inject one without sockets)."""

    async def acquire(
        self, instance: Instance, *, fresh: bool = False
    ) -> tuple[UpstreamConnection, bool]: ...

    def release(self, conn: UpstreamConnection) -> None: ...

    def close(self) -> None: ...


@dataclass
class ProxyState:
    """What every connection of one proxy shares."""

    chooser: Chooser
    observer: Observer
    limits: Limits
    pool: Pool
    call_later: CallLater
    clock: Callable[[], float] = time.monotonic
    connections: set[ClientProtocol] = field(default_factory=set)
    inflight: int = 0
    closing: bool = False
    mirror_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    mirrors_dropped: int = 0


class ClientProtocol(asyncio.Protocol):
    """One client connection: parse, queue, serve in order, keep alive or close."""

    def __init__(self, state: ProxyState, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.state = state
        self.loop = loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl = None  # type: ignore[assignment]  # set in connection_made
        self.client: tuple[str, int] = ("", 0)
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self._corked: list[bytes] | None = None  # writes collected while corked
        self.queue: deque[Exchange] = deque()  # parsed, not yet answered; [0] is being served
        self.task: asyncio.Task[None] | None = None
        self.tunnel: UpstreamConnection | None = None
        self.upgrading: Exchange | None = None
        self.stop_parsing = False
        # per-request parse state
        self._parsing: Exchange | None = None
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers: RawHeaders = []
        self._parse_failure: FramingError | None = None
        self._header_timer: TimerHandle | None = None
        self._keepalive_timer: TimerHandle | None = None

    # ---- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.flow = FlowControl(transport)
        self.flow.on_write_pause = self._client_write_paused
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        self.state.connections.add(self)
        self._header_timer = self.state.call_later(
            self.state.limits.header_timeout, self._header_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self.flow.release()
        self._cancel_timers()
        for ex in self.queue:
            if ex.upstream is not None and not ex.done.done():
                ex.upstream.abort()
            if not ex.done.done():
                ex.done.set_result("client went away")
            if not ex.first_byte.done():
                ex.first_byte.set_result(None)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def eof_received(self) -> bool | None:
        # A half-closed client may still wait for answers to what it sent (e.g. `nc -q`):
        # keep the write side open while requests are queued.
        if self.tunnel is not None:
            self.tunnel.close()
            return False
        if not self.queue:
            return False
        if self._parsing is not None:
            # Closed in the middle of a request body, which can now never be complete: fail it
            # rather than leave the upstream (and a write hold waiting for it) until it times out.
            self._reject(400, "the client closed the connection before the request body ended")
            return True
        self.stop_parsing = True
        return True

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def _client_write_paused(self, paused: bool) -> None:
        upstream = self.tunnel or (self.queue[0].upstream if self.queue else None)
        if upstream is None:
            return
        if paused:
            upstream.pause_reading("client")
        else:
            upstream.resume_reading("client")

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.upgrading is not None:
            self._buffer_tunnel(self.upgrading, data)
            return
        if self.stop_parsing:
            return
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.state.limits.max_header_bytes:
                self._reject(431, "request head too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            ex = self.queue[-1] if self.queue else None
            if ex is None or not ex.upgrade:
                self._reject(400, "unexpected protocol upgrade")
                return
            self.upgrading = ex
            self.stop_parsing = True
            rest = data[int(upgrade.args[0]) :]
            if rest:
                self._buffer_tunnel(ex, rest)
        except httptools.HttpParserError as exc:
            failure, self._parse_failure = self._parse_failure, None
            if failure is not None:
                self._reject(failure.status, failure.reason)
            else:
                self._reject(400, f"malformed request: {exc}")

    # ---- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if self._header_timer is None:
            self._header_timer = self.state.call_later(
                self.state.limits.header_timeout, self._header_timeout
            )

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.state.limits.max_header_bytes:
            self._fail_parse(FramingError(431, "request head too large"))

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_head = False
        self._head_bytes = 0
        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        target = self._url.decode("latin-1")
        headers = self._headers
        try:
            framing = request_framing(
                method,
                version,
                target,
                headers,
                max_body_bytes=self.state.limits.max_body_bytes,
            )
        except FramingError as exc:
            self._fail_parse(exc)
        upgrade = parser.should_upgrade()
        if upgrade and (method != "GET" or framing.body is not BodyKind.NONE):
            self._fail_parse(FramingError(400, "protocol upgrade only on a GET without body"))
        path = framing.target.partition("?")[0]
        incoming_id = None
        for name, value in headers:
            if name.lower() == b"x-request-id":
                incoming_id = value.decode("latin-1")
                break
        head = RequestHead(
            method=method,
            target=framing.target,
            path=path,
            version=version,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
            client=self.client,
            request_id=request_id_from(incoming_id),
        )
        keep_alive = parser.should_keep_alive() and not self.state.closing
        ex = Exchange(self, head, headers, framing, keep_alive=keep_alive, upgrade=upgrade)
        self._parsing = ex
        self._enqueue(ex)

    def on_body(self, data: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        if ex.body_received + len(data) > self.state.limits.max_body_bytes:
            self._fail_parse(FramingError(413, "request body over the limit"))
        ex.feed_body(data)

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        self._in_head = True
        if ex is None:
            return
        ex.end_body()
        if not ex.keep_alive:
            self.stop_parsing = True  # anything after a closing request is not read

    def _fail_parse(self, failure: FramingError) -> NoReturn:
        """Called inside a parser callback: remember why, and stop llhttp by raising."""
        self._parse_failure = failure
        raise failure

    # ---- queueing and serving ---------------------------------------------------------------
    def _enqueue(self, ex: Exchange) -> None:
        self.queue.append(ex)
        if len(self.queue) >= self.state.limits.max_pipeline:
            self.flow.pause_reading("pipeline")
        if self.task is None:
            self._start_next()

    def _start_next(self) -> None:
        if self.queue and not self.closed:
            self.task = self.loop.create_task(self._serve(self.queue[0]))
        else:
            self.task = None

    def _reject(self, status: int, reason: str) -> None:
        """Malformed input: answer ``status`` in turn (after earlier requests) and close."""
        self.stop_parsing = True
        self.flow.pause_reading("rejected")
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        ex = self._parsing
        if ex is not None:
            self._parsing = None
            ex.fail_request(status, reason)
            if self.queue and self.queue[0] is ex and ex.response_started:
                self._close()
            return
        head = RequestHead(
            method="GET",
            target="/",
            path="/",
            version="1.1",
            headers=[],
            client=self.client,
            request_id=new_request_id(),
        )
        ex = Exchange(self, head, [], None, keep_alive=False, upgrade=False)
        ex.error = (status, reason)
        self._enqueue(ex)

    def _buffer_tunnel(self, ex: Exchange, data: bytes) -> None:
        ex.tunnel_pending += data
        if len(ex.tunnel_pending) > self.state.limits.body_buffer_bytes:
            self.flow.pause_reading("tunnel-buffer")

    def enter_tunnel(self, ex: Exchange) -> None:
        """The upstream answered 101: from now on bytes pass through unparsed both ways."""
        assert ex.upstream is not None
        self.tunnel = ex.upstream
        self.upgrading = None
        if ex.tunnel_pending:
            ex.upstream.write(bytes(ex.tunnel_pending))
            ex.tunnel_pending.clear()
        self.flow.resume_reading("tunnel-buffer")

    async def _serve(self, ex: Exchange) -> None:
        try:
            await self._run(ex)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proxy: unexpected error serving %s %s", ex.head.method, ex.head.target)
            if not ex.response_started and not self.closed:
                self._answer(ex, 502, "the proxy failed to forward the request", close=True)
            ex.close_after = True
        finally:
            if not self.closed:
                self._finished(ex)

    def _finished(self, ex: Exchange) -> None:
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if len(self.queue) < self.state.limits.max_pipeline:
            self.flow.resume_reading("pipeline")
        for reason in ("upstream", "body-buffer"):  # pauses that belonged to this exchange
            self.flow.resume_reading(reason)
        if ex.close_after or not ex.keep_alive or ex.error is not None:
            self._close()
            return
        if self.queue:
            self._start_next()
            return
        self.task = None
        if self.state.closing or (self.stop_parsing and self.upgrading is None):
            self._close()
        elif self._header_timer is None and self._keepalive_timer is None:
            self._keepalive_timer = self.state.call_later(
                self.state.limits.keepalive_timeout, self._keepalive_timeout
            )

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def cork(self) -> None:
        """Collect writes until ``uncork``: one send instead of one per piece."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        parts, self._corked = self._corked, None
        if parts and self.transport is not None and not self.closed:
            self.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def _close(self) -> None:
        self.uncork()  # what was written before the close still goes out
        self._cancel_timers()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._keepalive_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.closed:
            return
        if self._head_bytes == 0 and not self.queue:
            self._close()  # connected and said nothing: nobody to answer
        elif not self.stop_parsing:
            self._reject(408, "request head not received in time")

    def _keepalive_timeout(self) -> None:
        self._keepalive_timer = None
        if not self.queue and not self.closed:
            self._close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the queued answers."""
        self.stop_parsing = True
        if not self.queue and self.tunnel is None:
            self._close()

    def _answer(
        self,
        ex: Exchange,
        status: int,
        text: str,
        *,
        close: bool,
        headers: tuple[tuple[str, str], ...] = (),
        client_error: bool = True,
    ) -> None:
        """An answer made by the proxy itself."""
        close = close or not ex.request_complete or not ex.keep_alive or self.state.closing
        ex.status = status
        ex.response_started = True
        ex.close_after = ex.close_after or close
        self.write(
            simple_response(
                status,
                text,
                request_id=ex.head.request_id,
                close=ex.close_after,
                headers=headers,
                head_only=ex.head.method == "HEAD",
            )
        )
        if client_error:
            self.state.observer.client_error(status, text)

    # ---- one request ------------------------------------------------------------------------
    async def _run(self, ex: Exchange) -> None:
        if ex.error is not None:
            self._answer(ex, ex.error[0], ex.error[1], close=True)
            return
        state = self.state
        if state.inflight >= state.limits.max_concurrency:
            self._answer(
                ex,
                503,
                "the proxy is at its concurrency limit",
                close=False,
                headers=(("Retry-After", "1"),),
            )
            return
        state.inflight += 1
        try:
            await self._choose_and_forward(ex)
        finally:
            state.inflight -= 1

    async def _choose_and_forward(self, ex: Exchange) -> None:
        state = self.state
        attempt = 0
        exclude: set[str] = set()
        last_failure: tuple[int, str] | None = None
        while True:
            try:
                choice = await state.chooser(ex.head, attempt, frozenset(exclude))
            except Reject as reject:
                if last_failure is not None:  # nothing left to retry on: say what went wrong
                    self._answer(ex, *last_failure, close=False, client_error=False)
                    return
                self._answer(ex, reject.status, reject.reason, close=False, headers=reject.headers)
                return
            except Exception:
                log.exception("proxy: the chooser failed for %s %s", ex.head.method, ex.head.path)
                self._answer(ex, 503, "no upstream could be chosen", close=False)
                return
            try:
                if ex.error is not None:
                    self._answer(ex, ex.error[0], ex.error[1], close=True)
                    return
                ex.choice = choice
                instance = choice.instance
                try:
                    upstream, reused = await state.pool.acquire(instance)
                except UpstreamError as err:
                    state.observer.upstream_failed(instance, err.reason, False)
                    status = 504 if err.timeout else 502
                    last_failure = (status, f"upstream {instance.key}: {err.reason}")
                    if ex.retryable and attempt < state.limits.max_retries:
                        attempt += 1
                        exclude.add(instance.key)
                        continue
                    self._answer(ex, *last_failure, close=False, client_error=False)
                    return
                await self._forward(ex, upstream, instance, reused=reused)
                return
            finally:
                # Every way out of this attempt (answered, failed, retried, cancelled when the
                # client went away) ends it for the chooser.
                if choice.finished is not None:
                    choice.finished()

    async def _forward(
        self, ex: Exchange, upstream: UpstreamConnection, instance: Instance, *, reused: bool
    ) -> None:
        """Send the request on ``upstream`` and relay the answer. A reused keep-alive connection
        that dies before answering an idempotent request is replaced by a new one, once (the
        upstream may close an idle connection just as we send on it)."""
        state = self.state
        if self.closed:
            state.pool.release(upstream)
            return
        started = state.clock()
        state.observer.request_started(instance)
        status = CLIENT_GONE
        try:
            status = await self._exchange(ex, upstream, instance)
            if status == 0 and reused:
                ex.first_byte = self.loop.create_future()
                ex.done = self.loop.create_future()
                try:
                    upstream, _ = await state.pool.acquire(instance, fresh=True)
                except UpstreamError as err:
                    state.observer.upstream_failed(instance, err.reason, False)
                    status = 504 if err.timeout else 502
                    self._answer(
                        ex,
                        status,
                        f"upstream {instance.key}: {err.reason}",
                        close=False,
                        client_error=False,
                    )
                    return
                status = await self._exchange(ex, upstream, instance)
            if status == 0:
                status = 502
                error = "upstream closed the connection before answering"
                state.observer.upstream_failed(instance, error, True)
                self._answer(
                    ex, 502, f"upstream {instance.key}: {error}", close=True, client_error=False
                )
        finally:
            if self.closed and not ex.response_started:
                status = CLIENT_GONE
            seconds = state.clock() - started
            state.observer.request_finished(
                instance, status, seconds, ex.body_received, ex.bytes_out
            )

    async def _exchange(
        self, ex: Exchange, upstream: UpstreamConnection, instance: Instance
    ) -> int:
        """One try on one connection; the status the client got, or 0 when the connection
        died before any response byte of a request that may be sent again."""
        state = self.state
        if ex.error is not None:  # the body went bad while we chose and connected
            state.pool.release(upstream)  # nothing was sent on it: still clean
            self._answer(ex, ex.error[0], ex.error[1], close=True)
            return ex.error[0]
        ex.upstream = upstream
        upstream.begin(ex, head_request=ex.head.method == "HEAD")
        choice = ex.choice
        mirrored = choice is not None and choice.mirror is not None
        if mirrored and ex.head.method == "GET" and not ex.head.has_body:
            ex.capture = bytearray()
        request = ex.request_bytes()
        upstream.write(request)
        assert ex.framing is not None
        if ex.framing.expect_continue and ex.body_received == 0 and not ex.request_complete:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        ex.start_streaming(upstream)
        if self.flow.write_paused:
            upstream.pause_reading("client")
        try:
            async with asyncio.timeout(state.limits.upstream_timeout):
                await ex.first_byte
        except TimeoutError:
            upstream.abort()
            upstream.detach()
            reason = f"no answer within {state.limits.upstream_timeout:g}s"
            state.observer.upstream_failed(instance, reason, True)
            self._answer(
                ex, 504, f"upstream {instance.key}: {reason}", close=True, client_error=False
            )
            return 504
        error = await ex.done
        if error is None:
            if not ex.body_sent_complete:
                upstream.close()  # it answered before the whole body went up
            state.pool.release(upstream)
            if ex.capture is not None and ex.capture_head is not None:
                self._spawn_mirror(ex, request)
            return ex.status
        upstream.abort()
        upstream.detach()  # its connection_lost must not touch this exchange any more
        if ex.error is not None:  # the client's request went bad mid-body
            if not ex.response_started:
                self._answer(ex, ex.error[0], ex.error[1], close=True)
            ex.close_after = True
            return ex.error[0]
        if self.closed:
            return CLIENT_GONE
        if not ex.response_started:
            if ex.retryable and not upstream.got_bytes:
                return 0
            state.observer.upstream_failed(instance, error, True)
            self._answer(
                ex, 502, f"upstream {instance.key}: {error}", close=True, client_error=False
            )
            return 502
        # The answer was cut off after it started: the client can only be told by a close.
        state.observer.upstream_failed(instance, error, True)
        ex.close_after = True
        return ex.status

    # ---- shadow requests ----------------------------------------------------------------------
    def _spawn_mirror(self, ex: Exchange, request: bytes) -> None:
        state = self.state
        assert ex.choice is not None and ex.choice.mirror is not None
        assert ex.capture is not None and ex.capture_head is not None
        if len(state.mirror_tasks) >= state.limits.max_mirror_tasks:
            state.mirrors_dropped += 1
            return
        status, headers = ex.capture_head
        primary = captured(status, headers, bytes(ex.capture), ex.capture_truncated)
        task = self.loop.create_task(_mirror(state, ex.head, primary, ex.choice.mirror, request))
        state.mirror_tasks.add(task)
        task.add_done_callback(state.mirror_tasks.discard)


async def _mirror(
    state: ProxyState, head: RequestHead, primary: Captured, target: Instance, request: bytes
) -> None:
    """Send the same request to the shadow instance and report both answers; never raises."""
    pool = state.pool
    shadow: Captured | None = None
    error: str | None = None
    try:
        if not isinstance(pool, UpstreamPool):
            raise UpstreamError("shadow requests need a real upstream pool")
        shadow = await fetch_captured(
            pool,
            target,
            request,
            cap=state.limits.mirror_capture_bytes,
            timeout=state.limits.mirror_timeout,
        )
    except UpstreamError as exc:
        error = f"shadow {target.key}: {exc.reason}"
    except Exception as exc:  # a shadow must never disturb the proxy
        error = f"shadow {target.key}: {exc!r}"
    try:
        state.observer.mirrored(head, primary, shadow, error)
    except Exception:
        log.exception("proxy: observer.mirrored failed")


# ---- running server ----------------------------------------------------------------------------
class RunningServer:
    """A started proxy: its port, counters, and a graceful ``close``."""

    def __init__(self, server: asyncio.Server, state: ProxyState) -> None:
        self._server = server
        self.state = state
        sock = server.sockets[0].getsockname()
        self.host: str = sock[0]
        self.port: int = sock[1]

    @property
    def inflight(self) -> int:
        return self.state.inflight

    @property
    def connections(self) -> int:
        return len(self.state.connections)

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` seconds), close idle
        keep-alive connections at once, then abort whatever is left."""
        state = self.state
        state.closing = True
        self._server.close()
        for conn in list(state.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for task in list(state.mirror_tasks):
            task.cancel()
        state.pool.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()


async def start_proxy(
    host: str,
    port: int,
    *,
    chooser: Chooser,
    observer: Observer | None = None,
    limits: Limits | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    backlog: int = 1024,
) -> RunningServer:
    """Listen on ``host:port`` (0 = any free port) and proxy every request to the chooser's pick."""
    loop = loop or asyncio.get_running_loop()
    limits = limits or Limits()
    state = ProxyState(
        chooser=chooser,
        observer=observer or NullObserver(),
        limits=limits,
        pool=UpstreamPool(limits, loop),
        call_later=loop.call_later,
    )
    server = await loop.create_server(
        lambda: ClientProtocol(state, loop), host, port, backlog=backlog, reuse_address=True
    )
    return RunningServer(server, state)
