"""The cutover report as one self-contained HTML file: inline CSS, inline SVG charts, no
JavaScript and no URL to fetch — it opens from a laptop, a phone or an archive years later.

The template (``PAGE``, kept here so it ships without a package-data entry) shows the 13
criteria first, each with its status and evidence, then the charts, phases, timeline,
decisions, rollbacks, incidents, sign-offs, notes, follow-up and the runbook in foldable
stages. Jinja2 autoescapes every value; ``finalize`` redacts each value before it is escaped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment, StrictUndefined

from changeover.report.build import Report
from changeover.report.measures import by_phase
from changeover.report.runbook import runbook_groups
from changeover.report.series import backends
from changeover.report.svg import draw
from changeover.secrets import REDACTOR


def render_html(report: Report) -> str:
    samples = report.timeline.samples
    page = _ENV.from_string(PAGE).render(
        r=report,
        counts=report.counts(),
        charts=[(c, draw(c)) for c in report.charts],
        traffic=by_phase(samples, backends(samples)) if samples else [],
        groups=runbook_groups(report.state),
        signoffs=[(state, s) for state in report.state.steps for s in state.signoffs],
    )
    return REDACTOR.scrub(page)


def _finalize(value: Any) -> Any:
    # Before autoescaping: a secret with & or < in it no longer matches once escaped.
    return REDACTOR.scrub(value) if isinstance(value, str) else value


def _hms(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value is not None else "—"


_ENV = Environment(autoescape=True, undefined=StrictUndefined, finalize=_finalize)
_ENV.filters["hms"] = _hms

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cutover report — {{ r.plan.name }}</title>
<style>
:root { --pass: #15803d; --fail: #b91c1c; --unknown: #92400e; --line: #e5e7eb; --muted: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #111827; background: #f9fafb; }
main { max-width: 1100px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 28px 0 10px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 1rem; margin: 14px 0 6px; }
.meta { color: var(--muted); font-size: .9rem; margin: 2px 0; overflow-wrap: anywhere; }
.outcome { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600;
           background: #e5e7eb; }
.outcome.completed { background: #dcfce7; color: var(--pass); }
.outcome.rolled-back { background: #fee2e2; color: var(--fail); }
.tampered { background: #fee2e2; color: var(--fail); padding: 8px 12px; border-radius: 6px;
            font-weight: 600; }
.summary span { margin-right: 12px; font-weight: 600; }
.criteria { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
            gap: 10px; padding: 0; list-style: none; margin: 0; }
.criterion { background: #fff; border: 1px solid var(--line); border-left-width: 6px;
             border-radius: 6px; padding: 10px 12px; }
.criterion[data-status="PASS"] { border-left-color: var(--pass); }
.criterion[data-status="FAIL"] { border-left-color: var(--fail); }
.criterion[data-status="UNKNOWN"] { border-left-color: #d97706; }
.criterion header { display: flex; justify-content: space-between; gap: 8px;
                    align-items: baseline; }
.criterion .title { font-weight: 600; }
.status { font-size: .8rem; font-weight: 700; padding: 1px 8px; border-radius: 10px;
          white-space: nowrap; }
.status.PASS { background: #dcfce7; color: var(--pass); }
.status.FAIL { background: #fee2e2; color: var(--fail); }
.status.UNKNOWN { background: #fef3c7; color: var(--unknown); }
.evidence { margin: 6px 0 0; padding-left: 18px; font-size: .9rem; overflow-wrap: anywhere; }
.target { color: var(--muted); font-size: .85rem; margin-top: 6px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 480px), 1fr));
          gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px;
         padding: 8px; }
figcaption { font-weight: 600; font-size: .9rem; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg .tick, svg .unit { font-size: 12px; fill: #4b5563; }
svg .legend { font-size: 13px; fill: #111827; }
svg .mark-label { font-size: 11px; }
svg .empty { font-size: 13px; fill: var(--muted); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .9rem; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
ol.timeline { list-style: none; padding: 0; margin: 0; font-size: .9rem; }
ol.timeline li { padding: 3px 0; border-bottom: 1px dotted var(--line);
                 overflow-wrap: anywhere; }
ol.timeline time { color: var(--muted); font-variant-numeric: tabular-nums;
                   margin-right: 8px; }
li.bad { color: var(--fail); }
li.warn { color: var(--unknown); }
details { background: #fff; border: 1px solid var(--line); border-radius: 6px;
          margin: 6px 0; padding: 4px 10px; }
summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
ul.items { padding-left: 18px; font-size: .9rem; overflow-wrap: anywhere; }
ul.items li { margin: 3px 0; }
.muted { color: var(--muted); }
code { font-size: .85em; background: #f3f4f6; padding: 0 3px; border-radius: 3px;
       overflow-wrap: anywhere; }
@media (max-width: 600px) { main { padding: 10px; } body { font-size: 14px; } }
</style>
</head>
<body>
<main>
<h1>Cutover report — {{ r.plan.name }}</h1>
<p class="meta"><span class="outcome {{ r.outcome | replace(' ', '-') }}">{{ r.outcome }}</span>
 cutover at {{ r.plan.cutover_at.isoformat() }} · report made
 {{ r.made_at.isoformat(timespec="seconds") }}</p>
<p class="meta">Journal {{ r.journal.location }} — {{ r.journal.events }} events, head
 <code>{{ r.journal.head_hash }}</code>{% if r.journal.ok %} · hash chain verified{% endif %}</p>
{% if not r.journal.ok %}<p class="tampered">HASH CHAIN BROKEN — this journal was tampered
 with: {{ r.journal.problem }}</p>{% endif %}

<h2 id="criteria">Success criteria</h2>
<p class="summary"><span style="color: var(--pass)">{{ counts.PASS }} pass</span>
<span style="color: var(--fail)">{{ counts.FAIL }} fail</span>
<span style="color: var(--unknown)">{{ counts.UNKNOWN }} unknown</span>
<span class="muted">(no evidence is not a pass)</span></p>
<ol class="criteria">
{% for c in r.criteria %}
<li class="criterion" data-status="{{ c.status.value }}" data-number="{{ c.number }}">
<header><span class="title">{{ c.number }}. {{ c.title }}</span>
<span class="status {{ c.status.value }}">{{ c.status.value }}</span></header>
<ul class="evidence">{% for line in c.evidence %}<li>{{ line }}</li>{% endfor %}</ul>
{% if c.target %}<div class="target">To pass: {{ c.target }}</div>{% endif %}
</li>
{% endfor %}
</ol>

<h2 id="charts">Traffic over time</h2>
{% if charts %}
<p class="meta">Time since the first phase started (m:ss); dashed lines mark phases (grey) and
 rollbacks (red).</p>
<div class="charts">
{% for chart, svg in charts %}<figure><figcaption>{{ chart.title }}</figcaption>{{ svg }}</figure>
{% endfor %}
</div>
{% else %}
<p class="muted">No rollout samples in the journal: nothing to chart.</p>
{% endif %}

<h2 id="phases">Phases</h2>
{% if r.timeline.phases %}
<div class="scroll"><table>
<tr><th>Phase</th><th>Weight</th><th>Attempt</th><th>Started</th><th>Ended</th><th>Outcome</th>
<th>Watched</th><th>Approved by</th></tr>
{% for p in r.timeline.phases %}
<tr><td>{{ p.phase }}</td>
<td class="num">{{ "%g%%" | format(p.weight) if p.weight is not none else "—" }}</td>
<td class="num">{{ p.attempt }}</td><td>{{ p.started_at | hms }}</td>
<td>{{ p.ended_at | hms }}</td><td>{{ p.outcome }}</td>
<td class="num">{{ "%.0f s" | format(p.observed_s) if p.observed_s is not none else "—" }}</td>
<td>{{ p.approved_by or "—" }}</td></tr>
{% endfor %}
</table></div>
{% else %}<p class="muted">No traffic phase started.</p>{% endif %}
{% if traffic %}
<h3>Traffic by phase</h3>
<div class="scroll"><table>
<tr><th>Phase</th><th>Backend</th><th>Requests</th><th>Errors</th><th>Error rate</th>
<th>p95 (per-sample, weighted)</th><th>Worst p95</th></tr>
{% for row in traffic %}
<tr><td>{{ row.phase }}</td><td>{{ row.backend }}</td>
<td class="num">{{ "{:,}".format(row.traffic.requests) }}</td>
<td class="num">{{ "{:,}".format(row.traffic.errors) }}</td>
<td class="num">{{ "%.3g%%" | format(row.traffic.error_rate * 100)
   if row.traffic.error_rate is not none else "—" }}</td>
<td class="num">{{ "%.1f ms" | format(row.latency.typical_ms) if row.latency else "—" }}</td>
<td class="num">{{ "%.1f ms" | format(row.latency.worst_ms) if row.latency else "—" }}</td></tr>
{% endfor %}
</table></div>
{% endif %}

<h2 id="rollbacks">Rollbacks</h2>
{% if r.timeline.rollbacks %}<ol class="timeline">
{% for b in r.timeline.rollbacks %}
<li class="bad"><time>{{ b.started_at | hms }}</time>{{ b.mode }} rollback in {{ b.phase or "—" }}
{% if b.requested_by %}, asked for by {{ b.requested_by }}{% endif %}: {{ b.reason }} — traffic
 back on legacy in {{ "%g s" | format(b.seconds) if b.seconds is not none else "(not finished)" }};
 writes: {{ b.writes or "—" }}</li>
{% endfor %}</ol>
{% else %}<p class="muted">None.</p>{% endif %}

<h2 id="incidents">Incidents</h2>
{% if r.timeline.incidents %}<ol class="timeline">
{% for e in r.timeline.incidents %}<li class="bad"><time>{{ e.at | hms }}</time>{{ e.text }}</li>
{% endfor %}</ol>
{% else %}<p class="muted">None: no failed check, action, gate or notification.</p>{% endif %}

<h2 id="decisions">Decisions</h2>
{% if r.timeline.decisions %}<ol class="timeline">
{% for e in r.timeline.decisions %}<li class="{{ e.level }}"><time>{{ e.at | hms }}</time>
{{ e.text }}</li>
{% endfor %}</ol>
{% else %}<p class="muted">None journaled.</p>{% endif %}

<h2 id="timeline">Timeline (UTC)</h2>
{% if r.timeline.entries %}<ol class="timeline">
{% for e in r.timeline.entries %}<li class="{{ e.level }}"><time>{{ e.at | hms }}</time>
{{ e.text }}</li>
{% endfor %}</ol>
{% else %}<p class="muted">Nothing happened yet.</p>{% endif %}

<h2 id="signoffs">Sign-offs</h2>
{% if signoffs %}<ol class="timeline">
{% for state, s in signoffs %}<li><time>{{ s.at }}</time>{{ state.step.title }}
 (<code>{{ state.step.id }}</code>) by {{ s.by }}{% if s.note %} — {{ s.note }}{% endif %}</li>
{% endfor %}</ol>
{% else %}<p class="muted">None yet.</p>{% endif %}

<h2 id="notes">Notes</h2>
{% if r.state.notes %}<ol class="timeline">
{% for n in r.state.notes %}<li><time>{{ n.at }}</time>{{ n.by }}: {{ n.text }}</li>
{% endfor %}</ol>
{% else %}<p class="muted">No notes yet — add one: changeover note "…" --by NAME</p>{% endif %}

<h2 id="follow-up">Logs and follow-up</h2>
<ul class="items">
<li>Journal head <code>{{ r.journal.head_hash }}</code> ({{ r.journal.events }} events): record
 it in the change ticket; archive the journal with
 <code>changeover journal export -o cutover-journal.jsonl</code> — this report can be made again
 from it with <code>changeover report --journal cutover-journal.jsonl</code>.</li>
{% for step in r.housekeeping() %}<li>{{ step.title }} (<code>{{ step.id }}</code>):
 {{ step.state }}</li>{% endfor %}
</ul>

<h2 id="runbook">Runbook</h2>
{% for g in groups %}
<details><summary>{{ g.heading }}</summary>
{% for line in g.lines %}<p class="meta">{{ line }}</p>{% endfor %}
{% for section in g.sections %}
{% if section.title %}<h3>{{ section.title }}</h3>{% endif %}
<ul class="items">
{% for i in section.items %}<li>{{ i.mark }} {{ i.title }} (<code>{{ i.id }}</code>,
 {{ i.automation }}){% if i.timing %} — <strong>{{ i.timing }}</strong>{% endif %}
{% if i.result or i.signoffs or i.awaiting %}<ul>
{% if i.result %}<li>{{ i.result }}{% if i.evidence %}<ul>{% for e in i.evidence %}
<li>{{ e }}</li>{% endfor %}</ul>{% endif %}</li>{% endif %}
{% for s in i.signoffs %}<li>{{ s }}</li>{% endfor %}
{% if i.awaiting %}<li class="muted">{{ i.awaiting }}</li>{% endif %}
</ul>{% endif %}</li>
{% endfor %}
</ul>
{% endfor %}
</details>
{% endfor %}
</main>
</body>
</html>
"""
