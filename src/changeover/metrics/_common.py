"""What every metric source shares: the clock, a failure with a plain reason, HTTP GETs.

A source turns each foreseeable failure into ``Failed(reason)`` inside its I/O code and into
``Observation.missing`` at its ``read`` boundary; ``reason`` is scrubbed of secrets there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from changeover.metrics.base import Observation
from changeover.probes.http import describe_error, safe_url
from changeover.secrets import REDACTOR

__all__ = ["Failed", "describe_error", "get", "missing", "safe_url", "wall_clock"]


def wall_clock() -> float:
    return time.time()


class Failed(Exception):
    """A metric could not be read; ``reason`` says why in plain words (scrubbed when shown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def missing(metric: str, of: str | None, reason: str) -> Observation:
    """An unavailable observation, its reason on one line, scrubbed of every known secret."""
    return Observation.missing(metric, of, wall_clock(), " ".join(REDACTOR.scrub(reason).split()))


async def get(
    client: httpx.AsyncClient,
    what: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    accept: tuple[int, ...] = (200,),
) -> httpx.Response:
    """GET ``url``; a connection failure, timeout or a status not in ``accept`` raises
    ``Failed``."""
    shown = safe_url(url)
    try:
        response = await client.get(url, params=params, headers=headers)
    except httpx.TimeoutException as exc:
        raise Failed(f"{what} at {shown} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach {what} at {shown}: {describe_error(exc)}") from exc
    if response.status_code in (401, 403):
        raise Failed(f"{what} at {shown} refused the credentials (HTTP {response.status_code})")
    if response.status_code not in accept:
        raise Failed(f"{what} at {shown} answered HTTP {response.status_code}")
    return response
