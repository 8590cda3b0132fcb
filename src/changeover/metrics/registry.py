"""Routes the controller's metric reads to sources, each read bounded in time.

``Metrics.read`` asks the named source, or the first one that serves the metric; nothing is
ever raised to the caller: an unknown source, no source, a slow source (``timeout``, 2 s) or a
source that broke its promise and raised all come back as ``Observation.missing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from changeover.metrics._common import missing
from changeover.metrics.base import MetricSource, Observation

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class MetricRequest:
    metric: str
    of: str | None = None
    source: str | None = None  # the source's name; None: the first that serves the metric


class Metrics:
    """The sources, in order of preference; names must be unique."""

    def __init__(self, sources: Iterable[MetricSource], *, timeout: float = DEFAULT_TIMEOUT_S):
        self.sources = list(sources)
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"metric source names must be unique (got {', '.join(names)})")
        self.timeout = timeout

    def route(self, metric: str, source: str | None = None) -> MetricSource | str:
        """The source to ask, or the reason there is none."""
        if source is not None:
            for candidate in self.sources:
                if candidate.name == source:
                    if candidate.serves(metric):
                        return candidate
                    return f"source {source!r} does not serve {metric!r}"
            known = ", ".join(s.name for s in self.sources) or "none"
            return f"no metric source named {source!r} (sources: {known})"
        for candidate in self.sources:
            if candidate.serves(metric):
                return candidate
        return f"no source serves {metric!r}"

    async def read(
        self, metric: str, of: str | None = None, source: str | None = None
    ) -> Observation:
        chosen = self.route(metric, source)
        if isinstance(chosen, str):
            return missing(metric, of, chosen)
        try:
            return await asyncio.wait_for(chosen.read(metric, of), self.timeout)
        except TimeoutError:
            return missing(
                metric, of, f"source {chosen.name!r} did not answer within {self.timeout:g}s"
            )
        except Exception as exc:  # a source must not raise; if one does, the loop goes on
            log.exception("metric source %s raised reading %s", chosen.name, metric)
            return missing(metric, of, f"source {chosen.name!r} failed: {exc}")

    async def read_many(self, requests: Sequence[MetricRequest]) -> list[Observation]:
        """Every request at once, in the given order; the slowest takes at most ``timeout``."""
        return list(await asyncio.gather(*(self.read(r.metric, r.of, r.source) for r in requests)))

    async def close(self) -> None:
        for source in self.sources:
            try:
                await source.close()
            except Exception:  # closing one must not leave the others open
                log.exception("metric source %s did not close cleanly", source.name)
