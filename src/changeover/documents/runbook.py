"""The runbook document (``changeover runbook``): the plan as Markdown a team reads at 3 a.m.

``runbook_markdown(plan, plan_path)`` is pure: the plan in, text out, nothing resolved, read or
run. Sections: overview and systems, contacts and escalation, dashboards, every stage with every
step (what runs it, how to do it by hand, how to sign it off), rollback triggers and procedures,
success criteria, the credential plan and the communication plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from changeover.documents.actions import LEGACY, NEW, action_recipe, handoff_lines, route_lines
from changeover.documents.credentials import secret_references
from changeover.documents.gates import gate_recipe
from changeover.documents.probes import probe_recipe
from changeover.documents.recipe import Recipe, shown
from changeover.documents.shellwords import PlanWords, Word, masked
from changeover.plan.model import Plan, Stage, Step
from changeover.plan.systems import (
    AppSystem,
    ElasticsearchSystem,
    GitSystem,
    LokiSystem,
    PrometheusSystem,
    RouterSystem,
)
from changeover.secrets import REDACTOR
from changeover.units import format_duration

DASHBOARD_URL = "http://127.0.0.1:8765"  # `changeover dashboard`'s default address


def runbook_markdown(plan: Plan, plan_path: Path | str | None = None) -> str:
    """The runbook for ``plan``; ``plan_path`` places its relative files and names the plan."""
    path = Path(plan_path).absolute() if plan_path is not None else None
    words = PlanWords(plan, path.parent if path is not None else None)
    sections = [
        _overview(plan, path, words),
        _contacts(plan),
        _dashboards(plan, words),
        *(_stage(number, stage, words) for number, stage in enumerate(plan.stages, 1)),
        _rollback(plan, words),
        _success(plan, words),
        _credentials(plan, words),
        _communication(plan, words),
    ]
    text = "\n".join(line for section in sections for line in section)
    # Nothing here is resolved; the scrub is the same last guard every output boundary has.
    return REDACTOR.scrub(text.rstrip("\n") + "\n")


Lines = list[str]


# --- overview --------------------------------------------------------------------------------


def _overview(plan: Plan, path: Path | None, words: PlanWords) -> Lines:
    steps = list(plan.all_steps())
    kinds = {k: sum(1 for s in steps if s.kind == k) for k in ("check", "action", "gate", "manual")}
    lines = [
        f"# Runbook: {plan.name}",
        "",
        "Generated from the plan by `changeover runbook`; regenerate it after every change to "
        "the plan. Contents: overview, contacts and escalation, dashboards, the stages in "
        "order, rollback, success criteria, credential plan, communication plan.",
        "",
        "## Overview",
        "",
        f"- Cutover at: **{_time(plan.cutover_at)}** (T0; windows below are relative to it)",
    ]
    if path is not None:
        lines.append(
            f"- Plan: `{path}` — every command below reads it: `export CHANGEOVER_PLAN={path}`"
        )
    lines += [
        f"- {len(steps)} steps in {len(plan.stages)} stages: {kinds['check']} checks, "
        f"{kinds['action']} actions, {kinds['gate']} gates, {kinds['manual']} sign-offs by a "
        "person",
        "- Commands use the plan's own references (`${PG_URL}` …) unexpanded: export those "
        "variables in your shell first (see the credential plan). This document never holds "
        "a secret's value.",
    ]
    if plan.migrate is not None:
        lines.append(
            f"- Data migration: `{words.sqlite_source()}` (SQLite) → "
            f"{plan.migrate.target} (PostgreSQL)"
        )
    lines += ["", "### Systems", "", "| System | Kind | Address | Notes |", "|---|---|---|---|"]
    for name, system in plan.systems.items():
        kind = system.kind + (f" ({system.type})" if isinstance(system, RouterSystem) else "")
        lines.append(
            f"| {name} | {kind} | {_cell(_address(system, words))} | "
            f"{_cell(system.description or '')} |"
        )
    return [*lines, ""]


def _address(system: object, words: PlanWords) -> str:
    """Where a system is, as the plan writes it (references unexpanded, passwords masked)."""
    if isinstance(system, GitSystem):
        return f"`{words.path(system.path)}` (main: {system.main})"
    if isinstance(system, RouterSystem):
        parts = []
        if system.admin is not None:
            parts.append(f"admin `{words.word(system.admin).text()}`")
        if system.config is not None:
            parts.append(f"config `{words.path(system.config)}`")
        return ", ".join(parts) or "—"
    parts = []
    url = getattr(system, "url", None)
    if url is not None:
        parts.append(f"`{words.word(url).text()}`")
    if isinstance(system, AppSystem):
        parts += [f"{i.name} `{words.word(i.url).text()}`" for i in system.instances]
        parts.append(f"health {system.health}")
    return ", ".join(parts) or "—"


def _time(value: datetime) -> str:
    offset = value.utcoffset()
    zone = "UTC" if not offset else value.strftime("UTC%z")
    return f"{value.strftime('%Y-%m-%d %H:%M')} {zone}"


def _relative(offset: timedelta) -> str:
    """``T-72h``, ``T0``, ``T+24h``: hours as the plan's windows are written."""
    seconds = offset.total_seconds()
    if not seconds:
        return "T0"
    text = f"{seconds / 3600:+g}h" if seconds % 3600 == 0 else format_duration(offset)
    return f"T{text}" if text[0] in "+-" else f"T+{text}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- contacts --------------------------------------------------------------------------------


def _contacts(plan: Plan) -> Lines:
    lines = ["## Contacts and escalation", ""]
    if not plan.contacts:
        return [*lines, "**The plan has no contacts.** Add them under `contacts:`.", ""]
    lines += [
        "| Role | Title | Name | Phone | Slack | Email |",
        "|---|---|---|---|---|---|",
    ]
    for c in plan.contacts:
        cells = [c.role, c.title, c.name, c.phone, c.slack, c.email]
        lines.append("| " + " | ".join(_filled(_cell(v)) for v in cells) + " |")
    unfilled = [c.title for c in plan.contacts if c.name in ("", "TBD") or not c.phone]
    if unfilled:
        lines += ["", f"**Not filled in yet** (name or phone): {', '.join(unfilled)}."]
    lines += ["", "### Who to call when", ""]
    for c in plan.contacts:
        decides = [
            s.id
            for s in plan.stages
            if s.phase and s.phase.decision and s.phase.decision.role == c.role
        ]
        signs = [s.id for s in plan.all_steps() if s.manual is not None and s.manual.role == c.role]
        duties = []
        if decides:
            duties.append(f"go / no-go at the end of {', '.join(decides)}")
        if signs:
            noun = "step" if len(signs) == 1 else "steps"
            duties.append(f"signs off {len(signs)} {noun} ({', '.join(signs)})")
        lines.append(f"- **{c.title}** ({c.role}): {'; '.join(duties) or 'no assigned steps'}")
    escalation = [c for c in plan.contacts if "escalat" in f"{c.role} {c.title}".lower()]
    on_call = [c for c in plan.contacts if "on-call" in c.role or "on call" in c.title.lower()]
    lines.append("")
    if on_call:
        lines.append(
            f"- First call for an alert: {', '.join(_who(c) for c in on_call)}, then the "
            "deciding role of the current phase."
        )
    if escalation:
        lines.append(
            f"- Escalation: when a role does not answer, or a go / no-go or rollback is "
            f"disputed: {', '.join(_who(c) for c in escalation)}."
        )
    else:
        lines.append(
            "- **No escalation contact in the plan**: add one under `contacts` (role: escalation)."
        )
    lines += [
        "- Anyone on the bridge may roll back at once: `changeover rollback --immediate "
        '--reason "..." --by NAME` (see Rollback) — then tell the deciding role.',
        "",
    ]
    return lines


def _filled(value: str) -> str:
    return "**TBD**" if value in ("", "TBD") else value


def _who(contact: object) -> str:
    name = getattr(contact, "name", "TBD")
    phone = getattr(contact, "phone", "")
    return f"{getattr(contact, 'title', '')} ({name}{', ' + phone if phone else ''})"


# --- dashboards ------------------------------------------------------------------------------


def _dashboards(plan: Plan, words: PlanWords) -> Lines:
    lines = [
        "## Dashboards",
        "",
        f"- changeover's dashboard: `changeover dashboard`, then {DASHBOARD_URL} — weights, "
        "gates and their verdicts, rollback triggers, the journal, live",
    ]
    room = plan.war_room
    for label, value in (
        ("Metrics dashboard (war room)", room.metrics_dashboard),
        ("Log aggregation (war room)", room.log_aggregation),
        ("Runbook link (war room)", room.runbook),
    ):
        lines.append(f"- {label}: {_placeholder(value)}")
    for name, system in plan.systems.items():
        url = getattr(system, "url", None)
        if url is None:
            continue
        address = words.word(url).text()
        if isinstance(system, PrometheusSystem):
            lines.append(f"- Prometheus ({name}): `{address}` — /graph, /alerts, /targets")
        elif isinstance(system, LokiSystem | ElasticsearchSystem):
            lines.append(f"- Logs ({name}, {system.kind}): `{address}`")
        elif "grafana" in f"{name} {system.description or ''}".lower():
            lines.append(f"- Grafana ({name}): `{address}`")
    return [*lines, ""]


def _placeholder(value: str) -> str:
    if not value or value.startswith("[Add"):
        return "**not filled in yet** (`war_room` in the plan)"
    return masked(value)


# --- stages and steps ------------------------------------------------------------------------


def _stage(number: int, stage: Stage, words: PlanWords) -> Lines:
    plan = words.plan
    heading = f"## Stage {number}: {stage.title}"
    lines = [
        heading,
        "",
        f"Stage `{stage.id}`" + (f" — part of {stage.part}" if stage.part else ""),
    ]
    if stage.window is not None:
        opens = plan.cutover_at + stage.window.opens
        lines.append(f"- Window: opens {_time(opens)} ({_relative(stage.window.opens)})")
        if stage.window.due is not None:
            due = plan.cutover_at + stage.window.due
            lines[-1] += f", due {_time(due)} ({_relative(stage.window.due)})"
    if stage.phase is not None:
        lines += _phase(stage)
    lines.append("")
    for section in stage.sections:
        lines += [f"### {section.title}", ""]
        for step in section.steps:
            lines += _step(step, stage, words)
    return lines


def _phase(stage: Stage) -> Lines:
    phase = stage.phase
    assert phase is not None
    lines = [f"- Traffic phase: **{phase.weight:g}%** of requests to the new app"]
    if phase.deploy:
        lines[-1] += f"; deploys {', '.join(phase.deploy)}"
    if phase.bake is not None:
        lines[-1] += f"; bake {shown(phase.bake.min)}–{shown(phase.bake.max)}"
    lines.append(
        "- `changeover run` carries out this phase: its steps in order (checks, actions, "
        "sign-offs), then watches the gates and the rollback triggers through the bake"
    )
    decision = phase.decision
    if decision is None:
        lines.append("- Ends when the bake is over and every gate passed")
    elif decision.mode == "auto":
        lines.append(
            f"- Decision ({decision.title}): automatic — proceeds once every gate passed after "
            "the minimum bake"
        )
    else:
        who = f" by {decision.role}" if decision.role else ""
        lines.append(
            f"- Decision ({decision.title}): manual{who} — "
            f"`changeover approve {stage.id} --by NAME`"
        )
    return lines


def _step(
    step: Step, stage: Stage | None, words: PlanWords, *, trigger: str | None = None
) -> Lines:
    when = _when(step, stage, trigger, words.plan.cutover_at)
    lines = [f"#### `{step.id}` — {step.title}", "", when, ""]
    recipes = _recipes(step, stage, words, trigger)
    if step.check is not None:
        run = f"`changeover check --step {step.id}`"
        if _phase_of(stage):
            run += " (and `changeover run` before the phase's traffic change)"
        if len(recipes) == 1:
            lines.append(f"- Automated: {run} runs {recipes[0].automated}")
        else:
            lines.append(f"- Automated: {run} runs {len(recipes)} probes:")
            lines += [f"  - {recipe.automated}" for recipe in recipes]
    else:
        lines += [f"- Automated: {recipe.automated}" for recipe in recipes]
    if step.manual is not None:
        how = step.manual.how or step.title
        lines.append(f"- By hand ({step.manual.role}): {masked(how)}")
    # Two gates of a step may share their by-hand look (two metrics on the same page): once.
    distinct = list(dict.fromkeys((r.commands, r.notes) for r in recipes))
    commands = [c for lines, _ in distinct for c in lines]
    notes = [n for _, texts in distinct for n in texts]
    if commands or notes:
        lines.append("- By hand:")
        if commands:
            lines += ["", "  ```sh", *(f"  {c}" for c in commands), "  ```", ""]
        lines += [f"  {note}" for note in notes]
    if step.how and step.manual is None:
        lines.append(f"- Plan's note: {masked(step.how)}")
    if trigger is None:
        lines.append(f"- Sign off: `changeover signoff {step.id} --by NAME`")
    else:
        reason = step.title.replace('"', "'")
        lines.append(
            f'- Seen it yourself: `changeover rollback --{trigger} --reason "{reason}" --by NAME`'
        )
    return [*lines, ""]


def _when(step: Step, stage: Stage | None, trigger: str | None, cutover_at: datetime) -> str:
    need = "Required" if step.required else "Optional"
    if trigger is not None:
        return f"{need} · {trigger} rollback trigger · watched through every traffic phase"
    if stage is None:
        return f"{need} · after the cutover"
    window = stage.window
    if window is not None:
        opens = f"{_time(cutover_at + window.opens)} ({_relative(window.opens)})"
        if window.due is None:
            return f"{need} · from {opens}"
        due = f"{_time(cutover_at + window.due)} ({_relative(window.due)})"
        return f"{need} · due {due}, opens {opens}"
    if stage.phase is not None:
        return f"{need} · during the {stage.phase.weight:g}% phase (`{stage.id}`)"
    return f"{need} · no window"


def _recipes(
    step: Step, stage: Stage | None, words: PlanWords, trigger: str | None
) -> list[Recipe]:
    recipes = [probe_recipe(call, words, step.id) for call in step.checks]
    if step.action is not None:
        recipes.append(action_recipe(step.action, stage, words, step.id))
    for gate in step.gates:
        recipe = gate_recipe(gate, words, step.id, trigger=trigger is not None)
        if trigger is not None:
            text = f"`changeover run` rolls back ({trigger}) when {recipe.automated}"
        elif _phase_of(stage):
            text = f"gate — `changeover run` passes the phase only while {recipe.automated}"
        else:
            text = (
                f"gate — holds while {recipe.automated}; `changeover run` watches gates only "
                "during a traffic phase, so here a person checks it"
            )
        recipes.append(Recipe(text, recipe.commands, recipe.notes))
    return recipes


def _phase_of(stage: Stage | None) -> bool:
    return stage is not None and stage.phase is not None


# --- rollback --------------------------------------------------------------------------------


def _rollback(plan: Plan, words: PlanWords) -> Lines:
    from changeover.rollout.controller import GRACEFUL_STEPS

    lines = ["## Rollback", ""]
    lines += [
        "Every trigger below is watched by `changeover run` through every traffic phase and "
        "fires by itself; a person may roll back at any time with the commands that follow.",
        "",
        "### Triggers",
        "",
        "| Trigger | Mode | Fires when |",
        "|---|---|---|",
    ]
    for mode in ("immediate", "graceful"):
        for step in getattr(plan.rollback, mode):
            for gate in step.gates:
                condition = gate_recipe(gate, words, step.id, trigger=True).automated
                lines.append(f"| `{step.id}` {_cell(step.title)} | {mode} | {_cell(condition)} |")
    if not plan.rollback.immediate and not plan.rollback.graceful:
        lines.append("| — | — | **the plan has no rollback triggers** |")
    steps = " → ".join(f"{w:g}%" for w in GRACEFUL_STEPS)
    lines += [
        "",
        "### Immediate rollback (all traffic back to legacy at once)",
        "",
        "1. From any shell that has the plan:",
        "",
        "   ```sh",
        '   changeover rollback --immediate --reason "what you saw" --by NAME',
        "   ```",
        "",
        "2. What `changeover run` does within a second: sets the router to "
        f"{LEGACY}=100 {NEW}=0 in one step; if writes had been handed to the new app, hands "
        "them back to legacy the same zero-loss way (write hold, drain, verify, flip); "
        "journals each step and tells every notification channel why, with the evidence.",
        "3. Check it:",
        "",
        "   ```sh",
        "   changeover route show",
        "   changeover migrate status",
        "   ```",
        "",
        f"   Expect {LEGACY} 100%, {NEW} 0%, writes owned by legacy.",
        "",
        "4. If `changeover run` is not running, `changeover rollback` only records the "
        "request: start `changeover run` (it carries out the request first), or do it by hand:",
        "",
        "   ```sh",
        *(f"   {line}" for line in route_lines(words, 0)),
        "   # only when writes were handed off (changeover migrate status: owner new):",
        *(f"   {line}" for line in handoff_lines(words, back=True)),
        "   changeover migrate verify",
        "   ```",
        "",
        '5. Afterwards: `changeover note "what happened" --by NAME`, `changeover report -o '
        "REPORT.md`; `changeover run --again` starts a new attempt.",
        "",
        "### Graceful rollback (step down)",
        "",
        "1. From any shell that has the plan:",
        "",
        "   ```sh",
        '   changeover rollback --graceful --reason "what you saw" --by NAME',
        "   ```",
        "",
        f"2. What `changeover run` does: steps the new app's share down {steps} (only the "
        "steps below the current share), pausing between steps, then hands writes back as "
        "above and notifies every channel.",
        "3. By hand, watching errors and latency between steps:",
        "",
        "   ```sh",
    ]
    for weight in GRACEFUL_STEPS:
        lines += [f"   {line}" for line in route_lines(words, weight)]
        if weight > 0:
            lines.append("   changeover route show   # wait, watch errors and latency")
    lines += [
        "   # only when writes were handed off:",
        *(f"   {line}" for line in handoff_lines(words, back=True)),
        "   changeover migrate verify",
        "   ```",
        "",
        "### Each trigger",
        "",
    ]
    for mode in ("immediate", "graceful"):
        for step in getattr(plan.rollback, mode):
            lines += _step(step, None, words, trigger=mode)
    return lines


def _success(plan: Plan, words: PlanWords) -> Lines:
    if not plan.success_criteria:
        return []
    lines = ["## Success criteria", ""]
    for step in plan.success_criteria:
        lines += _step(step, None, words)
    return lines


# --- credentials and communication -----------------------------------------------------------


def _credentials(plan: Plan, words: PlanWords) -> Lines:
    lines = [
        "## Credential plan",
        "",
        "Every secret the plan uses is a reference, resolved only at the moment of use and "
        "scrubbed from the journal, logs and reports. Set these before the night; this "
        "document names them and never holds a value.",
        "",
        "| Reference | Comes from | Used at |",
        "|---|---|---|",
    ]
    references = secret_references(plan, words.base)
    for ref in references:
        if ref.kind == "env":
            source = f"environment variable `{ref.name}`"
            if ref.has_default:
                source += " (optional: the plan has a default)"
            shown_ref = f"`${{{ref.name}}}`"
        else:
            source = f"file `{ref.name}` (its content, newline stripped)"
            shown_ref = "`{file: …}`"
        lines.append(f"| {shown_ref} | {source} | {_cell(', '.join(ref.used_at))} |")
    if not references:
        lines.append("| — | the plan references no secret | — |")
    required = [r.name for r in references if r.kind == "env" and not r.has_default]
    if required:
        lines += ["", "Check they are set (prints only the names that are missing):", ""]
        lines += ["```sh", _missing_check(required), "```"]
    return [*lines, ""]


def _due(stage: Stage | None) -> str:
    if stage is None or stage.window is None:
        return f"in {stage.id}" if stage is not None else "after the cutover"
    end = stage.window.due if stage.window.due is not None else stage.window.opens
    return f"by {_relative(end)}"


def _missing_check(names: Iterable[str]) -> str:
    listed = " ".join(names)
    return f'for v in {listed}; do [ -n "${{!v}}" ] || echo "missing: $v"; done'


def _communication(plan: Plan, words: PlanWords) -> Lines:
    lines = ["## Communication plan", "", "### Channels", ""]
    messages = [
        (stage, step)
        for _, stage, step in plan.located_steps()
        if step.action is not None and step.action.action == "notify"
    ]
    if plan.notify:
        lines += ["| # | Channel | Kind | Receives |", "|---|---|---|---|"]
        for index, channel in enumerate(plan.notify):
            word = words.word(channel)
            own = [
                step.id
                for _, step in messages
                if step.action is not None and step.action.params.get("to") in (None, channel)
            ]
            receives = "every run event" + (f"; messages {', '.join(own)}" if own else "")
            lines.append(
                f"| {index} | `{word.text()}` | {_channel_kind(word)} | {_cell(receives)} |"
            )
        lines += [
            "",
            "Every channel receives what `changeover run` reports: phase started, phase "
            "passed, decision needed (a manual go / no-go, or an action waiting for a person), "
            "rollback (with the reason and the evidence) and cutover complete. "
            "`changeover notify test` sends a test to every channel.",
        ]
    else:
        lines.append(
            "**The plan has no notification channels** (`notify:`): nothing is sent "
            "automatically; tell the team in the war room."
        )
    if messages:
        lines += ["", "### Messages the plan sends", ""]
        for stage, step in messages:
            assert step.action is not None
            to = step.action.params.get("to")
            target = f"`{words.word(to).text()}`" if to else "every channel"
            when = _due(stage)
            message = masked(str(step.action.params.get("message", "")))
            lines.append(f"- `{step.id}` ({when}) → {target}: “{message}”")
    room = plan.war_room
    lines += ["", "### War room", "", "| Field | Value |", "|---|---|"]
    for label, value in (
        ("Conference bridge", room.conference_bridge),
        ("Zoom", room.zoom),
        ("Slack channel", room.slack_channel),
        ("Log aggregation", room.log_aggregation),
        ("Metrics dashboard", room.metrics_dashboard),
        ("Runbook", room.runbook),
    ):
        lines.append(f"| {label} | {_cell(_placeholder(value))} |")
    return [*lines, ""]


# An env variable's name says what kind of channel it holds more often than not; the URL itself
# (slack://, pagerduty://, mailto://) decides, and is not read here.
_KIND_HINTS = (
    ("SLACK", "Slack"),
    ("PAGERDUTY", "PagerDuty"),
    ("MAIL", "email"),
    ("SMTP", "email"),
    ("TEAMS", "Microsoft Teams"),
    ("DISCORD", "Discord"),
    ("WEBHOOK", "webhook"),
)


def _channel_kind(word: Word) -> str:
    if word.literal:
        return word.text().split("://", 1)[0] + "://"
    names = " ".join(value.upper() for kind, value in word.parts if kind in ("ref", "file"))
    for hint, kind in _KIND_HINTS:
        if hint in names:
            return f"{kind} (by its name; the URL's scheme decides)"
    return "the apprise URL's scheme decides"
