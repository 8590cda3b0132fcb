"""Measure new against legacy under the same load: the load generator on each, journaled.

``measure`` sends the same open-model load (rate, duration, path) to the legacy app and then to
the new app, one after the other so they never share the machine, and journals each result as
``loadtest.result``; ``stability`` reads the ratio from there. Loopback targets only, as for
``changeover loadtest``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from changeover.engine.runbook import Runbook
from changeover.errors import UsageError
from changeover.loadgen.mix import single
from changeover.loadgen.schedule import Schedule
from changeover.loadgen.target import parse_target
from changeover.loadgen.workers import run
from changeover.plan.secretref import resolve_ref
from changeover.plan.systems import AppSystem
from changeover.watch.stability import LOADTEST_RESULT


def system_url(runbook: Runbook, name: str) -> str:
    """The base URL of an app system: its own url, else its first instance's."""
    system = runbook.plan.systems.get(name)
    if not isinstance(system, AppSystem):
        raise UsageError(f"the plan has no app system {name!r} to measure")
    ref = system.url if system.url is not None else system.instances[0].url
    url = resolve_ref(ref, base=runbook.loaded.base_dir, what=f"systems.{name}.url")
    return str(url).rstrip("/")


def measure(
    runbook: Runbook,
    *,
    rate: float,
    duration: float,
    path: str = "/healthz",
    systems: tuple[str, str] = ("legacy", "new"),
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Load each system in turn at ``rate`` for ``duration`` s; journal and return the summaries."""
    if not path.startswith("/"):
        raise UsageError(f"--path starts with '/', got {path!r}")
    schedule = Schedule(rate, duration)
    summaries: dict[str, dict[str, Any]] = {}
    for name in systems:
        target = parse_target(system_url(runbook, name) + path)
        if progress:
            progress(f"loading {name} at {rate:g} req/s for {duration:g} s")
        result = run(target, schedule, single(target.path))
        summary = result.summary()
        runbook.journal.append(
            LOADTEST_RESULT,
            {
                "system": name,
                "path": path,
                "rate": rate,
                "duration_s": duration,
                "summary": summary,
            },
        )
        summaries[name] = summary
    return summaries
