"""Synthetic gates: a gate's own probes run at every look, each failed run counted as an event.

"Major features non-functional", "session continuity" and "background jobs running" are not
numbers any server keeps: they are questions asked again and again (request the feature, log in
on legacy and use the session on new, read the job heartbeat). A gate with ``check:`` gets its
observation here: cumulative runs (``total``) and failed runs (``events``) since this source
started, so the controller's windows and "none observed" verdicts apply unchanged. A look never
waits longer than ``timeout``: a check that has not answered by then is a failed run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from changeover.metrics._common import wall_clock
from changeover.metrics.base import Observation
from changeover.plan.model import ProbeCall
from changeover.probes.base import ProbeContext, load_all, run_probe
from changeover.secrets import REDACTOR

DEFAULT_TIMEOUT_S = 2.0


def checks_key(calls: Sequence[ProbeCall]) -> str:
    """A short stable name for a list of probe calls (gates with the same checks share it)."""
    text = json.dumps([[c.probe, c.params] for c in calls], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class _Tally:
    runs: int = 0
    failed: int = 0
    last_failure: str | None = None
    failures: dict[str, int] = field(default_factory=dict)  # probe name → failed runs


class ChecksSource:
    """Runs probe calls for gates; counts per set of calls (``checks_key``)."""

    name = "checks"

    def __init__(self, ctx: ProbeContext, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        load_all()  # every probe class registered, also when no plan was validated first
        self._ctx = ctx
        self._timeout = timeout
        self._tallies: dict[str, _Tally] = {}

    async def read(self, metric: str, of: str | None, calls: Sequence[ProbeCall]) -> Observation:
        """Run every call once (concurrently) and return the cumulative tally for them."""
        tally = self._tallies.setdefault(checks_key(calls), _Tally())
        results = await asyncio.gather(*(self._run(call) for call in calls))
        for call, failure in zip(calls, results, strict=True):
            tally.runs += 1
            if failure is not None:
                tally.failed += 1
                tally.last_failure = f"{call.probe}: {failure}"
                tally.failures[call.probe] = tally.failures.get(call.probe, 0) + 1
        unit = "failed check runs / runs"
        if tally.last_failure is not None:
            unit += f" (last failure: {tally.last_failure})"
        return Observation(
            metric, of, wall_clock(), events=tally.failed, total=tally.runs, unit=unit
        )

    async def _run(self, call: ProbeCall) -> str | None:
        """None when the check passed (or warned), else its reason in plain words."""
        params = call.typed
        if params.timeout > self._timeout:
            params = params.model_copy(update={"timeout": self._timeout})
        result = await run_probe(call.probe, params, self._ctx)
        if result.status.ok:
            return None
        return REDACTOR.scrub(result.reason)[:300]
