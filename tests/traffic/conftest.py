"""Backends and a load helper shared by the router tests.

Three backend processes (``tests/support/backends.py``: each answer names its instance in the
``X-Backend`` header): ``legacy-1`` and ``legacy-2`` for the legacy app, ``new-1`` for the new
one, so a backend's share must be split unevenly across servers to come out right.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import pytest

from changeover.traffic import Server
from support.backends import BackendProcess, start_backend

INSTANCES = (("legacy", "legacy-1"), ("legacy", "legacy-2"), ("new", "new-1"))


@pytest.fixture(scope="module")
def backends() -> Iterator[list[BackendProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_backend(name)) for _backend, name in INSTANCES]


@pytest.fixture(scope="module")
def servers(backends: list[BackendProcess]) -> list[Server]:
    return [
        Server(backend=backend, name=process.name, host=process.host, port=process.port)
        for (backend, _name), process in zip(INSTANCES, backends, strict=True)
    ]


async def send(
    url: str,
    count: int,
    *,
    sessions: Sequence[str] = (),
    path: str = "/",
    concurrency: int = 8,
) -> list[tuple[str, str]]:
    """Send ``count`` GET requests and return (session or "", answering instance) per request.

    Without ``sessions`` no cookie is sent; with them, request i carries the session cookie
    ``co_session=sessions[i % len(sessions)]``. A minimal keep-alive HTTP/1.1 client over
    asyncio streams (httpx's async pool managed ~250 requests/s here, too slow for the counts);
    the answers come from ``tests/support/backends.py``, which always sends Content-Length.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    results: list[tuple[str, str]] = []
    numbers = iter(range(count))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in numbers:
                session = sessions[i % len(sessions)] if sessions else ""
                cookie = f"Cookie: co_session={session}\r\n" if session else ""
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n"
                writer.write(request.encode())
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    # an idle keep-alive connection closed by a worker that was reloaded away:
                    # like any HTTP client, reconnect and send the GET again
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(request.encode())
                    raw = await reader.readuntil(b"\r\n\r\n")
                head = raw.decode("latin-1")
                status = head.split(" ", 2)[1]
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
                )
                await reader.readexactly(int(headers.get("content-length", "0")))
                results.append((session, headers.get("x-backend", f"?{status}")))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 60)
    assert len(results) == count
    return results


def share(results: list[tuple[str, str]], prefix: str = "new-") -> float:
    """Percentage of answers from instances whose name starts with ``prefix``."""
    counts = Counter(instance for _session, instance in results)
    return 100.0 * sum(n for name, n in counts.items() if name.startswith(prefix)) / len(results)


def stickiness(results: list[tuple[str, str]]) -> float:
    """Share of requests answered by their session's most frequent instance."""
    per_session: dict[str, Counter[str]] = {}
    for session, instance in results:
        per_session.setdefault(session, Counter())[instance] += 1
    kept = sum(counts.most_common(1)[0][1] for counts in per_session.values())
    return kept / len(results)
