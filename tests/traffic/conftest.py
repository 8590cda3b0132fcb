"""Backends and a load helper shared by the router tests.

Three backend processes (``tests/support/backends.py``: each answer names its instance in the
``X-Backend`` header): ``legacy-1`` and ``legacy-2`` for the legacy app, ``new-1`` for the new
one, so a backend's share must be split unevenly across servers to come out right.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from changeover.loadgen import client as load
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
    """Send ``count`` GET requests and return (session or "", answering instance) per request."""
    answers = await load.send(url, count, sessions=sessions, path=path, concurrency=concurrency)
    return [(a.session, a.instance) for a in answers]


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
