"""The plan: a cutover checklist as typed data (stages → sections → steps), validated on load.

Every checklist item is a ``Step`` of exactly one kind:

- ``check``  — one or more read-only probes (``{postgres.connect: {system: postgres}}``);
- ``action`` — something changeover does (deploy, route, migrate, ...), run by later capabilities;
- ``gate``   — a metric condition watched during a traffic phase or as a rollback trigger;
- ``manual`` — a sign-off by a role from ``contacts``.

Structure is checked by pydantic; references (probe names and parameters, systems, roles, unique
ids) by ``Plan._check_references``, which raises ``PlanInvalid`` with the location of each
problem so that ``plan.load`` can name file, line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from changeover.plan.secretref import FileRef, SecretRef
from changeover.plan.systems import KINDS, System, infer_kinds
from changeover.probes.base import REGISTRY, ProbeParams, load_all
from changeover.secrets import has_reference
from changeover.units import Duration, format_duration, parse_duration

Loc = tuple[str | int, ...]

_ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
Id = Annotated[str, Field(pattern=_ID_PATTERN, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- what a step does ------------------------------------------------------------------------


class ProbeCall(_Model):
    """``{probe.name: {params}}`` in YAML; parameters are typed by the probe's ``Params``."""

    probe: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_single_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) - {"probe", "params"}:
            if len(data) != 1:
                raise ValueError(
                    f"a check names exactly one probe, e.g. {{postgres.connect: {{...}}}}; "
                    f"got keys {', '.join(map(str, data))}"
                )
            ((name, params),) = data.items()
            return {"probe": name, "params": params or {}}
        return data

    @cached_property
    def typed(self) -> ProbeParams:
        """The parameters validated by the probe's model (valid once the plan validated)."""
        return REGISTRY[self.probe].Params.model_validate(self.params)


class ActionCall(_Model):
    """``{action.name: {params}}``: a change changeover makes (see ``changeover.actions``)."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_single_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) - {"action", "params"}:
            if len(data) != 1:
                raise ValueError("an action names exactly one action, e.g. {deploy: {...}}")
            ((name, params),) = data.items()
            return {"action": name, "params": params or {}}
        return data


Threshold = float | str  # 0.01, "1%", "100ms", "80%"


class Gate(_Model):
    """A metric condition, watched continuously by the rollout controller (traffic issue)."""

    metric: str
    of: str | None = Field(default=None, description="system the metric is about")
    source: str | None = Field(default=None, description="system the metric is read from")
    below: Threshold | None = None
    above: Threshold | None = None
    max_ratio_to: str | None = Field(default=None, description="baseline system")
    ratio: float | None = None
    slack: Duration | None = Field(
        default=None,
        description="latency ratio gates: a canary within baseline + slack is normal whatever "
        "the ratio (a few ms of scheduler noise is not a regression)",
    )
    sustained: Duration | None = None
    window: Duration | None = Field(
        default=None,
        description="a gate outside a traffic phase (checked by 'changeover check' or the "
        "watch): how long one check watches the metric (default 30s)",
    )
    target: Threshold | None = Field(default=None, description="aspirational value (reported)")
    check: ProbeCall | list[ProbeCall] | None = Field(
        default=None,
        description="synthetic checks run at every look; each failed run is an event",
    )

    @property
    def checks(self) -> list[ProbeCall]:
        if self.check is None:
            return []
        return self.check if isinstance(self.check, list) else [self.check]

    @model_validator(mode="after")
    def _one_condition(self) -> Gate:
        conditions = [self.below is not None, self.above is not None, self.ratio is not None]
        if sum(conditions) == 0 and self.metric not in _BOOLEAN_METRICS and self.check is None:
            raise ValueError("a gate needs one of below, above or ratio")
        if self.ratio is not None and self.max_ratio_to is None:
            raise ValueError("ratio needs max_ratio_to (the baseline system)")
        if self.slack is not None and (self.ratio is None or not self.metric.startswith("latency")):
            raise ValueError("slack applies to a latency gate with a ratio to a baseline")
        return self


# Metrics whose condition is "none observed" / "stable": no threshold needed.
_BOOLEAN_METRICS = frozenset(
    {
        "memory_stable",
        "memory_leak",
        "database_errors",
        "auth_failures",
        "user_complaints",
        "stuck_requests",
        "background_jobs",
        "session_continuity",
        "data_corruption",
        "data_loss",
        "features",
        "critical_features",
        "database_connection_failures",
        "security_breach",
        "cache_issues",
        "latency_stable",
    }
)


class Manual(_Model):
    """A sign-off by a person in a role from ``contacts``."""

    role: Id
    how: str | None = Field(default=None, description="what the person checks or does")


class Step(_Model):
    """One checklist item; ``title`` is the checklist's wording."""

    id: Id
    title: str = Field(min_length=1)
    check: ProbeCall | list[ProbeCall] | None = None
    action: ActionCall | None = None
    gate: Gate | list[Gate] | None = None
    manual: Manual | None = None
    required: bool = True
    how: str | None = Field(default=None, description="how to do or verify it by hand")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        kinds = [k for k in ("check", "action", "gate", "manual") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a step needs exactly one of check, action, gate or manual"
                + (f" (has {', '.join(kinds)})" if kinds else "")
            )
        return self

    @property
    def kind(self) -> Literal["check", "action", "gate", "manual"]:
        for kind in ("check", "action", "gate", "manual"):
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated steps have a kind")

    @property
    def checks(self) -> list[ProbeCall]:
        if self.check is None:
            return []
        return self.check if isinstance(self.check, list) else [self.check]

    @property
    def gates(self) -> list[Gate]:
        if self.gate is None:
            return []
        return self.gate if isinstance(self.gate, list) else [self.gate]


class Section(_Model):
    title: str
    steps: list[Step]


class Window(_Model):
    """When a stage's items are due, relative to ``cutover_at`` (``-72h`` = 72 hours before)."""

    opens: Duration
    due: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.due is not None and self.due < self.opens:
            raise ValueError("due must not be before opens")
        return self


class Bake(_Model):
    min: Duration
    max: Duration

    @model_validator(mode="after")
    def _ordered(self) -> Bake:
        if self.max < self.min:
            raise ValueError("bake.max must not be shorter than bake.min")
        return self


class Decision(_Model):
    """A decision point at the end of a phase: ``auto`` proceeds when every gate passes."""

    title: str
    mode: Literal["manual", "auto"] = "manual"
    role: Id | None = Field(default=None, description="who approves a manual decision")


class Phase(_Model):
    """A traffic phase: weight to the new app, instances to deploy, bake time, decision."""

    weight: float = Field(ge=0, le=100)
    deploy: list[str] = Field(default_factory=list)
    bake: Bake | None = None
    decision: Decision | None = None


class Stage(_Model):
    id: Id
    title: str
    part: str | None = Field(default=None, description="the checklist part it belongs to")
    window: Window | None = None
    phase: Phase | None = None
    sections: list[Section]

    def steps(self) -> Iterator[Step]:
        for section in self.sections:
            yield from section.steps


class Rollback(_Model):
    immediate: list[Step] = Field(default_factory=list)
    graceful: list[Step] = Field(default_factory=list)


class Contact(_Model):
    role: Id
    title: str
    name: str = "TBD"
    phone: str = ""
    slack: str = ""
    email: str = ""


class WarRoom(_Model):
    conference_bridge: str = ""
    zoom: str = ""
    slack_channel: str = ""
    log_aggregation: str = ""
    metrics_dashboard: str = ""
    runbook: str = ""


class Migration(_Model):
    """The data migration: the legacy SQLite file and the PostgreSQL system it moves to."""

    source: str = Field(description="the legacy SQLite file: sqlite:///path/app.db or a path")
    target: Id = Field(description="a postgres system of the plan")
    casts: dict[str, str] = Field(
        default_factory=dict,
        description="per-column cast rules, e.g. {orders.created_at: timestamptz from epoch_ms}",
    )


# Schemes whose URL is just an address (a webhook receiver, a mail relay): safe to write as is.
# Any other service URL (slack://, pagerduty://, https://hooks...) carries its token.
_PLAIN_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos")


def _check_literal_channel(value: str | FileRef) -> str | FileRef:
    if not isinstance(value, str) or has_reference(value):
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme:
        raise ValueError(
            "a notification channel is an apprise URL like 'slack://...' or 'mailto://...', "
            "usually as a reference: '${SLACK_URL}'"
        )
    login = "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]
    if scheme.lower() not in _PLAIN_SCHEMES or login:
        raise ValueError(
            f"a {scheme}:// URL carries its token or login; put it in an environment variable "
            "and write '${SLACK_URL}' (or {file: path}) instead"
        )
    return value


# A notification channel: a reference, or a literal URL that carries no credential.
Channel = Annotated[SecretRef, AfterValidator(_check_literal_channel)]


# --- the plan --------------------------------------------------------------------------------


class PlanInvalid(Exception):
    """Reference problems found after structural validation, each with its location.

    Deliberately not a ``ValueError``: pydantic lets it propagate unchanged, so ``plan.load``
    receives the exact locations instead of one error on the whole plan.
    """

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(msg for _, msg in problems))


class Plan(_Model):
    version: Literal[1] = 1
    name: str
    cutover_at: datetime
    journal: SecretRef | None = Field(
        default=None,
        description="journal store: omitted = .changeover/journal.db next to the plan; "
        "or a postgresql:// URL (as a ${ENV} reference)",
    )
    contacts: list[Contact] = Field(default_factory=list)
    war_room: WarRoom = Field(default_factory=WarRoom)
    systems: dict[Id, System] = Field(default_factory=dict)
    notify: list[Channel] = Field(
        default_factory=list,
        description="notification channels (apprise URLs: slack://, pagerduty://, mailto://, "
        "json://...), each as a ${ENV} reference or {file: path}; a literal is allowed only for a "
        "plain webhook or mail relay without credentials",
    )
    migrate: Migration | None = None
    stages: list[Stage]
    rollback: Rollback = Field(default_factory=Rollback)
    success_criteria: list[Step] = Field(default_factory=list)
    notes: str = ""

    @field_validator("systems", mode="before")
    @classmethod
    def _infer_kinds(cls, value: Any) -> Any:
        return infer_kinds(value)

    @field_validator("notify")
    @classmethod
    def _notify_channels(cls, value: list[str | FileRef]) -> list[str | FileRef]:
        seen = [c if isinstance(c, str) else f"file:{c.file}" for c in value]
        duplicates = sorted({c for c in seen if seen.count(c) > 1})
        if duplicates:
            raise ValueError(f"channel {duplicates[0]!r} is listed twice")
        return value

    @field_validator("cutover_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("cutover_at needs a time zone, e.g. 2026-12-01T02:00:00Z")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> Plan:
        problems = list(_reference_problems(self))
        if problems:
            raise PlanInvalid(problems)
        return self

    # -- navigation --

    def located_steps(self) -> Iterator[tuple[Loc, Stage | None, Step]]:
        """Every step with its location in the plan (stages, rollback, success criteria)."""
        for si, stage in enumerate(self.stages):
            for ci, section in enumerate(stage.sections):
                for ti, step in enumerate(section.steps):
                    yield ("stages", si, "sections", ci, "steps", ti), stage, step
        for group in ("immediate", "graceful"):
            for ti, step in enumerate(getattr(self.rollback, group)):
                yield ("rollback", group, ti), None, step
        for ti, step in enumerate(self.success_criteria):
            yield ("success_criteria", ti), None, step

    def all_steps(self) -> Iterator[Step]:
        for _, _, step in self.located_steps():
            yield step

    def step(self, step_id: str) -> Step:
        for step in self.all_steps():
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def stage(self, stage_id: str) -> Stage:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    def stage_of(self, step_id: str) -> Stage | None:
        for _, stage, step in self.located_steps():
            if step.id == step_id:
                return stage
        return None


def suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reference_problems(plan: Plan) -> Iterator[tuple[Loc, str]]:
    from changeover.actions import ACTIONS

    probes = load_all()
    roles = {c.role for c in plan.contacts}
    seen: dict[str, Loc] = {}

    for si, stage in enumerate(plan.stages):
        if stage.id in seen:
            yield ("stages", si, "id"), f"duplicate id {stage.id!r}"
        seen.setdefault(stage.id, ("stages", si, "id"))
        if stage.phase is not None:
            instances = [i.name for i in _instances(plan)]
            for di, name in enumerate(stage.phase.deploy):
                if name not in instances:
                    yield (
                        ("stages", si, "phase", "deploy", di),
                        f"unknown instance {name!r}{suggest(name, instances)}",
                    )
            decision = stage.phase.decision
            if decision is not None and decision.role is not None and decision.role not in roles:
                yield (
                    ("stages", si, "phase", "decision", "role"),
                    f"unknown role {decision.role!r}{suggest(decision.role, roles)}",
                )

    if plan.migrate is not None:
        target = plan.migrate.target
        if target not in plan.systems:
            yield ("migrate", "target"), _unknown_system(target, plan)
        elif plan.systems[target].kind != "postgres":
            kind = plan.systems[target].kind
            yield (
                ("migrate", "target"),
                f"system {target!r} is a {kind}; the migration target must be a postgres system",
            )

    for loc, _, step in plan.located_steps():
        if step.id in seen:
            yield loc + ("id",), f"duplicate id {step.id!r} (first used at {_path(seen[step.id])})"
        seen.setdefault(step.id, loc + ("id",))
        if step.manual is not None and step.manual.role not in roles:
            yield (
                loc + ("manual", "role"),
                f"unknown role {step.manual.role!r}{suggest(step.manual.role, roles)}"
                + ("" if roles else " (no contacts are defined)"),
            )
        for ci, call in enumerate(step.checks):
            where = loc + (("check", ci) if isinstance(step.check, list) else ("check",))
            yield from _probe_problems(plan, call, where, probes)
        if step.action is not None and step.action.action not in ACTIONS:
            yield (
                loc + ("action", step.action.action),
                f"unknown action {step.action.action!r}{suggest(step.action.action, ACTIONS)}",
            )
        for gi, gate in enumerate(step.gates):
            where = loc + (("gate", gi) if isinstance(step.gate, list) else ("gate",))
            for field in ("of", "source", "max_ratio_to"):
                ref = getattr(gate, field)
                if ref is not None and ref not in plan.systems:
                    yield where + (field,), _unknown_system(ref, plan)
            for ci, call in enumerate(gate.checks):
                at = where + (("check", ci) if isinstance(gate.check, list) else ("check",))
                yield from _probe_problems(plan, call, at, probes)


def _probe_problems(
    plan: Plan, call: ProbeCall, where: Loc, probes: Any
) -> Iterator[tuple[Loc, str]]:
    if call.probe not in probes:
        yield where + (call.probe,), f"unknown probe {call.probe!r}{suggest(call.probe, probes)}"
        return
    probe = probes[call.probe]
    try:
        params = probe.Params.model_validate(call.params)
    except ValidationError as exc:
        for err in exc.errors():
            yield where + (call.probe, *err["loc"]), pydantic_message(err)
        return
    system = getattr(params, "system", None)
    if system is not None and system in plan.systems and probe.system_kinds:
        kind = plan.systems[system].kind
        if kind not in probe.system_kinds:
            wanted = " or ".join(probe.system_kinds)
            yield (
                where + (call.probe, "system"),
                f"system {system!r} is a {kind}; {call.probe} needs a {wanted}",
            )
    for path, endpoint in _endpoints(params):
        yield from _endpoint_problems(plan, endpoint, where + (call.probe, *path))


def _endpoints(params: BaseModel, path: Loc = ()) -> Iterator[tuple[Loc, BaseModel]]:
    """Every part of a probe's parameters that names a ``system`` (the parameters themselves,
    or nested ones such as http.session's ``login`` and ``use``)."""
    if getattr(params, "system", None) is not None:
        yield path, params
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, BaseModel):
            yield from _endpoints(value, (*path, name))


def _endpoint_problems(plan: Plan, endpoint: BaseModel, where: Loc) -> Iterator[tuple[Loc, str]]:
    """The system exists; an app without a url of its own is named with one of its instances,
    and that instance exists — found when the plan is loaded, not at the first look of a gate."""
    system = getattr(endpoint, "system", None)
    assert isinstance(system, str)
    if system not in plan.systems:
        yield where + ("system",), _unknown_system(system, plan)
        return
    target = plan.systems[system]
    if not hasattr(endpoint, "instance") or not hasattr(target, "instances"):
        return
    names = [i.name for i in target.instances]
    instance = endpoint.instance
    if instance is not None and instance not in names:
        known = ", ".join(names) or "none"
        yield (
            where + ("instance",),
            f"system {system!r} has no instance {instance!r}{suggest(instance, names)} "
            f"(instances: {known})",
        )
    elif instance is None and getattr(target, "url", None) is None:
        yield (
            where + ("system",),
            f"system {system!r} has no url of its own; name one of its instances with "
            f"'instance:' ({', '.join(names)})",
        )


def _unknown_system(name: str, plan: Plan) -> str:
    known = ", ".join(sorted(plan.systems)) or "none defined"
    return f"unknown system {name!r}{suggest(name, plan.systems)} (systems: {known})"


def _instances(plan: Plan) -> list[Any]:
    return [i for s in plan.systems.values() if s.kind == "app" for i in s.instances]


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# What a pydantic type error expected, in the operator's words ("expected an integer").
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "datetime_type": "a date and time like 2026-12-01T02:00:00Z",
    "datetime_parsing": "a date and time like 2026-12-01T02:00:00Z",
    "datetime_from_date_parsing": "a date and time like 2026-12-01T02:00:00Z",
}


def pydantic_message(err: Any) -> str:
    """pydantic's message, phrased for an operator: what was expected, what was found."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    ctx = err.get("ctx") or {}
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}"
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected')}"
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") == _ID_PATTERN:
        message = "an id is lowercase letters, digits and dashes, e.g. 'pg-ready'"
    else:
        message = str(err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    # Only a single value is worth repeating; a mapping or list is in the file at that line.
    if isinstance(err.get("input"), str | int | float | datetime):
        shown = _shown(err["input"])
        # Validators such as parse_duration already quote the value they were given.
        if len(shown) <= 60 and shown not in message:
            message += f" (got {shown})"
    return message


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


__all__ = [
    "KINDS",
    "ActionCall",
    "Bake",
    "Contact",
    "Decision",
    "Duration",
    "Gate",
    "Manual",
    "Phase",
    "Plan",
    "PlanInvalid",
    "ProbeCall",
    "Rollback",
    "Section",
    "Stage",
    "Step",
    "WarRoom",
    "Window",
    "format_duration",
    "parse_duration",
]
