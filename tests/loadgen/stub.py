"""A tiny HTTP/1.1 server for the load generator's tests, run as its own process.

Its own process so its timing does not share a GIL with the generator under test. Keep-alive;
one request at a time per connection. ``--stall-at N --stall-ms M``: the N-th request (counted
over all connections) is answered after M ms, once. Paths:

    POST /orders   201, JSON {"id": n, "got": <request body as text>}
    GET /chunked   200, chunked encoding, three chunks
    GET /big       200, 5,000 bytes
    GET /fail      500
    GET /close     200 with Connection: close, then the connection closes
    HEAD any       200, Content-Length: 5, no body
    GET /count     JSON {"requests": n, "posts": m, "reused": r} (not counted itself); reused:
                   requests that came on a connection which had carried one before
    anything else  200 "ok"

``run_stub(...)`` starts it on a free loopback port (``Stub.url``) and stops it on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class State:
    stall_at: int
    stall_ms: int
    requests: int = 0
    posts: int = 0
    reused: int = 0  # requests that came on a connection which had carried one before


def _response(status: int, body: bytes, *, extra: str = "", reason: str = "X") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    served = 0
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if target == "/count":
                counts = {"requests": state.requests, "posts": state.posts, "reused": state.reused}
                counts = json.dumps(counts).encode()
                writer.write(_response(200, counts))
                await writer.drain()
                continue
            state.requests += 1
            state.reused += served > 0
            served += 1
            if state.requests == state.stall_at:
                await asyncio.sleep(state.stall_ms / 1000)
            close = False
            if method == "HEAD":
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            elif method == "POST" and target.startswith("/orders"):
                state.posts += 1
                got = body.decode("utf-8", errors="replace")
                answer = _response(201, json.dumps({"id": state.posts, "got": got}).encode())
            elif target == "/chunked":
                chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b"one", b"two", b"3"))
                answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                answer += b"0\r\n\r\n"
            elif target == "/big":
                answer = _response(200, b"x" * 5000)
            elif target == "/fail":
                answer = _response(500, b"broken")
            elif target == "/close":
                answer, close = _response(200, b"bye", extra="Connection: close\r\n"), True
            else:
                answer = _response(200, b"ok")
            writer.write(answer)
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def serve(port: int, state: State) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(state, r, w), "127.0.0.1", port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stall-at", type=int, default=0)
    parser.add_argument("--stall-ms", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, State(args.stall_at, args.stall_ms)))


@dataclass
class Stub:
    url: str  # http://127.0.0.1:port
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextlib.contextmanager
def run_stub(*, stall_at: int = 0, stall_ms: int = 0) -> Iterator[Stub]:
    """The stub on a free loopback port, stopped on exit."""
    argv = [sys.executable, str(Path(__file__)), "--stall-at", str(stall_at)]
    argv += ["--stall-ms", str(stall_ms)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stub = None
    try:
        assert process.stdout is not None
        stub = Stub(f"http://127.0.0.1:{int(process.stdout.readline())}", process)
        yield stub
    finally:
        if stub is not None:
            stub.stop()
        elif process.poll() is None:
            process.kill()
            process.wait(10)


if __name__ == "__main__":
    main()
