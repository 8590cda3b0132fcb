"""The cutover report as Markdown: what a change ticket or a wiki page takes.

The same sections as the HTML page — the 13 criteria with their evidence, phases, traffic per
phase (in numbers: Markdown has no charts), timeline, decisions, rollbacks, incidents,
sign-offs, notes, follow-up and the runbook — with every cell redacted before it is escaped.
"""

from __future__ import annotations

from changeover.report.build import Report
from changeover.report.measures import by_phase
from changeover.report.runbook import groups_markdown, runbook_groups, summary_lines
from changeover.report.series import backends
from changeover.secrets import REDACTOR

MARKS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "UNKNOWN": "❔ UNKNOWN"}


def render_md(report: Report) -> str:
    counts = report.counts()
    journal = report.journal
    chain = (
        "hash chain verified"
        if journal.ok
        else f"**HASH CHAIN BROKEN — this journal was tampered with: {journal.problem}**"
    )
    lines = [
        f"# Cutover report — {report.plan.name}",
        "",
        f"**Outcome: {report.outcome}** — criteria: {counts['PASS']} pass, {counts['FAIL']} "
        f"fail, {counts['UNKNOWN']} unknown (no evidence is not a pass)",
        "",
        f"- Journal: {journal.location} — {journal.events} events, head `{journal.head_hash}`; "
        f"{chain}",
        *summary_lines(report.state, None, journal=False),
        "",
        "## Success criteria",
        "",
        "| # | Criterion | Status | Evidence |",
        "|---|---|---|---|",
    ]
    for c in report.criteria:
        evidence = "<br>".join(_cell(e) for e in c.evidence)
        target = f"<br>*to pass: {_cell(c.target)}*" if c.target else ""
        lines.append(
            f"| {c.number} | {_cell(c.title)} | {MARKS[c.status.value]} | {evidence}{target} |"
        )
    lines += ["", *_phases(report), *_traffic(report), *_timeline(report)]
    lines += _rollbacks(report)
    lines += _listed(
        "Incidents",
        [f"{_t(e.at)} {e.text}" for e in report.timeline.incidents],
        "none: no failed check, action, gate or notification",
    )
    lines += _listed(
        "Decisions", [f"{_t(e.at)} {e.text}" for e in report.timeline.decisions], "none journaled"
    )
    signoffs = [
        f"{s.at} {state.step.id} ({state.step.title}) by {s.by}"
        + (f" — {s.note}" if s.note else "")
        for state in report.state.steps
        for s in state.signoffs
    ]
    lines += _listed("Sign-offs", signoffs, "none yet")
    notes = [f"{n['at']} {n['by']}: {n['text']}" for n in report.state.notes]
    lines += _listed("Notes", notes, 'no notes yet — add one: changeover note "…" --by NAME')
    lines += _follow_up(report)
    lines += ["## Runbook", ""]
    lines += groups_markdown(runbook_groups(report.state), level=3)
    return REDACTOR.scrub("\n".join(lines).rstrip() + "\n")


def _phases(report: Report) -> list[str]:
    phases = report.timeline.phases
    if not phases:
        return ["## Phases", "", "No traffic phase started.", ""]
    lines = [
        "## Phases",
        "",
        "| Phase | Weight | Attempt | Started | Ended | Outcome | Watched | Approved by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        weight = f"{p.weight:g}%" if p.weight is not None else "—"
        watched = f"{p.observed_s:.0f} s" if p.observed_s is not None else "—"
        ended = _t(p.ended_at) if p.ended_at else "—"
        lines.append(
            f"| {p.phase} | {weight} | {p.attempt} | {_t(p.started_at)} | {ended} | "
            f"{p.outcome} | {watched} | {_cell(p.approved_by or '—')} |"
        )
    return [*lines, ""]


def _traffic(report: Report) -> list[str]:
    samples = report.timeline.samples
    lines = ["## Traffic by phase", ""]
    if not samples:
        return [*lines, "No rollout samples in the journal: nothing to chart.", ""]
    lines += [
        f"From {len(samples)} samples (the HTML report draws them over time).",
        "",
        "| Phase | Backend | Requests | Errors | Error rate | p95 (per-sample, weighted) | "
        "Worst p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in by_phase(samples, backends(samples)):
        rate = row.traffic.error_rate
        shown = f"{rate * 100:.3g}%" if rate is not None else "—"
        p95 = f"{row.latency.typical_ms:.1f} ms" if row.latency else "—"
        worst = f"{row.latency.worst_ms:.1f} ms" if row.latency else "—"
        lines.append(
            f"| {row.phase} | {row.backend} | {row.traffic.requests:,} | {row.traffic.errors:,} "
            f"| {shown} | {p95} | {worst} |"
        )
    return [*lines, ""]


def _timeline(report: Report) -> list[str]:
    entries = report.timeline.entries
    lines = ["## Timeline (UTC)", ""]
    if not entries:
        return [*lines, "Nothing happened yet.", ""]
    icons = {"bad": "❌ ", "warn": "⚠️ ", "ok": "", "info": ""}
    lines += [f"- {_t(e.at)} {icons.get(e.level, '')}{e.text}" for e in entries]
    return [*lines, ""]


def _rollbacks(report: Report) -> list[str]:
    rows = []
    for r in report.timeline.rollbacks:
        by = f", asked for by {r.requested_by}" if r.requested_by else ""
        took = f"{r.seconds:g} s" if r.seconds is not None else "not finished"
        rows.append(
            f"{_t(r.started_at)} {r.mode} rollback in {r.phase or '—'}{by}: {r.reason} — traffic "
            f"back on legacy in {took}; writes: {r.writes or '—'}"
        )
    return _listed("Rollbacks", rows, "none")


def _follow_up(report: Report) -> list[str]:
    lines = ["## Logs and follow-up", ""]
    lines.append(
        f"- Journal head `{report.journal.head_hash}` ({report.journal.events} events): record it "
        "in the change ticket; archive the journal with `changeover journal export -o "
        "cutover-journal.jsonl` (this report can be made again from it with `changeover report "
        "--journal cutover-journal.jsonl`)"
    )
    for step in report.housekeeping():
        lines.append(f"- {step['title']} (`{step['id']}`): {step['state']}")
    return [*lines, ""]


def _listed(title: str, rows: list[str], empty: str) -> list[str]:
    body = [f"- {row}" for row in rows] if rows else [empty[0].upper() + empty[1:] + "."]
    return [f"## {title}", "", *body, ""]


def _cell(text: str) -> str:
    """A table cell: redacted first (an escaped secret would no longer match), then escaped."""
    return REDACTOR.scrub(str(text)).replace("|", "\\|").replace("\n", " ")


def _t(at: object) -> str:
    return at.strftime("%H:%M:%S") if hasattr(at, "strftime") else str(at)
