"""Run the proxy core for tests, and talk raw HTTP/1.1 to it.

``ProxyThread`` runs ``start_proxy`` on its own event loop (uvloop) in a background thread, so
synchronous tests can use plain sockets against it; its chooser takes the first listed instance
not excluded (so a retry goes to the next one) and its observer records every call. Run as a
script, this file starts the same proxy in a separate process (for RSS measurements) and prints
``PORT n``. ``Response`` and ``read_response`` parse answers off a raw socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvloop

from changeover.proxy.http import Captured, Choice, Reject, RequestHead
from changeover.proxy.limits import Limits
from changeover.proxy.server import RunningServer, start_proxy
from changeover.proxy.state import Instance


@dataclass
class RecordingObserver:
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def request_started(self, instance: Instance) -> None:
        self.events.append(("started", instance.key))

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        self.events.append(("finished", instance.key, status, bytes_in, bytes_out))

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None:
        self.events.append(("failed", instance.key, error, reached_upstream))

    def client_error(self, status: int, reason: str) -> None:
        self.events.append(("client_error", status, reason))

    def mirrored(
        self, head: RequestHead, primary: Captured, shadow: Captured | None, error: str | None
    ) -> None:
        self.events.append(("mirrored", head.target, primary, shadow, error))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


def first_not_excluded(
    instances: list[Instance], mirror: Instance | None = None
) -> Callable[[RequestHead, int, frozenset[str]], Awaitable[Choice]]:
    async def choose(head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
        for instance in instances:
            if instance.key not in exclude:
                return Choice(instance, mirror=mirror)
        raise Reject(503, "no instance left", (("Retry-After", "1"),))

    return choose


class ProxyThread:
    def __init__(
        self,
        chooser: Callable[[RequestHead, int, frozenset[str]], Awaitable[Choice]],
        limits: Limits | None = None,
    ) -> None:
        self.observer = RecordingObserver()
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: RunningServer = self.call(
            start_proxy(
                "127.0.0.1", 0, chooser=chooser, observer=self.observer, limits=limits or Limits()
            )
        )
        self.port = self.server.port

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        async def run() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close(self, grace: float = 1.0) -> None:
        self.call(self.server.close(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@contextlib.contextmanager
def running_proxy(
    instances: list[Instance], limits: Limits | None = None, mirror: Instance | None = None
) -> Iterator[ProxyThread]:
    proxy = ProxyThread(first_not_excluded(instances, mirror), limits)
    try:
        yield proxy
    finally:
        proxy.close()


# ---- a raw HTTP/1.1 client ----------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Reader:
    """Buffered reads off a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buf += data
        return bool(data)

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._more():
                raise ConnectionError(f"closed before {marker!r}; got {self.buf[:200]!r}")
        out, _, self.buf = self.buf.partition(marker)
        return out + marker

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise ConnectionError("closed early")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self) -> bytes:
        while self._more():
            pass
        out, self.buf = self.buf, b""
        return out


def read_response(reader: Reader, *, head_request: bool = False) -> Response:
    """One response (1xx interim answers are skipped)."""
    while True:
        raw = reader.until(b"\r\n\r\n").decode("latin-1")
        lines = raw[:-4].split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        if not 100 <= status < 200 or status == 101:
            break
    resp = Response(status, headers, b"")
    if head_request or status in (101, 204, 304):
        return resp
    te = resp.header("transfer-encoding")
    if te is not None and te.lower() == "chunked":
        body = b""
        while True:
            size = int(reader.until(b"\r\n")[:-2].split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")
                break
            body += reader.exactly(size)
            reader.exactly(2)
        resp.body = body
    elif resp.header("content-length") is not None:
        resp.body = reader.exactly(int(resp.header("content-length") or 0))
    else:
        resp.body = reader.rest()
    return resp


def connect(port: int, timeout: float = 10.0) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock, Reader(sock)


def request(port: int, raw: bytes, *, head_request: bool = False) -> Response:
    """Send ``raw`` on a new connection and read one answer."""
    sock, reader = connect(port)
    with sock:
        sock.sendall(raw)
        return read_response(reader, head_request=head_request)


def get(port: int, path: str, headers: str = "") -> Response:
    return request(port, f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())


async def _main(targets: list[str]) -> None:
    instances = [
        Instance("b", f"i{n}", host, int(port))
        for n, (host, _, port) in enumerate(t.rpartition(":") for t in targets)
    ]
    server = await start_proxy("127.0.0.1", 0, chooser=first_not_excluded(instances))
    print(f"PORT {server.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("targets", nargs="+", help="host:port of each instance")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main(args.targets))
