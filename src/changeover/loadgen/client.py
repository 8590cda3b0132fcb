"""A minimal keep-alive HTTP/1.1 client that counts which instance answered each request.

Closed model (each connection sends its next request when the previous answer arrived): for
counting traffic shares in the demo and the tests, not for measuring latency (the open-model
generator of the load-testing capability does that). httpx's async pool managed ~250
requests/s here, too slow to count 10,000 answers; this speaks just enough HTTP/1.1 over asyncio
streams, against servers that always send Content-Length, and reads the answering instance from
a header (``X-Backend``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    index: int
    session: str  # the session cookie sent ("" for none)
    instance: str  # X-Backend of the answer, or "?<status>"
    status: int
    set_session: str | None  # co_session value of a Set-Cookie, if any


async def send(
    url: str,
    count: int,
    *,
    sessions: Sequence[str] = (),
    path: str = "/",
    method: str = "GET",
    body: bytes = b"",
    concurrency: int = 8,
    timeout: float = 60,
    instance_header: str = "x-backend",
) -> list[Answer]:
    """Send ``count`` requests (request i carries ``sessions[i % len]`` as ``co_session``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results: list[Answer] = []
    numbers = iter(range(count))
    length = f"Content-Length: {len(body)}\r\n" if body or method != "GET" else ""

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in numbers:
                session = sessions[i % len(sessions)] if sessions else ""
                cookie = f"Cookie: co_session={session}\r\n" if session else ""
                target = path.replace("{i}", str(i))
                request = (
                    f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{cookie}{length}\r\n"
                ).encode() + body
                writer.write(request)
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    # an idle keep-alive connection closed by the server (a reload, a
                    # restart): like any HTTP client, reconnect and send it again
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(request)
                    raw = await reader.readuntil(b"\r\n\r\n")
                head = raw.decode("latin-1")
                status = int(head.split(" ", 2)[1])
                headers: dict[str, str] = {}
                set_session = None
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip()
                    headers[name] = value
                    if name == "set-cookie" and value.startswith("co_session="):
                        set_session = value.split("=", 1)[1].split(";", 1)[0]
                await reader.readexactly(int(headers.get("content-length", "0")))
                instance = headers.get(instance_header, f"?{status}")
                results.append(Answer(i, session, instance, status, set_session))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    assert len(results) == count
    return sorted(results, key=lambda a: a.index)
