"""What a probe is: a check with typed parameters, an I/O step and a pure verdict.

A probe class declares its ``name`` (``postgres.connect``), a ``Params`` model, and two steps:
``gather`` does the I/O and returns raw observations; ``interpret`` is a pure function from
parameters and raw observations to a ``CheckResult`` (pass / warn / fail / error with the
measured evidence and the threshold). Subclassing registers the probe (``__init_subclass__``);
``run_probe`` adds the timeout, the timing and the translation of failures into results, so a
probe never lets a traceback reach the operator. Probes never change anything, but for
``http.cache_consistency``, which writes a field and puts it back (only a write shows a stale
read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from changeover.errors import ChangeoverError, UsageError
from changeover.secrets import REDACTOR

JSON = Any  # a JSON-serialisable value: str, int, float, bool, None, list, dict


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"

    @property
    def ok(self) -> bool:
        return self in (Status.PASS, Status.WARN)


@dataclass(frozen=True)
class Measure:
    """One measured value with what it was held against: ``replay_lag_ms = 3 (expected < 100)``."""

    name: str
    value: JSON
    expected: str | None = None
    ok: bool | None = None
    unit: str | None = None

    def to_json(self) -> dict[str, JSON]:
        data: dict[str, JSON] = {"name": self.name, "value": self.value}
        if self.expected is not None:
            data["expected"] = self.expected
        if self.ok is not None:
            data["ok"] = self.ok
        if self.unit is not None:
            data["unit"] = self.unit
        return data


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one probe run: a status, a one-line plain reason, and the evidence."""

    status: Status
    reason: str
    evidence: tuple[Measure, ...] = ()
    details: Mapping[str, JSON] = field(default_factory=dict)
    duration_ms: float | None = None

    @classmethod
    def judge(
        cls,
        evidence: Sequence[Measure],
        *,
        passed: str,
        failed: str | None = None,
        details: Mapping[str, JSON] | None = None,
    ) -> CheckResult:
        """PASS when every measure with an ``ok`` is true, else FAIL naming the failing ones."""
        bad = [m for m in evidence if m.ok is False]
        if not bad:
            return cls(Status.PASS, passed, tuple(evidence), details or {})
        reason = failed or "; ".join(
            f"{m.name} = {_fmt(m.value, m.unit)} (expected {m.expected})" for m in bad
        )
        return cls(Status.FAIL, reason, tuple(evidence), details or {})

    @classmethod
    def fail(cls, reason: str, *evidence: Measure, **details: JSON) -> CheckResult:
        return cls(Status.FAIL, reason, tuple(evidence), details)

    @classmethod
    def passed(cls, reason: str, *evidence: Measure, **details: JSON) -> CheckResult:
        return cls(Status.PASS, reason, tuple(evidence), details)

    def to_json(self) -> dict[str, JSON]:
        data: dict[str, JSON] = {
            "status": self.status.value,
            "reason": self.reason,
            "evidence": [m.to_json() for m in self.evidence],
        }
        if self.details:
            data["details"] = dict(self.details)
        if self.duration_ms is not None:
            data["duration_ms"] = round(self.duration_ms, 1)
        return REDACTOR.scrub_value(data)  # type: ignore[no-any-return]


def _fmt(value: JSON, unit: str | None) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


class Unreachable(ChangeoverError):
    """Raised by ``gather`` when the system cannot be reached or answers with an error.

    ``run_probe`` turns it into a FAIL with the message as the plain reason (the check did run;
    its answer is "no").
    """


class ProbeParams(BaseModel):
    """Base of every probe's parameters: unknown keys are errors; every probe has a timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(default=10.0, gt=0, le=3600, description="Seconds before giving up.")
    required: bool = Field(
        default=True, description="A failure of a required check makes `check` exit 1."
    )


class SystemParams(ProbeParams):
    """Parameters of a probe that talks to one named system of the plan."""

    system: str = Field(description="Name of a system under `systems:` in the plan.")


class ProbeContext:
    """What a probe may use: the plan's systems, secret resolution, a base dir and a clock."""

    def __init__(
        self,
        systems: Mapping[str, Any] | None = None,
        *,
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Any = None,
    ) -> None:
        self.systems: Mapping[str, Any] = systems or {}
        self.base_dir = base_dir or Path.cwd()
        self.environ = environ
        self._clock = clock

    def now(self) -> datetime:
        return self._clock() if self._clock is not None else datetime.now(UTC)

    def system(self, name: str, kinds: Sequence[str] = ()) -> Any:
        try:
            system = self.systems[name]
        except KeyError:
            raise UsageError(f"unknown system {name!r}") from None
        if kinds and system.kind not in kinds:
            raise UsageError(f"system {name!r} is a {system.kind}, expected {' or '.join(kinds)}")
        return system

    def secret(self, value: Any, *, what: str) -> str:
        """Resolve a secret reference (``${VAR}`` or ``{file: ...}``) at the moment of use."""
        from changeover.plan.secretref import resolve_ref

        return resolve_ref(value, base=self.base_dir, environ=self.environ, what=what)

    def path(self, value: str) -> Path:
        """A file path from the plan, relative to the plan's directory."""
        file = Path(value).expanduser()
        return file if file.is_absolute() else self.base_dir / file


P = TypeVar("P", bound=ProbeParams)
R = TypeVar("R")

REGISTRY: dict[str, type[Probe[Any, Any]]] = {}


class Probe(Generic[P, R]):
    """Base of every probe. Subclasses set ``name``, ``summary``, ``Params`` and the two steps."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[ProbeParams]]
    #: kinds of system the ``system`` parameter may name (checked when the plan is validated)
    system_kinds: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return  # an abstract intermediate class
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise TypeError(f"probe {name!r} is defined twice")
        if not cls.__doc__ or "summary" not in cls.__dict__:
            raise TypeError(f"probe {name!r} needs a docstring and a summary")
        REGISTRY[name] = cls

    async def gather(self, params: P, ctx: ProbeContext) -> R:
        """Do the I/O and return raw observations; raise ``Unreachable`` when it cannot."""
        raise NotImplementedError

    def interpret(self, params: P, raw: R) -> CheckResult:
        """Pure: turn raw observations into a verdict with evidence. No I/O."""
        raise NotImplementedError


async def run_probe(name: str, params: ProbeParams, ctx: ProbeContext) -> CheckResult:
    """Run one probe with its timeout; every failure becomes a ``CheckResult``, never a raise."""
    probe_cls = REGISTRY[name]
    probe = probe_cls()
    started = time.perf_counter()
    try:
        raw = await asyncio.wait_for(probe.gather(params, ctx), timeout=params.timeout)
        result = probe.interpret(params, raw)
    except TimeoutError:
        result = CheckResult.fail(f"no answer within {params.timeout:g}s (timeout)")
    except Unreachable as exc:
        result = CheckResult.fail(str(exc))
    except ChangeoverError as exc:
        result = CheckResult(Status.ERROR, str(exc))
    except Exception as exc:  # a bug in a probe must not end the whole check run
        result = CheckResult(
            Status.ERROR, f"probe {name} failed unexpectedly: {type(exc).__name__}: {exc}"
        )
    elapsed = (time.perf_counter() - started) * 1000
    return CheckResult(
        result.status,
        REDACTOR.scrub(result.reason),
        result.evidence,
        result.details,
        elapsed,
    )


def load_all() -> Mapping[str, type[Probe[Any, Any]]]:
    """Import every module of this package so that every probe class registers itself."""
    import importlib
    import pkgutil

    import changeover.probes as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package.__name__}.{info.name}")
    return REGISTRY
