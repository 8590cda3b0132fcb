"""``changeover export grafana-dashboard``: a Grafana dashboard JSON model of the plan (pure).

A row per stage with gates (a panel per gate: the value the gate watches, its threshold as a
line, and for a relative gate the level allowed by the baseline as a second series), a row of
rollback triggers and one of success criteria; then a row per backend (each ``app`` system):
requests/s, error rate, latency p50/p95/p99. A gate with no PromQL gets a text panel that says
why. Panels use the same PromQL and window as the exported alert rules, so a panel shows what
its alert evaluates. Queries go to the Prometheus chosen in the ``datasource`` variable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from changeover.export.gates import PlanGate, Skipped, Watch, threshold_wording, watch_all
from changeover.export.promql import NoPromQL, SeriesChoice, duration, series_for, value
from changeover.plan.model import Plan
from changeover.plan.systems import AppSystem
from changeover.units import format_duration

DEFAULT_WINDOW = timedelta(minutes=5)
SCHEMA_VERSION = 39  # Grafana 10.3 – 11: the classic dashboard JSON model
GRID_COLUMNS = 24
PANEL_WIDTH = 8
PANEL_HEIGHT = 8
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

_UNITS = {"MB": "decmbytes", "%": "percent", "s": "s"}
_ROLE = {
    "immediate": "Rollback trigger (immediate).",
    "graceful": "Rollback trigger (graceful).",
    "phase": "Phase gate: must hold for the phase to pass.",
    "stage": "Stage gate: must hold for the stage to pass.",
    "success": "Success criterion of the cutover.",
}


@dataclass
class DashboardExport:
    """The dashboard JSON model plus the gates shown without a query (and why)."""

    dashboard: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.dashboard, indent=2, ensure_ascii=False) + "\n"


def grafana_dashboard(
    plan: Plan, *, window: timedelta = DEFAULT_WINDOW, series: SeriesChoice = "app"
) -> DashboardExport:
    """The plan's dashboard; ``ValueError`` when ``window`` is shorter than a millisecond."""
    duration(window)
    layout = _Layout()
    skipped: list[Skipped] = []
    groups: dict[str, list[tuple[PlanGate, Watch | Skipped]]] = {}
    for at, watched in watch_all(plan, series=series, window=window):
        groups.setdefault(at.group, []).append((at, watched))
        if isinstance(watched, Skipped):
            skipped.append(watched)
    for entries in groups.values():
        layout.row(entries[0][0].group_title)
        for at, watched in entries:
            if isinstance(watched, Skipped):
                layout.panel(_not_in_prometheus(at, watched))
            else:
                layout.panel(_gate_panel(at, watched, window))
    for name, system in plan.systems.items():
        if isinstance(system, AppSystem):
            layout.row(f"Backend: {name}")
            for panel in _backend_panels(name, series, window):
                layout.panel(panel)
    return DashboardExport(_dashboard(plan, layout.panels, window), skipped)


def _dashboard(plan: Plan, panels: list[dict[str, Any]], window: timedelta) -> dict[str, Any]:
    # Grafana's search finds dashboards by title: "cutover" in it makes the default plan's own
    # check (``/api/search?query=cutover``) find this one whatever the plan is called.
    title = plan.name if "cutover" in plan.name.lower() else f"Cutover: {plan.name}"
    return {
        "id": None,
        "uid": "changeover-" + hashlib.sha256(plan.name.encode()).hexdigest()[:12],
        "title": title,
        "description": (
            f"Gates, rollback triggers and backends of the plan, written by 'changeover export "
            f"grafana-dashboard'; rates over {format_duration(window)}."
        ),
        "tags": ["changeover", "cutover"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                    "skipUrlSync": False,
                }
            ]
        },
        "panels": panels,
    }


class _Layout:
    """Panels placed left to right, ``PANEL_WIDTH`` wide, a new line when the row is full."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0
        self._line = 0  # height of the current line of panels

    def row(self, title: str) -> None:
        self._newline()
        self._add(
            {"type": "row", "title": title, "collapsed": False, "panels": []}, GRID_COLUMNS, 1
        )
        self._newline()

    def panel(self, panel: dict[str, Any]) -> None:
        if self._x + PANEL_WIDTH > GRID_COLUMNS:
            self._newline()
        self._add(panel, PANEL_WIDTH, PANEL_HEIGHT)

    def _add(self, panel: dict[str, Any], width: int, height: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += width
        self._line = max(self._line, height)

    def _newline(self) -> None:
        if self._x:
            self._y += self._line
        self._x, self._line = 0, 0


def _gate_panel(at: PlanGate, watched: Watch, window: timedelta) -> dict[str, Any]:
    legend = at.gate.of or at.gate.metric
    if watched.kind == "ratio" and watched.threshold is not None and not watched.breaks_above:
        legend += " (good share)"
    targets = [_target("A", watched.value, legend)]
    if watched.allowed is not None:
        targets.append(_target("B", watched.allowed, f"allowed ({watched.wording})"))
    return _timeseries(
        _title(at),
        f"{_ROLE[at.role]} Condition: {watched.wording}. Alert: {at.name}. "
        f"Over {format_duration(window)}.",
        targets,
        _unit(watched.kind, watched.unit),
        _steps(watched),
    )


def _not_in_prometheus(at: PlanGate, skipped: Skipped) -> dict[str, Any]:
    return {
        "type": "text",
        "title": _title(at),
        "description": f"{_ROLE[at.role]} Not in Prometheus.",
        "options": {
            "mode": "markdown",
            "content": (
                f"**Not in Prometheus:** {skipped.reason}.\n\n"
                f"`changeover run` watches `{at.gate.metric}` itself "
                f"(condition: {threshold_wording(at.gate)})."
            ),
        },
    }


def _backend_panels(name: str, series: SeriesChoice, window: timedelta) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    wanted = (
        ("requests", "Requests/s", "reqps", (None,)),
        ("error_rate", "Error rate", "percentunit", (None,)),
        ("latency", "Latency p50 / p95 / p99", "s", (0.5, 0.95, 0.99)),
    )
    for metric, title, unit, quantiles in wanted:
        try:
            read = series_for(series, metric, name)
            targets = [
                _target(
                    chr(ord("A") + i),
                    value(read, window) if q is None else value(read, window, q),
                    name if q is None else f"p{q * 100:g}",
                )
                for i, q in enumerate(quantiles)
            ]
        except NoPromQL as exc:
            panels.append(
                {
                    "type": "text",
                    "title": f"{title} — {name}",
                    "options": {"mode": "markdown", "content": f"**Not in Prometheus:** {exc}"},
                }
            )
            continue
        description = f"{title} of {name} over {format_duration(window)}."
        panels.append(_timeseries(f"{title} — {name}", description, targets, unit, None))
    return panels


def _timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    steps: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "thresholds": {
                    "mode": "absolute",
                    "steps": steps or [{"color": "green", "value": None}],
                },
                "custom": {"thresholdsStyle": {"mode": "line" if steps else "off"}},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def _target(ref: str, expr: str, legend: str) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}


def _steps(watched: Watch) -> list[dict[str, Any]] | None:
    """Threshold steps: the first is from -Infinity (``null``), the next where colour changes."""
    if watched.threshold is None:
        return None
    below, above = ("green", "red") if watched.breaks_above else ("red", "green")
    return [{"color": below, "value": None}, {"color": above, "value": watched.threshold}]


def _unit(kind: str, unit: str | None) -> str:
    if kind == "ratio":
        return "percentunit"
    if kind == "histogram":
        return "s"
    return _UNITS.get(unit or "", "short")


def _title(at: PlanGate) -> str:
    title = f"{at.step.title} ({at.step.id})"
    return f"{title} — {at.gate.metric}" if len(at.step.gates) > 1 else title
