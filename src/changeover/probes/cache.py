"""``http.cache_consistency``: does a write through the app reach readers of the cached path?

For each sampled id it reads the cached path (warming the cache), writes a different value of
one field through the app, reads the cached path again and counts a read that still shows the
old value as stale. Afterwards it writes the original value back, so the data is left as found.
It is the one probe that writes: point it at records kept for the purpose (a test order), never
at a customer's. The pure ``judge_samples`` fails when stale reads exceed ``max_stale``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator

from changeover.plan.secretref import SecretRef
from changeover.probes.base import CheckResult, Measure, Probe, ProbeContext, Unreachable
from changeover.probes.http import MISSING, HttpTargetParams, Session, json_lookup

PLACEHOLDER = "{value}"


class CacheConsistencyParams(HttpTargetParams):
    read: str = Field(description="Cached path to read, with {id}: '/api/v1/orders/{id}'.")
    write: str | None = Field(
        default=None, description="Path the write goes to, with {id} (default: the read path)."
    )
    method: str = Field(default="PATCH", description="HTTP method of the write.")
    body: dict[str, Any] = Field(
        description="JSON body of the write; the string '{value}' is replaced by the new value, "
        "e.g. {status: '{value}'}."
    )
    field: str = Field(description="Dotted path of the written field in the read's JSON answer.")
    values: list[str] = Field(
        min_length=2,
        description="Values to write (two at least): each sample writes one that differs from "
        "the current value, then writes the original back.",
    )
    ids: list[int | str] = Field(min_length=1, description="Ids of records kept for this check.")
    samples: int = Field(default=10, ge=1, le=1000, description="Writes to sample (ids cycled).")
    max_stale: int = Field(default=0, ge=0, description="Stale reads allowed.")
    headers: dict[str, SecretRef] = Field(
        default_factory=dict, description="Extra headers on every request (e.g. a bearer token)."
    )
    timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds before giving up.")

    @field_validator("body")
    @classmethod
    def _has_placeholder(cls, value: dict[str, Any]) -> dict[str, Any]:
        if PLACEHOLDER not in json.dumps(value):
            raise ValueError("the write body needs the placeholder '{value}' where the value goes")
        return value

    @field_validator("read", "write")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"a path starts with '/' (got {value!r})")
        return value


@dataclass(frozen=True)
class Sample:
    """One write and the read after it; ``read`` is None when the field was missing."""

    id: str
    before: Any
    wrote: Any
    read: Any
    key: str  # the path read, which names the cache entry

    @property
    def stale(self) -> bool:
        return bool(self.read == self.before and self.before != self.wrote)

    @property
    def other(self) -> bool:
        return not self.stale and bool(self.read != self.wrote)


class CacheConsistencyProbe(Probe[CacheConsistencyParams, list[Sample]]):
    """Write through the app, read back through the cached path, count the stale reads."""

    name = "http.cache_consistency"
    summary = "Writes through the app are visible on the cached read path (no stale reads)."
    Params = CacheConsistencyParams
    system_kinds: ClassVar[tuple[str, ...]] = ("app", "http")

    async def gather(self, params: CacheConsistencyParams, ctx: ProbeContext) -> list[Sample]:
        samples = []
        async with Session(params, ctx, self.system_kinds, params.headers) as session:
            headers = {**session.target.headers, "Content-Type": "application/json"}
            for number in range(params.samples):
                ident = str(params.ids[number % len(params.ids)])
                read_path = params.read.replace("{id}", ident)
                write_path = (params.write or params.read).replace("{id}", ident)
                before = await _read(session, read_path, params.field)
                wrote = next(v for v in params.values if v != before)
                await _write(session, params, write_path, headers, wrote)
                after = await _read(session, read_path, params.field)
                samples.append(Sample(ident, before, wrote, after, read_path))
                if isinstance(before, str) and before != wrote:
                    await _write(session, params, write_path, headers, before)  # as found
        return samples

    def interpret(self, params: CacheConsistencyParams, raw: list[Sample]) -> CheckResult:
        return judge_samples(raw, params.max_stale)


def judge_samples(samples: list[Sample], max_stale: int) -> CheckResult:
    stale = [s for s in samples if s.stale]
    other = [s for s in samples if s.other]
    evidence = [
        Measure("stale_reads", len(stale), f"<= {max_stale}", len(stale) <= max_stale),
        Measure("samples", len(samples)),
    ]
    if other:
        evidence.append(Measure("unexpected_reads", len(other), "0", False))
    details = {
        "stale": [{"key": s.key, "wrote": s.wrote, "read": s.read} for s in stale],
        "unexpected": [{"key": s.key, "wrote": s.wrote, "read": s.read} for s in other],
    }
    keys = ", ".join(sorted({s.key for s in stale}))
    failed = None
    if len(stale) > max_stale:
        failed = (
            f"{len(stale)} of {len(samples)} reads after a write returned the old value "
            f"(allowed {max_stale}): stale {keys}"
        )
    elif other:
        failed = f"{len(other)} reads after a write returned neither the old nor the new value"
    return CheckResult.judge(
        evidence,
        passed=f"{len(samples)} writes, every read after them fresh ({len(stale)} stale)",
        failed=failed,
        details=details,
    )


async def _read(session: Session, path: str, field: str) -> Any:
    exchange = await session.send("GET", path)
    if exchange.status != 200:
        raise Unreachable(f"GET {exchange.url} answered {exchange.status}, expected 200")
    try:
        value = json_lookup(json.loads(exchange.body), field)
    except ValueError as exc:
        raise Unreachable(f"GET {exchange.url} did not answer JSON") from exc
    if value is MISSING:
        raise Unreachable(f"GET {exchange.url}: the answer has no {field!r}")
    return value


async def _write(
    session: Session,
    params: CacheConsistencyParams,
    path: str,
    headers: dict[str, str],
    value: str,
) -> None:
    body = json.dumps(_fill(params.body, value))
    exchange = await session.send(params.method, path, headers, body)
    if not 200 <= exchange.status < 300:
        raise Unreachable(
            f"the write {params.method} {exchange.url} answered {exchange.status}, expected 2xx"
        )


def _fill(template: Any, value: str) -> Any:
    if isinstance(template, str):
        return value if template == PLACEHOLDER else template.replace(PLACEHOLDER, value)
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, value) for v in template]
    return template
