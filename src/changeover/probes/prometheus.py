"""Probes of a Prometheus server: ready, a PromQL threshold, scrape targets up, alert rules loaded.

Each probe reads one endpoint of the HTTP API (``/-/ready``, ``/api/v1/query``,
``/api/v1/targets``, ``/api/v1/rules``); an answer with ``"status": "error"`` becomes a failed
check naming Prometheus' ``errorType`` and message (``bad_data: 1:5: parse error: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from changeover.probes._jsonapi import Answer, JsonApi
from changeover.probes.base import (
    JSON,
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    Status,
    SystemParams,
    Unreachable,
)

KINDS = ("prometheus",)
#: at most this many series / targets / rules are listed in a result's evidence and details
SHOWN = 20


def _api(params: SystemParams, ctx: ProbeContext) -> JsonApi:
    return JsonApi.for_system("Prometheus", params.system, ctx, KINDS, params.timeout)


async def _api_envelope(
    api: JsonApi, path: str, what: str, query: dict[str, Any]
) -> dict[str, Any]:
    """A success envelope (``status``, ``data``, ``warnings``); an error envelope raises."""
    answer = await api.get(path, query)
    body = answer.body
    if isinstance(body, dict) and body.get("status") == "error":
        error_type = body.get("errorType") or "error"
        raise Unreachable(f"Prometheus {what} failed: {error_type}: {body.get('error', '')}")
    if answer.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        raise api.unexpected(answer, f"the {what}")
    return body


def _fmt(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if math.isfinite(value) else str(_json_number(value))


def _json_number(value: float) -> JSON:
    """Prometheus' own spelling of NaN and infinities; JSON has no literal for them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def series_name(labels: Mapping[str, str]) -> str:
    """``demo_error_ratio{instance="127.0.0.1:9100",job="demo"}`` (``{}`` when there are none)."""
    name = labels.get("__name__", "")
    rest = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels) if key != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


# ---------------------------------------------------------------- prometheus.ready


@dataclass(frozen=True)
class ReadyRaw:
    status: int
    text: str


class PrometheusReady(Probe[SystemParams, ReadyRaw]):
    """Prometheus answers ``GET /-/ready`` with 200 (it has loaded its TSDB and serves queries)."""

    name = "prometheus.ready"
    summary = "Prometheus is up and ready to serve queries"
    Params = SystemParams
    system_kinds = KINDS

    async def gather(self, params: SystemParams, ctx: ProbeContext) -> ReadyRaw:
        async with _api(params, ctx) as api:
            answer: Answer = await api.get("/-/ready")
        return ReadyRaw(answer.status, answer.snippet())

    def interpret(self, params: SystemParams, raw: ReadyRaw) -> CheckResult:
        measure = Measure("http_status", raw.status, expected="200", ok=raw.status == 200)
        if raw.status == 200:
            return CheckResult.passed("Prometheus is ready", measure)
        said = f": {raw.text}" if raw.text else ""
        return CheckResult.fail(f"Prometheus is not ready (HTTP {raw.status}{said})", measure)


# ---------------------------------------------------------------- prometheus.query


class QueryParams(SystemParams):
    query: str = Field(
        min_length=1,
        description=(
            "PromQL expression, evaluated as an instant query now, e.g. "
            '\'sum(rate(http_requests_total{code=~"5.."}[5m])) / '
            "sum(rate(http_requests_total[5m]))'."
        ),
    )
    below: float | None = Field(
        default=None, description="A series satisfies the check when its value is < below."
    )
    above: float | None = Field(
        default=None, description="A series satisfies the check when its value is > above."
    )
    aggregate: Literal["all", "any"] = Field(
        default="all",
        description="'all': every series must satisfy the threshold; 'any': at least one.",
    )
    empty: Literal["fail", "pass"] = Field(
        default="fail",
        description=(
            "What a result without any series means. 'fail' by default: a misspelt metric or "
            "label gives no series too."
        ),
    )

    @model_validator(mode="after")
    def _has_threshold(self) -> QueryParams:
        if self.below is None and self.above is None:
            raise ValueError("give a threshold: below, above or both")
        if self.below is not None and self.above is not None and self.below <= self.above:
            raise ValueError(
                f"no value can be above {self.above:g} and below {self.below:g}; "
                "'below' must be greater than 'above'"
            )
        return self


@dataclass(frozen=True)
class QueryRaw:
    result_type: str
    result: JSON
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float
    ok: bool
    margin: float  # distance to the nearest limit, negative when outside; NaN counts as -inf


def expected_text(below: float | None, above: float | None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {_fmt(above)}")
    if below is not None:
        parts.append(f"< {_fmt(below)}")
    return " and ".join(parts)


def judge_value(value: float, below: float | None, above: float | None) -> Sample:
    """Whether one value satisfies the thresholds (strictly), with its margin to the limits."""
    margins = []
    if below is not None:
        margins.append(below - value)
    if above is not None:
        margins.append(value - above)
    margin = min(margins) if not math.isnan(value) else -math.inf
    return Sample({}, value, margin > 0, margin)


def samples_of(result_type: str, result: JSON) -> list[Sample] | None:
    """The (labels, value) pairs of an instant result; None when it is not a vector/scalar."""
    if result_type == "scalar":
        return [Sample({}, float(result[1]), False, 0.0)]
    if result_type != "vector":
        return None
    return [Sample(dict(item["metric"]), float(item["value"][1]), False, 0.0) for item in result]


def _value_text(sample: Sample) -> str:
    return f"{series_name(sample.labels)} = {_fmt(sample.value)}"


class PrometheusQuery(Probe[QueryParams, QueryRaw]):
    """An instant PromQL query whose series must be below and/or above thresholds.

    ``aggregate: all`` requires every returned series to satisfy the threshold, ``any`` at least
    one. Comparisons are strict (``below: 0.01`` fails at exactly 0.01); NaN never satisfies a
    threshold. A range-vector result (``metric[5m]``) is a plan error: wrap it in a function such
    as ``avg_over_time``.
    """

    name = "prometheus.query"
    summary = "A PromQL query's value is below/above a threshold"
    Params = QueryParams
    system_kinds = KINDS

    async def gather(self, params: QueryParams, ctx: ProbeContext) -> QueryRaw:
        async with _api(params, ctx) as api:
            body = await _api_envelope(api, "/api/v1/query", "query", {"query": params.query})
        data = body.get("data") or {}
        return QueryRaw(
            str(data.get("resultType")),
            data.get("result"),
            tuple(str(w) for w in body.get("warnings") or ()),
        )

    def interpret(self, params: QueryParams, raw: QueryRaw) -> CheckResult:
        expected = expected_text(params.below, params.above)
        parsed = samples_of(raw.result_type, raw.result)
        if parsed is None:
            return CheckResult(
                Status.ERROR,
                f"the query returns a {raw.result_type}, not an instant vector: use a function "
                "such as avg_over_time(...) or rate(...) around a range selector",
            )
        warnings = {"warnings": list(raw.warnings)} if raw.warnings else {}
        if not parsed:
            if params.empty == "pass":
                return CheckResult.passed(
                    "the query returned no series (empty: pass)",
                    Measure("series", 0, expected="any (empty: pass)", ok=True),
                    **warnings,
                )
            return CheckResult.fail(
                "the query returned no series (a misspelt metric or label gives no series too; "
                "set empty: pass if none is fine)",
                Measure("series", 0, expected=">= 1", ok=False),
                **warnings,
            )

        samples = []
        for sample in parsed:
            judged = judge_value(sample.value, params.below, params.above)
            samples.append(Sample(sample.labels, sample.value, judged.ok, judged.margin))
        good = [s for s in samples if s.ok]
        bad = [s for s in samples if not s.ok]
        total = len(samples)
        if params.aggregate == "all":
            ok = not bad
            # Show what decides the verdict first: the breaching series, else the closest ones.
            shown = sorted(samples, key=lambda s: s.margin)
        else:
            ok = bool(good)
            shown = sorted(samples, key=lambda s: -s.margin)
        shown = shown[:SHOWN]

        if total == 1:
            reason = f"{_value_text(samples[0])} (expected {expected})"
        elif params.aggregate == "all" and ok:
            reason = f"all {total} series {expected} (closest: {_value_text(shown[0])})"
        elif params.aggregate == "all":
            listed = ", ".join(_value_text(s) for s in shown[:3])
            more = ", ..." if len(bad) > 3 else ""
            reason = f"{len(bad)} of {total} series not {expected}: {listed}{more}"
        elif ok:
            reason = f"{len(good)} of {total} series {expected}: {_value_text(shown[0])}"
        else:
            reason = f"none of {total} series is {expected} (closest: {_value_text(shown[0])})"

        evidence = tuple(
            Measure(series_name(s.labels), _json_number(s.value), expected=expected, ok=s.ok)
            for s in shown
        )
        details: dict[str, JSON] = {
            "series_total": total,
            "series_ok": len(good),
            "series": [
                {"labels": dict(s.labels), "value": _json_number(s.value), "ok": s.ok}
                for s in shown
            ],
            **warnings,
        }
        if total > SHOWN:
            details["series_not_shown"] = total - SHOWN
        return CheckResult(Status.PASS if ok else Status.FAIL, reason, evidence, details)


# ---------------------------------------------------------------- prometheus.targets


class TargetsParams(SystemParams):
    job: str = Field(
        min_length=1, description="Scrape job: its `job` label (the `job_name` of the config)."
    )
    min_up: int = Field(default=1, ge=0, description="At least this many targets must be up.")


def _job_of(target: Mapping[str, Any]) -> str:
    labels = target.get("labels") or {}
    return str(labels.get("job") or target.get("scrapePool") or "")


class PrometheusTargets(Probe[TargetsParams, list[dict[str, Any]]]):
    """Every active target of a scrape job is up (``health == "up"``), and at least ``min_up``.

    A target Prometheus has not scraped yet (health ``unknown``) counts as not up.
    """

    name = "prometheus.targets"
    summary = "All scrape targets of a job are up"
    Params = TargetsParams
    system_kinds = KINDS

    async def gather(self, params: TargetsParams, ctx: ProbeContext) -> list[dict[str, Any]]:
        async with _api(params, ctx) as api:
            body = await _api_envelope(
                api, "/api/v1/targets", "targets request", {"state": "active"}
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise Unreachable("Prometheus answered the targets request without a target list")
        return list(data.get("activeTargets") or [])

    def interpret(self, params: TargetsParams, raw: list[dict[str, Any]]) -> CheckResult:
        targets = [t for t in raw if _job_of(t) == params.job]
        up = [t for t in targets if t.get("health") == "up"]
        down = [t for t in targets if t.get("health") != "up"]
        evidence = [
            Measure(
                "targets_up", len(up), expected=f">= {params.min_up}", ok=len(up) >= params.min_up
            ),
            Measure("targets_down", len(down), expected="0", ok=not down),
        ]
        details: dict[str, JSON] = {
            "down": [
                {
                    "instance": (t.get("labels") or {}).get("instance"),
                    "scrape_url": t.get("scrapeUrl"),
                    "health": t.get("health"),
                    "last_error": t.get("lastError") or None,
                    "last_scrape": t.get("lastScrape"),
                }
                for t in down[:SHOWN]
            ]
        }
        if not targets and params.min_up > 0:
            jobs = sorted({_job_of(t) for t in raw})
            known = f" (jobs: {', '.join(jobs)})" if jobs else " (Prometheus has no targets)"
            return CheckResult.fail(
                f"no active targets for job {params.job!r}{known}", *evidence, **details
            )
        if down:
            first = down[0]
            cause = first.get("lastError") or f"health {first.get('health')}"
            instance = (first.get("labels") or {}).get("instance") or first.get("scrapeUrl")
            reason = (
                f"{len(down)} of {len(targets)} targets of job {params.job!r} down: "
                f"{instance}: {cause}"
            )
        elif len(up) < params.min_up:
            reason = (
                f"only {len(up)} targets of job {params.job!r} up (expected >= {params.min_up})"
            )
        else:
            return CheckResult.passed(
                f"all {len(targets)} targets of job {params.job!r} are up", *evidence, **details
            )
        return CheckResult.fail(reason, *evidence, **details)


# ---------------------------------------------------------------- prometheus.rules


class RulesParams(SystemParams):
    names: list[str] = Field(
        default_factory=list,
        description="Alerting rule names (`alert:` in the rule files) that must be loaded.",
    )
    min_rules: int = Field(
        default=0, ge=0, description="At least this many alerting rules must be loaded."
    )

    @model_validator(mode="after")
    def _asks_something(self) -> RulesParams:
        if not self.names and self.min_rules == 0:
            raise ValueError("give the alert rule names to look for, or min_rules")
        return self


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    health: str
    state: str
    last_error: str


class PrometheusRules(Probe[RulesParams, list[Rule]]):
    """The named alerting rules are loaded (and at least ``min_rules`` of them).

    A named rule whose evaluation fails (health ``err``) fails the check too: it can never fire.
    """

    name = "prometheus.rules"
    summary = "Alerting rules are loaded in Prometheus"
    Params = RulesParams
    system_kinds = KINDS

    async def gather(self, params: RulesParams, ctx: ProbeContext) -> list[Rule]:
        async with _api(params, ctx) as api:
            body = await _api_envelope(api, "/api/v1/rules", "rules request", {"type": "alert"})
        data = body.get("data")
        if not isinstance(data, dict):
            raise Unreachable("Prometheus answered the rules request without rule groups")
        return [
            Rule(
                str(rule.get("name", "")),
                str(group.get("name", "")),
                str(rule.get("health", "")),
                str(rule.get("state", "")),
                str(rule.get("lastError") or ""),
            )
            for group in data.get("groups") or []
            for rule in group.get("rules") or []
            # older servers ignore ?type=alert: keep alerting rules only
            if rule.get("type", "alerting") == "alerting"
        ]

    def interpret(self, params: RulesParams, raw: Sequence[Rule]) -> CheckResult:
        by_name = {rule.name: rule for rule in raw}
        missing = [name for name in params.names if name not in by_name]
        broken = [
            by_name[name]
            for name in params.names
            if name in by_name and by_name[name].health == "err"
        ]
        evidence = [
            Measure(
                "alert_rules",
                len(raw),
                expected=f">= {params.min_rules}",
                ok=len(raw) >= params.min_rules,
            ),
            Measure("missing", len(missing), expected="0", ok=not missing),
            Measure("failing_evaluation", len(broken), expected="0", ok=not broken),
        ]
        details: dict[str, JSON] = {
            "missing": missing,
            "rules": [
                {"name": r.name, "group": r.group, "health": r.health, "state": r.state}
                for r in (by_name[n] for n in params.names if n in by_name)
            ][:SHOWN],
        }
        if broken:
            details["failing"] = [{"name": r.name, "last_error": r.last_error} for r in broken]
        problems = []
        if missing:
            problems.append(f"alert rules not loaded: {', '.join(missing)}")
        if broken:
            problems.extend(
                f"alert rule {r.name} fails to evaluate: {r.last_error}" for r in broken
            )
        if len(raw) < params.min_rules:
            problems.append(
                f"only {len(raw)} alerting rules loaded (expected >= {params.min_rules})"
            )
        if params.names:
            passed = f"all {len(params.names)} named alert rules loaded ({len(raw)} in total)"
        else:
            passed = f"{len(raw)} alerting rules loaded"
        return CheckResult.judge(
            evidence,
            passed=passed,
            failed="; ".join(problems) or None,
            details=details,
        )
