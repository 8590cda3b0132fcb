"""``changeover run``: the plan's traffic phases with their checks, actions, gates and decisions.

For each stage with a ``phase:`` (10 % → 50 % → 100 %), in order: its checks (a required one
failing stops the run, traffic untouched), its actions (``route`` sets the weights; an action
changeover cannot run yet waits for a sign-off of that step), then the monitoring window —
phase gates and the plan's rollback triggers evaluated every ``interval`` with the anytime-valid
tests of ``changeover.analysis`` — and the decision: ``auto`` proceeds when every gate passed
after the minimum bake, ``manual`` (or a gate that cannot be observed) waits for ``changeover
approve``. A trigger that fires, a failed gate or ``changeover rollback`` from another shell
rolls back: immediate (all traffic to legacy in one step) or graceful (down by steps).

Every step is journaled before and after; a controller killed at any moment and started again
resumes from ``RolloutState``: actions are not repeated, the monitoring time already observed
counts, the window's starting counters are reused, and the router's weights are reconciled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from changeover.analysis import Outcome, Sustained, Verdict, combine
from changeover.analysis.latency import quantile_estimate
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError
from changeover.journal import ACTION_INTENT, ACTION_OUTCOME
from changeover.metrics.base import Observation
from changeover.metrics.checks import ChecksSource, checks_key
from changeover.plan.model import Gate, Stage, Step
from changeover.probes.base import ProbeContext
from changeover.rollout import actions
from changeover.rollout.actions import AUTOMATED
from changeover.rollout.gates import (
    PER_LOOK_QUANTILE,
    Reading,
    histogram,
    phase_gate,
    trigger_gate,
    undecided,
)
from changeover.rollout.samples import (
    SAMPLE,
    SAMPLE_S,
    SAMPLED_METRICS,
    backend_numbers,
    sample_payload,
)
from changeover.rollout.state import (
    APPROVED,
    BAKE,
    DECISION_NEEDED,
    DONE,
    MONITORING,
    PHASE_PASSED,
    PHASE_STARTED,
    RESTARTED,
    ROLLBACK_DONE,
    ROLLBACK_REQUESTED,
    ROLLBACK_STARTED,
    VERDICT,
    RolloutState,
)
from changeover.traffic.router import Router

log = logging.getLogger(__name__)

Reader = Callable[[str, str | None, str | None], Awaitable[Observation]]  # metric, of, source
Notify = Callable[[str, str, dict[str, Any]], None]  # kind, title, evidence (must not block)
GRACEFUL_STEPS = (50.0, 10.0, 0.0)
TRIGGER_WINDOW_S = 30.0  # the shortest trailing window a rate or latency trigger is judged on
HISTORY_S = 600.0  # looks kept for trailing windows (a longer sustained time reads 10 min)
HEARTBEAT_S = 1.0  # how much observed monitoring time a kill can lose


class RolloutStopped(ChangeoverError):
    """The run stopped before the end (a pre-check failed); traffic is where it was."""

    exit_code = 1


@dataclass
class RunResult:
    outcome: str  # completed | rolled_back
    phases_passed: list[str] = field(default_factory=list)
    rollback: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Controller:
    def __init__(
        self,
        runbook: Runbook,
        router: Router,
        read: Reader,
        *,
        notify: Notify | None = None,
        interval: float = 1.0,
        graceful_step_s: float = 10.0,
        sample_s: float = SAMPLE_S,
        legacy: str = "legacy",
        new: str = "new",
        actor: str = "changeover run",
        checks: ChecksSource | None = None,
    ) -> None:
        self.runbook = runbook
        self.journal = runbook.journal
        self.router = router
        self.read = read
        self.notify = notify or (lambda kind, title, evidence: None)
        self.interval = interval
        self.graceful_step_s = graceful_step_s
        self.sample_s = sample_s  # seconds between the charts' samples
        self.legacy, self.new = legacy, new
        self.actor = actor
        self.phases = [s for s in runbook.plan.stages if s.phase is not None]
        self.triggers = [
            (step, Outcome.FAIL_IMMEDIATE) for step in runbook.plan.rollback.immediate
        ] + [(step, Outcome.FAIL_GRACEFUL) for step in runbook.plan.rollback.graceful]
        self.weight: float | None = None
        self._state = RolloutState()
        self.checks = checks or ChecksSource(
            ProbeContext(runbook.plan.systems, base_dir=runbook.loaded.base_dir)
        )
        self._histograms: dict[str, Observation] = {}  # key → last look (per-look quantiles)

    def state(self) -> RolloutState:
        """The journal folded so far; only events newer than the last look are read."""
        return self._state.update(self.journal.events(since_seq=self._state.seq))

    def _log(self, kind: str, payload: dict[str, Any]) -> None:
        self.journal.append(kind, payload, actor=self.actor)

    # --- the run ---------------------------------------------------------------------------

    async def run(self, *, again: bool = False) -> RunResult:
        """Run (or resume) the rollout; ``again`` starts a new attempt after a rollback."""
        state = self.state()
        if again:
            if not state.finished:
                from changeover.errors import UsageError

                raise UsageError(
                    "--again starts a new attempt after a rollback or a finished run; this one "
                    "is still in progress: run without --again to resume it"
                )
            self._log(RESTARTED, {"after": "rollback" if state.rolled_back else "completion"})
            state = self.state()
        if state.rolled_back is not None:
            return RunResult("rolled_back", state.passed, state.rolled_back)
        if state.done:
            return RunResult("completed", state.passed)
        if state.rollback_in_progress is not None or state.rollback_request is not None:
            request = state.rollback_in_progress or state.rollback_request or {}
            return await self._rollback(request.get("mode", "immediate"), request, state)
        await self._reconcile(state)
        for stage in self.phases:
            if stage.id in state.passed:
                continue
            outcome = await self._phase(stage, state)
            if outcome is not None:
                return outcome
            state = self.state()
        self._log(DONE, {"phases": [s.id for s in self.phases]})
        self.notify("complete", "Cutover complete: all traffic on the new app", {})
        return RunResult("completed", self.state().passed)

    async def _reconcile(self, state: RolloutState) -> None:
        """Put the router back to the weight of the last route the journal says succeeded."""
        expected = None
        for event in self.journal.events(kinds=[ACTION_OUTCOME]):
            if event.payload.get("ok") and event.payload.get("action") == "route":
                # the controller journals "weight" (new's); 'changeover route set' "weights"
                weight = event.payload.get("weight")
                if weight is None:
                    weight = (event.payload.get("weights") or {}).get(self.new)
                if weight is not None:
                    expected = float(weight)
        if expected is None:
            return
        now = await self.router.weights()
        if abs(now[self.new] - expected) > 0.01:
            await self._set_weight(expected)
        self.weight = expected

    async def _phase(self, stage: Stage, state: RolloutState) -> RunResult | None:
        assert stage.phase is not None
        if state.phase != stage.id:
            self._log(PHASE_STARTED, {"phase": stage.id, "weight": stage.phase.weight})
            self.notify("phase_started", f"Phase started: {stage.title}", {"phase": stage.id})
        gates: list[tuple[Step, Gate]] = []
        for step in stage.steps():
            if step.check is not None:
                await self._check(step)
            elif step.action is not None:
                await self._action(step, state)
            elif step.manual is not None:
                result = await self._wait_for(partial(self._signed_off, step.id))
                if result is not None:
                    return result
            elif step.gate is not None:
                gates.extend((step, gate) for gate in _gates(step))
        implicit = f"{stage.id}:weight"  # a phase without a route step still sets its weight
        has_route = any(s.action is not None and s.action.action == "route" for s in stage.steps())
        if not has_route and implicit not in state.actions_done:
            await self._set_weight(stage.phase.weight, step=implicit)
        return await self._monitor(stage, gates)

    async def _check(self, step: Step) -> None:
        outcomes = await asyncio.to_thread(self.runbook.check, step_ids=[step.id])
        failed = [o for o in outcomes if not o.status.ok]
        if failed and step.required:
            raise RolloutStopped(
                f"pre-check {step.id!r} ({step.title}) failed: {failed[0].reason}; traffic is "
                "unchanged — fix it (or sign it off) and run 'changeover run' again"
            )

    async def _action(self, step: Step, state: RolloutState) -> None:
        assert step.action is not None
        if step.id in state.actions_done:
            return  # done before a restart: never repeated
        name, params = step.action.action, step.action.params
        if name == "route":
            await self._set_weight(float(params["weight"]), step=step.id)
            return
        if name in AUTOMATED:
            payload = {"step": step.id, "action": name}
            self._log(ACTION_INTENT, payload)
            try:
                detail = await actions.run(name, params, self.runbook, self.router)
            except (actions.ActionFailed, ChangeoverError) as exc:
                self._log(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
                raise RolloutStopped(
                    f"action {step.id!r} ({step.title}) failed: {exc}; traffic is unchanged — "
                    "fix it and run 'changeover run' again (or roll back)"
                ) from exc
            self._log(ACTION_OUTCOME, {**payload, "ok": True, "detail": detail})
            return
        # Not automated yet: the step is done by hand and signed off.
        self._log(ACTION_INTENT, {"step": step.id, "action": name, "manual": True})
        self.notify(
            "decision_needed",
            f"Action needs a hand: {step.title}",
            {"step": step.id, "how": f"do it, then: changeover signoff {step.id} --by NAME"},
        )
        await self._wait_for(partial(self._signed_off, step.id))
        self._log(ACTION_OUTCOME, {"step": step.id, "action": name, "ok": True, "by": "signoff"})

    async def _set_weight(self, weight: float, *, step: str | None = None) -> None:
        payload = {"step": step, "action": "route", "weight": weight}
        self._log(ACTION_INTENT, payload)
        try:
            observed = await self.router.set_weights(
                {self.legacy: 100.0 - weight, self.new: weight}
            )
        except ChangeoverError as exc:
            self._log(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
            raise
        self._log(ACTION_OUTCOME, {**payload, "ok": True, "observed": dict(observed.percent)})
        self.weight = weight

    def _signed_off(self, step_id: str) -> bool:
        return step_id in self.state().signed_off

    async def _wait_for(self, done: Callable[[], bool]) -> RunResult | None:
        """Wait (watching for a rollback request) until ``done()``."""
        while not done():
            request = self.state().rollback_request
            if request is not None:
                return await self._rollback(request["mode"], request, self.state())
            await asyncio.sleep(self.interval)
        return None

    # --- monitoring ------------------------------------------------------------------------

    async def _monitor(self, stage: Stage, gates: list[tuple[Step, Gate]]) -> RunResult | None:
        assert stage.phase is not None
        bake = stage.phase.bake
        min_s = bake.min.total_seconds() if bake else 0.0
        max_s = bake.max.total_seconds() if bake else 0.0
        decision = stage.phase.decision
        auto = decision is not None and decision.mode == "auto"
        state = self.state()
        observed = state.observed_s.get(stage.id, 0.0)
        start = state.window.get(stage.id)
        if start is None:
            start = {k: _to_json(o) for k, o in (await self._readings(gates)).items()}
            self._log(MONITORING, {"phase": stage.id, "start": start})
        starts = {k: _from_json(v) for k, v in start.items()}
        sustained = {step.id: Sustained(_sustained_s(step)) for step, _ in self.triggers}
        last: dict[str, str] = {}
        beat = time.monotonic()
        series: dict[str, list[tuple[float, float]]] = {}
        history: dict[str, deque[tuple[float, Observation]]] = {}  # key → recent looks
        graceful_since: float | None = None
        sampled, sampled_at = await self._backend_readings(), time.monotonic()
        while True:
            tick = time.monotonic()
            now = await self._readings(gates)
            baked = observed >= min_s
            verdicts: list[Verdict] = []
            for step, gate in gates:
                reading = self._reading(gate, now, starts, series, observed)
                try:
                    verdict = phase_gate(step.id, gate, reading, baked=baked, elapsed_s=observed)
                except (ValueError, ArithmeticError) as exc:
                    verdict = _unjudged(step.id, gate, observed, exc)
                verdicts.append(verdict)
            fired: list[Verdict] = []
            watched: list[Verdict] = []  # every trigger's verdict, fired or not, for the charts
            for key, observation in now.items():
                history.setdefault(key, deque()).append((observed, observation))
                while history[key][0][0] < observed - HISTORY_S:
                    history[key].popleft()
            for step, on_fire in self.triggers:
                for gate in _gates(step):
                    reading = _trailing(
                        gate, self._reading(gate, now, starts, series, observed), history
                    )
                    try:
                        verdict, sustained[step.id] = trigger_gate(
                            step.id,
                            gate,
                            reading,
                            sustained[step.id],
                            now=observed,
                            elapsed_s=observed,
                            on_fire=on_fire,
                        )
                    except (ValueError, ArithmeticError) as exc:
                        verdict = _unjudged(step.id, gate, observed, exc)
                    watched.append(verdict)
                    if verdict.failed:
                        fired.append(verdict)
            for verdict in verdicts + fired:
                if last.get(verdict.gate) != verdict.outcome.value:
                    last[verdict.gate] = verdict.outcome.value
                    self._log(VERDICT, {"phase": stage.id, "verdict": verdict.to_json()})
            if tick - sampled_at >= self.sample_s:
                since = tick - sampled_at
                shown = verdicts + watched
                sampled = await self._sample(stage.id, observed, sampled, since, shown)
                sampled_at = tick
            failing = fired + [v for v in verdicts if v.failed]
            # A failed phase gate rolls back gracefully — after a short grace in which an
            # immediate trigger may still fire (its sustain time plus a few looks), so a severe
            # breach rolls back in one step rather than in graceful steps.
            if failing and not fired:
                graceful_since = observed if graceful_since is None else graceful_since
                if observed - graceful_since < self._grace_s():
                    failing = []
            elif not failing:
                graceful_since = None
            if failing:
                worst = combine(failing)
                mode = "immediate" if worst is Outcome.FAIL_IMMEDIATE else "graceful"
                reason = "; ".join(f"{v.gate}: {v.reason}" for v in failing)
                evidence = {"verdicts": [v.to_json() for v in failing]}
                return await self._rollback(
                    mode, {"reason": reason, "evidence": evidence}, self.state()
                )
            current = self.state()
            if current.rollback_request is not None:
                return await self._rollback(
                    current.rollback_request["mode"], current.rollback_request, current
                )
            overall = combine(verdicts)
            passed = overall is Outcome.PASS and baked
            undecided = observed >= max_s and not passed
            if passed and auto:
                break
            if (passed or undecided) and stage.id in current.approved:
                break
            if (passed or undecided) and stage.id not in current.decision_asked:
                evidence = {"verdicts": [v.to_json() for v in verdicts]}
                self._log(DECISION_NEEDED, {"phase": stage.id, "evidence": evidence})
                title = decision.title if decision else f"Proceed past {stage.id}?"
                self.notify(
                    "decision_needed",
                    f"Decision needed: {title} — changeover approve {stage.id} --by NAME",
                    evidence,
                )
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - tick)))
            observed += time.monotonic() - tick
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                self._log(BAKE, {"phase": stage.id, "observed_s": round(observed, 3)})
        self._log(BAKE, {"phase": stage.id, "observed_s": round(observed, 3)})
        self._log(PHASE_PASSED, {"phase": stage.id})
        self.notify("phase_passed", f"Phase passed: {stage.title}", {"phase": stage.id})
        return None

    def _grace_s(self) -> float:
        immediate = [step for step, on_fire in self.triggers if on_fire is Outcome.FAIL_IMMEDIATE]
        if not immediate:
            return 0.0
        return max(_sustained_s(step) for step in immediate) + max(2.0, 5 * self.interval)

    async def _backend_readings(self) -> dict[str, dict[str, Observation]]:
        """Each backend's counters and latency histogram, for the dashboard's and report's
        charts; a source that cannot say leaves the numbers out."""
        wanted = [(b, m) for b in (self.legacy, self.new) for m in SAMPLED_METRICS]
        results = await asyncio.gather(
            *(self.read(metric, backend, None) for backend, metric in wanted),
            return_exceptions=True,
        )
        out: dict[str, dict[str, Observation]] = {self.legacy: {}, self.new: {}}
        for (backend, metric), result in zip(wanted, results, strict=True):
            if isinstance(result, Observation):
                out[backend][metric] = result
        return out

    async def _sample(
        self,
        phase: str,
        observed: float,
        before: dict[str, dict[str, Observation]],
        seconds: float,
        verdicts: list[Verdict],
    ) -> dict[str, dict[str, Observation]]:
        """Journal what each backend did since the last sample; return the readings."""
        after = await self._backend_readings()
        backends = {
            name: backend_numbers(before.get(name, {}), after[name], seconds) for name in after
        }
        payload = sample_payload(
            phase, observed, self.weight, backends, verdicts, self.legacy, self.new
        )
        self._log(SAMPLE, payload)
        return after

    async def _readings(self, gates: Sequence[tuple[Step, Gate]]) -> dict[str, Observation]:
        wanted: dict[str, Awaitable[Observation]] = {}
        every = [g for _, g in gates] + [g for step, _ in self.triggers for g in _gates(step)]
        for gate in every:
            key = _key(gate)
            if key in wanted:
                continue
            if gate.check is not None:  # a synthetic gate: its own probes, run at every look
                wanted[key] = self.checks.read(gate.metric, gate.of, gate.checks)
                continue
            wanted[key] = self.read(gate.metric, gate.of, gate.source)
            if gate.max_ratio_to is not None:
                wanted[_key(gate, gate.max_ratio_to)] = self.read(
                    gate.metric, gate.max_ratio_to, gate.source
                )
        results = await asyncio.gather(*wanted.values())
        return dict(zip(wanted, results, strict=True))

    def _reading(
        self,
        gate: Gate,
        now: dict[str, Observation],
        starts: dict[str, Observation],
        series: dict[str, list[tuple[float, float]]],
        observed: float,
    ) -> Reading:
        key = _key(gate)
        current = now[key]
        point = current.value
        if gate.metric in PER_LOOK_QUANTILE and current.histogram is not None:
            point = self._per_look_quantile(key, current)
        if point is not None:
            points = series.setdefault(key, [])
            if not points or points[-1][0] < observed:
                points.append((observed, point))
        baseline = _key(gate, gate.max_ratio_to) if gate.max_ratio_to else None
        return Reading(
            start=starts.get(key),
            now=current,
            baseline_start=starts.get(baseline) if baseline else None,
            baseline_now=now.get(baseline) if baseline else None,
            series=series.get(key, ()),
        )

    def _per_look_quantile(self, key: str, current: Observation) -> float | None:
        """The quantile of the requests since the previous look (the series "stable" trends
        over); None until there is a previous look with requests in between."""
        previous = self._histograms.get(key)
        if previous is not None and previous.at == current.at:
            return None  # the same reading seen by a second gate
        self._histograms[key] = current
        if previous is None:
            return None
        window = histogram(previous, current)
        if sum(count for _, count in window) == 0:
            return None
        return quantile_estimate(window, PER_LOOK_QUANTILE[key.split("|", 1)[0]])

    # --- rollback --------------------------------------------------------------------------

    async def _hand_writes_back(self) -> str:
        """After the data handoff, writes go back to legacy the same zero-loss way."""
        if not _handed_off(self.journal.events(kinds=[ACTION_OUTCOME])):
            return "legacy (never handed off)"
        payload = {"step": "rollback-handoff", "action": "migrate.handoff", "to": "legacy"}
        self._log(ACTION_INTENT, payload)
        try:
            detail = await actions.handoff(self.runbook, self.router, "legacy")
        except (actions.ActionFailed, ChangeoverError) as exc:
            self._log(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
            return f"NOT handed back: {exc}; run 'changeover migrate handoff --back'"
        self._log(ACTION_OUTCOME, {**payload, "ok": True, "detail": detail})
        return "legacy (handed back)"

    async def _legacy_writable(self) -> str | None:
        """Undo the legacy app's read-only hook, if a readonly step ran one — after the write
        handback, so that legacy never takes writes while new still owns them (writes sent to
        legacy in between fail instead of splitting). None when there was no hook."""
        hooked = [
            e.payload["step"]
            for e in self.journal.events(kinds=[ACTION_OUTCOME])
            if e.payload.get("action") == "readonly"
            and e.payload.get("ok")
            and "hook" in (e.payload.get("detail") or {})
        ]
        if not hooked:
            return None
        try:
            step = self.runbook.plan.step(hooked[-1])
        except KeyError:  # the plan changed since: nothing to undo with
            step = None
        params = dict(step.action.params) if step is not None and step.action else {}
        if not params.get("undo"):
            return (
                f"STILL READ-ONLY: step {hooked[-1]} has no 'undo' command — make the legacy "
                "app writable by hand before it takes writes"
            )
        payload = {"step": "rollback-writable", "action": "readonly.undo"}
        self._log(ACTION_INTENT, payload)
        try:
            detail = await asyncio.to_thread(actions.writable, params)
        except (actions.ActionFailed, ChangeoverError) as exc:
            self._log(ACTION_OUTCOME, {**payload, "ok": False, "error": str(exc)})
            return f"STILL READ-ONLY: the undo hook failed: {exc}"
        self._log(ACTION_OUTCOME, {**payload, "ok": True, "detail": detail})
        return "writable again (undo hook ran)"

    async def _rollback(self, mode: str, request: dict[str, Any], state: RolloutState) -> RunResult:
        reason = str(request.get("reason", "requested"))
        evidence = request.get("evidence", {})
        if state.rollback_in_progress is None:
            self._log(ROLLBACK_STARTED, {"mode": mode, "reason": reason, "evidence": evidence})
        started = time.monotonic()
        if mode == "graceful":
            current = self.weight if self.weight is not None else 100.0
            for weight in [w for w in GRACEFUL_STEPS if w < current]:
                await self._set_weight(weight, step="rollback")
                if weight > 0:
                    await asyncio.sleep(self.graceful_step_s)
        else:
            await self._set_weight(0.0, step="rollback")
        seconds = round(time.monotonic() - started, 3)
        handback = await self._hand_writes_back()
        legacy = await self._legacy_writable()
        done = {"mode": mode, "seconds": seconds, "writes": handback}
        self._log(ROLLBACK_DONE, {**done, **({"legacy": legacy} if legacy else {})})
        self.notify(
            "rollback",
            f"ROLLBACK ({mode}): all traffic back on legacy — {reason}",
            {"reason": reason, "seconds": seconds, "writes": handback, **evidence},
        )
        return RunResult("rolled_back", self.state().passed, self.state().rolled_back)


def _unjudged(name: str, gate: Gate, elapsed_s: float, exc: Exception) -> Verdict:
    """A gate whose numbers cannot be judged (a source's inconsistent answer) stays undecided
    and says why; it never stops the controller, which must still be able to roll back."""
    log.warning("gate %s could not be evaluated: %s", name, exc)
    return undecided(name, gate, elapsed_s, f"could not be evaluated: {exc}")


def _trailing(
    gate: Gate, reading: Reading, history: dict[str, deque[tuple[float, Observation]]]
) -> Reading:
    """A rollback trigger judges the recent past, not the whole phase: a spike after an hour of
    clean traffic must not wait until it outweighs that hour. Rates, ratios and latency are read
    over the trailing ``max(sustained, TRIGGER_WINDOW_S)``; a "none observed" trigger with a
    sustained time asks whether events keep coming, look after look (one failed synthetic check
    is a blip, every check failing for the sustained time is an outage); one without fires on
    any event in the phase."""
    sustained = gate.sustained.total_seconds() if gate.sustained else 0.0
    if gate.below is None and gate.above is None and gate.ratio is None:  # any event counts
        if not sustained:
            return reading
        window = 0.0  # since the previous look
    else:
        window = max(sustained, TRIGGER_WINDOW_S)

    def since(key: str | None) -> Observation | None:
        """The newest look at least ``window`` old; None (the phase's start) when none is."""
        looks = history.get(key or "")
        if not looks:
            return None
        newest = looks[-1][0]
        chosen: Observation | None = None
        for at, look in list(looks)[:-1]:
            if at <= newest - window:
                chosen = look
        return chosen

    start = since(_key(gate))
    baseline = since(_key(gate, gate.max_ratio_to)) if gate.max_ratio_to else None
    return replace(
        reading,
        start=start if start is not None else reading.start,
        baseline_start=baseline if baseline is not None else reading.baseline_start,
    )


def _handed_off(events: Any) -> bool:
    return any(e.payload.get("action") == "migrate.handoff" and e.payload.get("ok") for e in events)


def notify_through(notifier: Any, echo: Callable[[str, str], None] | None = None) -> Notify:
    """The controller's ``notify`` over a ``changeover.notify.Notifier``: scheduled, never
    awaited, so a slow or failing channel never delays a rollback (deliveries are journaled)."""
    from changeover.notify.message import Notification

    def notify(kind: str, title: str, evidence: dict[str, Any]) -> None:
        notifier.send_nowait(Notification(kind, title, evidence=evidence))  # type: ignore[arg-type]
        if echo is not None:
            echo(kind, title)

    return notify


def request_rollback(runbook: Runbook, mode: str, reason: str, by: str) -> None:
    """``changeover rollback`` from another shell: the running controller acts on it."""
    runbook.journal.append(ROLLBACK_REQUESTED, {"mode": mode, "reason": reason}, actor=by)


def approve(runbook: Runbook, phase: str, by: str) -> None:
    phases = [s.id for s in runbook.plan.stages if s.phase is not None]
    if phase not in phases:
        from changeover.errors import UsageError
        from changeover.plan.model import suggest

        raise UsageError(f"unknown phase {phase!r}{suggest(phase, phases)}")
    runbook.journal.append(APPROVED, {"phase": phase}, actor=by)


def _key(gate: Gate, of: str | None = None) -> str:
    key = f"{gate.metric}|{of if of is not None else gate.of}|{gate.source}"
    return key + f"|checks:{checks_key(gate.checks)}" if gate.check is not None else key


def _gates(step: Step) -> list[Gate]:
    if step.gate is None:
        return []
    return step.gate if isinstance(step.gate, list) else [step.gate]


def _sustained_s(step: Step) -> float:
    return max((g.sustained.total_seconds() for g in _gates(step) if g.sustained), default=0.0)


def _to_json(observation: Observation) -> dict[str, Any]:
    data = asdict(observation)
    if observation.histogram is not None:
        data["histogram"] = [
            [b if b != float("inf") else "inf", c] for b, c in observation.histogram
        ]
    return data


def _from_json(data: dict[str, Any]) -> Observation:
    histogram = data.get("histogram")
    if histogram is not None:
        data = {**data, "histogram": tuple((float(b), int(c)) for b, c in histogram)}
    return Observation(**data)
