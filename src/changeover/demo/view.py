"""What the demo shows while the cutover runs: a live terminal view, or JSON lines.

``NightView`` follows the journal (the controller's phases, actions, verdicts, rollbacks) and
is handed the router's weights, the sync lag and the load's progress; each second it redraws a
rich view — phase and weights, every gate's latest verdict with its value against the
threshold, sync lag, load — or, headless, prints each new journal event and a progress line as
JSON. It only reads: the controller does not wait for it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from changeover.journal.store import Journal
from changeover.secrets import REDACTOR

Emit = Callable[[dict[str, Any]], None]
_SHOWN = (
    "rollout.phase-started",
    "rollout.phase-passed",
    "rollout.decision-needed",
    "rollout.approved",
    "rollout.done",
    "rollback.started",
    "rollback.done",
    "action.outcome",
    "check.result",
)
_STYLE = {"pass": "green", "continue": "yellow", "fail-graceful": "red", "fail-immediate": "red"}


def emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(REDACTOR.scrub_value(data), default=str) + "\n")
    sys.stdout.flush()


class NightView:
    def __init__(self, journal: Journal, emit: Emit | None) -> None:
        self.journal = journal
        self.emit = emit
        self.seq = journal.head().seq
        self.phase: str | None = None
        self.weights: dict[str, float] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.lag: dict[str, Any] | None = None
        self.load_of: Any = None  # the LoadProcess, whose latest progress is shown
        self.events: list[str] = []

    def follow(self) -> None:
        """Fold the journal's new events in (and print them as JSON when headless)."""
        for event in self.journal.events(since_seq=self.seq):
            self.seq = event.seq
            payload = event.payload
            if event.kind == "rollout.phase-started":
                self.phase = payload.get("phase")
                self.verdicts.clear()
            if event.kind == "rollout.verdict":
                verdict = payload.get("verdict", {})
                self.verdicts[str(verdict.get("gate"))] = verdict
            if event.kind in _SHOWN:
                line = _describe(event.kind, payload)
                self.events = [*self.events[-7:], f"{event.ts[11:19]} {line}"]
                if self.emit is not None:
                    self.emit({"event": event.kind, "at": event.ts, **_brief(payload)})

    def tick(self) -> None:
        """Headless: one progress line a second."""
        if self.emit is None:
            return
        self.emit(
            {
                "event": "progress",
                "phase": self.phase,
                "weights": self.weights,
                "sync_lag": self.lag,
                "load": self._load(),
            }
        )

    def _load(self) -> dict[str, Any] | None:
        return getattr(self.load_of, "progress", None)

    def render(self) -> Group:
        head = Text.assemble(
            ("phase ", "bold"),
            (self.phase or "starting", "cyan"),
            "   weights ",
            " ".join(f"{k} {v:g}%" for k, v in self.weights.items()) or "-",
            "   sync lag ",
            _lag(self.lag),
            "   load ",
            _load(self._load()),
        )
        gates = Table(title="gates and triggers (latest verdicts)", expand=True)
        for column in ("gate", "verdict", "observed", "bound", "threshold", "why"):
            gates.add_column(column, overflow="fold")
        for name, verdict in sorted(self.verdicts.items()):
            outcome = str(verdict.get("outcome"))
            gates.add_row(
                name,
                Text(outcome, style=_STYLE.get(outcome, "")),
                _num(verdict.get("observed")),
                f"{_num((verdict.get('bound') or [None, None])[0])} – "
                f"{_num((verdict.get('bound') or [None, None])[1])}",
                _num(verdict.get("threshold")),
                str(verdict.get("reason", ""))[:90],
            )
        return Group(head, gates, Text("\n".join(self.events), style="dim"))


def _describe(kind: str, payload: dict[str, Any]) -> str:
    if kind == "action.outcome":
        what = payload.get("action")
        extra = f" {payload.get('weight'):g}%" if what == "route" else ""
        ok = "ok" if payload.get("ok") else f"FAILED: {payload.get('error')}"
        return f"{payload.get('step')}: {what}{extra} {ok}"
    if kind == "check.result":
        return f"check {payload.get('step')}: {payload.get('status')}"
    if kind.startswith("rollback"):
        return f"{kind} {payload.get('mode', '')} {payload.get('reason', '')}"[:160]
    return f"{kind} {payload.get('phase', '')}"


def _brief(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the bulky parts (window readings, full evidence)."""
    return {k: v for k, v in payload.items() if k not in ("start", "evidence", "probes")}


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _lag(lag: dict[str, Any] | None) -> str:
    if not lag:
        return "-"
    return f"{lag.get('rows', 0)} rows / {1000 * float(lag.get('seconds', 0)):.0f} ms"


def _load(progress: dict[str, Any] | None) -> str:
    if progress is None:
        return "-"
    p95 = (progress.get("latency_ms") or {}).get("p95")
    shown = "-" if p95 is None else f"{p95:.1f} ms"
    return f"{progress.get('rate', 0):.0f} req/s, p95 {shown}, errors {progress.get('errors', 0)}"


def console_for(json_output: bool, console: Console) -> Console | None:
    return None if json_output else console
