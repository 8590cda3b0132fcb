"""When the post-cutover suite runs (pure): the plan's ``watch`` steps as due times.

Each ``{watch: {every: 30m, from: 0h, until: 2h}}`` step is a rule; its rounds fall at
``anchor + from``, then every ``every``, up to but not including ``anchor + until`` (so the
seed's "every 30 minutes for 2 hours" is 4 rounds and the hourly rule takes over at 2h). The
anchor is when the cutover completed. Watch steps may also say which stages form the suite
(``stages``), who is alerted in turn (``alert``) and after how long an unacknowledged alert
goes to the next role (``escalate_after``). Clocks are injected: nothing here reads the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from changeover.errors import UsageError
from changeover.plan.model import Plan
from changeover.units import format_duration, parse_duration

DEFAULT_ALERT_ROLES = ("on-call", "escalation")
DEFAULT_ESCALATE_AFTER = timedelta(minutes=15)  # the seed's PagerDuty policy
_RULE_KEYS = {"every", "from", "until"}
_SETTING_KEYS = {"stages", "alert", "escalate_after"}


@dataclass(frozen=True)
class WatchRule:
    """One watch step: a round every ``every`` from ``start`` until ``end`` (None: forever)."""

    step_id: str
    every: timedelta
    start: timedelta
    end: timedelta | None

    def offsets(self) -> Iterator[timedelta]:
        """Offsets from the anchor, in order; endless when the rule has no ``until``."""
        offset = self.start
        while self.end is None or offset < self.end:
            yield offset
            offset += self.every

    def describe(self) -> str:
        until = f" until {format_duration(self.end)}" if self.end is not None else ""
        return f"every {format_duration(self.every)} from {format_duration(self.start)}{until}"


@dataclass(frozen=True)
class WatchSettings:
    """The plan's watch steps read together: rules, the suite's stages and the escalation."""

    rules: tuple[WatchRule, ...]
    stages: tuple[str, ...]
    alert_roles: tuple[str, ...]
    escalate_after: timedelta


def watch_settings(plan: Plan) -> WatchSettings:
    """Read every ``watch`` action step of the plan; a plain ``UsageError`` for a bad one."""
    rules: list[WatchRule] = []
    stages_with_watch: list[str] = []
    chosen: dict[str, tuple[str, Any]] = {}  # setting → (step id, value)
    for _, stage, step in plan.located_steps():
        if step.action is None or step.action.action != "watch":
            continue
        params = step.action.params
        if not _RULE_KEYS & set(params):
            continue  # a bake watch during the rollout ({min, max}), not a post-cutover round
        unknown = set(params) - _RULE_KEYS - _SETTING_KEYS
        if unknown:
            raise UsageError(
                f"step {step.id}: watch does not know {', '.join(sorted(unknown))} "
                f"(it takes {', '.join(sorted(_RULE_KEYS | _SETTING_KEYS))})"
            )
        rules.append(_rule(step.id, params))
        if stage is not None and stage.id not in stages_with_watch:
            stages_with_watch.append(stage.id)
        for key in _SETTING_KEYS & set(params):
            if key in chosen and chosen[key][1] != params[key]:
                raise UsageError(
                    f"steps {chosen[key][0]} and {step.id} give different watch {key}; "
                    "write it on one watch step only"
                )
            chosen[key] = (step.id, params[key])
    if not rules:
        raise UsageError(
            "the plan has no watch steps; add one, e.g. "
            "{id: watch-hourly, title: ..., action: {watch: {every: 1h, from: 0h}}}"
        )
    stages = _names(chosen, "stages") or tuple(stages_with_watch)
    known_stages = {s.id for s in plan.stages}
    for stage_id in stages:
        if stage_id not in known_stages:
            raise UsageError(f"watch stages: the plan has no stage {stage_id!r}")
    roles = _names(chosen, "alert") or tuple(
        r for r in DEFAULT_ALERT_ROLES if any(c.role == r for c in plan.contacts)
    )
    known_roles = {c.role for c in plan.contacts}
    for role in roles:
        if role not in known_roles:
            raise UsageError(f"watch alert: no contact has the role {role!r}")
    escalate_after = DEFAULT_ESCALATE_AFTER
    if "escalate_after" in chosen:
        escalate_after = _duration(chosen["escalate_after"][0], "escalate_after", chosen)
    return WatchSettings(tuple(rules), stages, roles, escalate_after)


def _rule(step_id: str, params: dict[str, Any]) -> WatchRule:
    if "every" not in params:
        raise UsageError(f"step {step_id}: watch needs 'every' (e.g. every: 30m)")
    every = _parse(step_id, "every", params["every"])
    start = _parse(step_id, "from", params.get("from", 0))
    end = _parse(step_id, "until", params["until"]) if params.get("until") is not None else None
    if every <= timedelta(0):
        raise UsageError(f"step {step_id}: watch every must be longer than zero")
    if start < timedelta(0):
        raise UsageError(f"step {step_id}: watch from is counted from the cutover; not negative")
    if end is not None and end <= start:
        raise UsageError(f"step {step_id}: watch until must come after from")
    return WatchRule(step_id, every, start, end)


def _parse(step_id: str, key: str, value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"step {step_id}: watch {key}: {exc}") from exc


def _duration(step_id: str, key: str, chosen: dict[str, tuple[str, Any]]) -> timedelta:
    value = _parse(step_id, key, chosen[key][1])
    if value <= timedelta(0):
        raise UsageError(f"step {step_id}: watch {key} must be longer than zero")
    return value


def _names(chosen: dict[str, tuple[str, Any]], key: str) -> tuple[str, ...]:
    if key not in chosen:
        return ()
    step_id, value = chosen[key]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise UsageError(f"step {step_id}: watch {key} is a name or a list of names")
    return tuple(names)


@dataclass(frozen=True)
class Schedule:
    """The rounds of a watch: every rule's due times from ``anchor``, merged and de-duplicated."""

    rules: Sequence[WatchRule]
    anchor: datetime

    def times(self, after: datetime | None = None) -> Iterator[datetime]:
        """Due times in order (strictly after ``after`` when given); endless with an open rule."""
        iterators = [rule.offsets() for rule in self.rules]
        heads: list[timedelta | None] = [next(it, None) for it in iterators]
        last: datetime | None = None
        while any(h is not None for h in heads):
            offset = min(h for h in heads if h is not None)
            for number, head in enumerate(heads):
                if head == offset:
                    heads[number] = next(iterators[number], None)
            due = self.anchor + offset
            if due != last and (after is None or due > after):
                yield due
            last = due

    def next_due(self, now: datetime) -> datetime | None:
        """The first round due strictly after ``now``; None when the schedule has ended."""
        return next(self.times(after=now), None)

    def latest_due(self, now: datetime) -> datetime | None:
        """The newest round due at or before ``now`` (the one to run if it is not done)."""
        latest = None
        for due in self.times():
            if due > now:
                break
            latest = due
        return latest

    def between(self, after: datetime | None, before: datetime) -> list[datetime]:
        """Rounds strictly between two times: those a stopped daemon missed."""
        missed = []
        for due in self.times(after=after):
            if due >= before:
                break
            missed.append(due)
        return missed

    def rule_for(self, due: datetime) -> WatchRule | None:
        """The rule a due time belongs to (the first that yields it)."""
        offset = due - self.anchor
        for rule in self.rules:
            within = rule.start <= offset and (rule.end is None or offset < rule.end)
            if within and (offset - rule.start) % rule.every == timedelta(0):
                return rule
        return None


class CompressedClock:
    """Plan time that runs ``factor`` times faster than the wall clock, from ``start``.

    ``--compress 3600`` makes an hour pass per second, so a demo or test walks the whole
    schedule; factor 1 from now is the real clock. ``monotonic`` is injectable for tests.
    """

    def __init__(
        self,
        start: datetime | None = None,
        factor: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if factor <= 0:
            raise UsageError(f"--compress must be positive, got {factor:g}")
        self.start = start or datetime.now(UTC)
        self.factor = factor
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._monotonic() - self._origin) * self.factor)

    def seconds_until(self, moment: datetime) -> float:
        """Wall-clock seconds until plan time reaches ``moment`` (0 when it has)."""
        return max(0.0, (moment - self.now()).total_seconds() / self.factor)
