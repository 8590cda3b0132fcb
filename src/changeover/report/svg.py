"""Line charts as inline SVG (pure): no JavaScript, no fonts or images to fetch, scales to any
width through its viewBox — the report stays one self-contained file that opens offline.

Phase boundaries are grey dashed verticals labelled with the phase, rollbacks red ones; a
missing value breaks its line instead of dropping to zero. Every label is redacted, then
escaped.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from changeover.report.series import Chart
from changeover.secrets import REDACTOR

WIDTH, HEIGHT = 720, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 34, 30
COLOURS = {
    "legacy": "#2563eb",
    "new": "#16a34a",
    "new app": "#16a34a",
    "p50": "#0891b2",
    "p95": "#d97706",
    "p99": "#dc2626",
}
SPARE = ("#7c3aed", "#db2777", "#4b5563")
MARK_COLOURS = {"phase": "#6b7280", "rollback": "#dc2626", "restart": "#d97706"}


def draw(chart: Chart) -> Markup:
    """One chart as an ``<svg>`` element."""
    xs = [x for s in chart.series for x, _ in s.points] + [m.x for m in chart.marks]
    ys = [y for s in chart.series for _, y in s.points if y is not None]
    x_max = max(xs, default=1.0) or 1.0
    y_max = _nice(max(ys, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + plot_w * x / x_max, 1)

    def py(y: float) -> float:
        return round(TOP + plot_h * (1 - y / y_max), 1)

    title = _text(f"{chart.title} ({chart.unit})")
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}" '
        f'data-chart="{_text(chart.key)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{title}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#d1d5db"/>',
    ]
    for tick in _ticks(y_max, _y_step(y_max)):
        y = py(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#eef0f3"/>'
            f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end" class="tick">'
            f"{_number(tick)}</text>"
        )
    for tick in _ticks(x_max, _x_step(x_max)):
        x = px(tick)
        parts.append(
            f'<text x="{x}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{_clock(tick)}</text>"
        )
    parts.append(
        f'<text x="{LEFT - 6}" y="{TOP - 8}" text-anchor="end" class="unit">{_text(chart.unit)}'
        "</text>"
    )
    label_at: list[tuple[float, float]] = []  # (x, y) of labels drawn: close ones step down
    for mark in sorted(chart.marks, key=lambda m: m.x):
        x = px(mark.x)
        y = float(TOP + 11)
        while any(abs(x - lx) < 8 * len(mark.label) and ly == y for lx, ly in label_at):
            y += 12
        label_at.append((x, y))
        colour = MARK_COLOURS.get(mark.kind, "#6b7280")
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="4 3" class="mark mark-{_text(mark.kind)}"/>'
            f'<text x="{x + 3}" y="{y}" class="mark-label" fill="{colour}">'
            f"{_text(mark.label)}</text>"
        )
    spare = iter(SPARE)
    legend_x = LEFT
    for series in chart.series:
        colour = COLOURS.get(series.name) or next(spare, "#111827")
        for run in _runs(series.points, chart.steps):
            if len(run) == 1:
                x, y = run[0]
                parts.append(f'<circle cx="{px(x)}" cy="{py(y)}" r="2.5" fill="{colour}"/>')
            else:
                points = " ".join(f"{px(x)},{py(y)}" for x, y in run)
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" '
                    'stroke-width="1.8" stroke-linejoin="round"/>'
                )
        parts.append(
            f'<rect x="{legend_x}" y="8" width="12" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="14" class="legend">{_text(series.name)}</text>'
        )
        legend_x += 24 + 8 * len(series.name)
    if not ys:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'class="empty">no numbers sampled</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _runs(
    points: list[tuple[float, float | None]], steps: bool = False
) -> list[list[tuple[float, float]]]:
    """Consecutive points with a value; a None ends a run (a gap in the line). With ``steps``
    a value holds until the next point (a horizontal then a vertical segment)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
            continue
        if steps and runs[-1] and runs[-1][-1][1] != y:
            runs[-1].append((x, runs[-1][-1][1]))
        runs[-1].append((x, y))
    return [run for run in runs if run]


def _nice(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 × 10ⁿ)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value:
            return candidate
    return 10.0 ** (exponent + 1)


def _ticks(maximum: float, step: float) -> list[float]:
    count = int(maximum / step + 1e-9)
    return [round(step * i, 9) for i in range(count + 1)]


def _y_step(maximum: float) -> float:
    """Four or five gridlines on a round maximum: 1 → 0.25, 2 → 0.5, 2.5 → 0.5, 5 → 1."""
    lead = maximum / 10 ** math.floor(math.log10(maximum))
    return maximum / {1.0: 4, 2.0: 4, 2.5: 5, 5.0: 5}.get(round(lead, 6), 4)


#: Seconds between time labels: the first that gives at most seven of them.
X_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _x_step(maximum: float) -> float:
    for step in X_STEPS:
        if maximum / step <= 7:
            return float(step)
    return maximum / 6


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _clock(seconds: float) -> str:
    """``1:05`` for 65 s; ``1:02:05`` past an hour."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _text(value: str) -> str:
    return str(escape(REDACTOR.scrub(value)))
