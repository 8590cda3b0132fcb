"""A small, fast HTTP/1.1 backend run as a separate process, for the proxy's tests.

``start_backend("a")`` runs this file in a subprocess (asyncio + uvloop, its own hand-written
HTTP/1.1 parser, so the proxy is tested against an independent implementation) on a free
loopback port and returns a handle. Every answer names the instance (``X-Backend`` header and
``name`` in JSON). Endpoints:

    /echo (any other path too)  JSON: method, target, headers, body length, sha256 (first
                                16 MiB) and crc32 of the body, connection counters
    /slow?ms=N                  echo after N ms
    /status/NNN                 that status, short body (none for 1xx/204/304)
    /chunked?n=N                N chunks, chunked encoding
    /big?bytes=N[&chunked=1]    N bytes streamed (Content-Length, or chunked)
    /until-close?bytes=N        N bytes, no length: the body ends when the connection closes
    /head                       "head-body" with Content-Length (HEAD: the head alone)
    /204, /304                  no body
    /ws                         101 Switching Protocols, then echoes raw bytes
    /count                      JSON: requests, connections, targets seen (excluding /count)
    /reset                      the connection is reset (RST), nothing answered
    /close                      answers with Connection: close and closes
    /early                      answers 413 at once without reading the request body
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BLOCK = bytes(range(256)) * 256  # 64 KiB pattern for big bodies


SHA_LIMIT = 16 * 1024 * 1024


class _Digest:
    """sha256 of the first 16 MiB (sha256 runs at ~400 MB/s here) and crc32 of everything."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.crc = 0
        self.seen = 0

    def update(self, data: bytes) -> None:
        if self.seen < SHA_LIMIT:
            self.sha.update(data[: SHA_LIMIT - self.seen])
        self.seen += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


@dataclass
class Counters:
    requests: int = 0
    connections: int = 0
    targets: list[str] | None = None


class Backend:
    """Serves one connection after the other in a keep-alive loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = Counters(targets=[])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        conn_id = self.counters.connections
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                served += 1
                keep = await self.answer(head, reader, writer, conn_id, served)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def answer(
        self,
        raw_head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
        served: int,
    ) -> bool:
        lines = raw_head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = [tuple(line.split(":", 1)) for line in lines[1:]]
        hmap: dict[str, str] = {}
        for k, v in headers:
            hmap.setdefault(k.strip().lower(), v.strip())
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path != "/count":
            self.counters.requests += 1
            assert self.counters.targets is not None
            self.counters.targets.append(f"{method} {target}")
        keep = hmap.get("connection", "").lower() != "close" and version == "HTTP/1.1"

        if path == "/reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if path == "/early":
            self.send(writer, 413, b"too big, not reading it\n", close=True)
            return False

        length, digest, crc = await self.read_body(reader, hmap)

        if path == "/ws":
            if hmap.get("upgrade", "").lower() != "websocket":
                self.send(writer, 400, b"not an upgrade\n")
                return keep
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nX-Backend: " + self.name.encode() + b"\r\n\r\n"
            )
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            return False
        if path == "/slow":
            await asyncio.sleep(int(query.get("ms", "100")) / 1000)
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b"" if status in (204, 304) or status < 200 else b"status %d\n" % status
            self.send(writer, status, body, head_only=method == "HEAD", no_length=not body)
            return keep
        if path in ("/204", "/304"):
            self.send(writer, int(path[1:]), b"", no_length=True)
            return keep
        if path == "/head":
            self.send(writer, 200, b"head-body", head_only=method == "HEAD")
            return keep
        if path == "/close":
            self.send(writer, 200, b"closing\n", close=True)
            return False
        if path == "/count":
            payload: dict[str, object] = {
                "requests": self.counters.requests,
                "connections": self.counters.connections,
                "targets": self.counters.targets,
            }
            self.send(writer, 200, json.dumps(payload).encode(), ctype=b"application/json")
            return keep
        if path == "/chunked":
            n = int(query.get("n", "3"))
            writer.write(self.head(200, [(b"Transfer-Encoding", b"chunked")]))
            for i in range(n):
                piece = b"chunk %d\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
            return keep
        if path in ("/big", "/until-close"):
            total = int(query.get("bytes", "0"))
            chunked = query.get("chunked") == "1"
            until_close = path == "/until-close"
            extra = (
                [(b"Transfer-Encoding", b"chunked")]
                if chunked
                else []
                if until_close
                else [(b"Content-Length", str(total).encode())]
            )
            if until_close:
                extra.append((b"Connection", b"close"))
            writer.write(self.head(200, extra))
            if method != "HEAD":
                left = total
                while left > 0:
                    piece = BLOCK[: min(left, len(BLOCK))]
                    left -= len(piece)
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
            return keep and not until_close
        payload = {
            "name": self.name,
            "method": method,
            "target": target,
            "version": version,
            "headers": headers,
            "body_length": length,
            "sha256": digest,
            "crc32": crc,
            "connection": conn_id,
            "request_on_connection": served,
        }
        body = json.dumps(payload).encode()
        self.send(writer, 200, body, ctype=b"application/json", head_only=method == "HEAD")
        return keep

    async def read_body(
        self, reader: asyncio.StreamReader, hmap: dict[str, str]
    ) -> tuple[int, str, int]:
        """Read the request body: its length, sha256 (of the first 16 MiB) and crc32."""
        sha = _Digest()
        length = 0
        if hmap.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    break
                left = size
                while left:
                    data = await reader.read(min(left, 1 << 20))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    sha.update(data)
                    left -= len(data)
                length += size
                await reader.readexactly(2)
        elif "content-length" in hmap:
            left = int(hmap["content-length"])
            while left:
                data = await reader.read(min(left, 1 << 20))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                sha.update(data)
                left -= len(data)
                length += len(data)
        return length, sha.hexdigest(), sha.crc

    def head(self, status: int, extra: list[tuple[bytes, bytes]]) -> bytes:
        lines = [b"HTTP/1.1 %d X" % status, b"X-Backend: " + self.name.encode()]
        lines += [k + b": " + v for k, v in extra]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        ctype: bytes = b"text/plain",
        close: bool = False,
        head_only: bool = False,
        no_length: bool = False,
    ) -> None:
        extra = [(b"Content-Type", ctype)]
        if not no_length:
            extra.append((b"Content-Length", str(len(body)).encode()))
        if close:
            extra.append((b"Connection", b"close"))
        writer.write(self.head(status, extra) + (b"" if head_only else body))


async def _serve(name: str, port: int) -> None:
    backend = Backend(name)
    server = await asyncio.start_server(backend.handle, "127.0.0.1", port, limit=4 << 20)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


# ---- used by the tests --------------------------------------------------------------------------
@dataclass
class BackendProcess:
    """A running backend subprocess."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def get(self, path: str) -> tuple[int, bytes]:
        """A direct request to the backend (not through the proxy)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % path.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def count(self) -> dict[str, object]:
        status, body = self.get("/count")
        assert status == 200
        result: dict[str, object] = json.loads(body)
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def start_backend(name: str) -> Iterator[BackendProcess]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--name", name, "--port", "0"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"backend {name} did not start: {line!r}")
        backend = BackendProcess(name, int(line.split()[1]), proc)
        yield backend
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def free_port() -> int:
    """A loopback port nobody listens on (for 'instance is down' tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.name, args.port))
