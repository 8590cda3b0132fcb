"""What a load run measured and whether it met its SLOs: counters, HDR histograms, verdicts.

Pure. The engine fills a ``Tally``; worker processes ship theirs encoded (``Tally.to_wire``)
and the parent merges them (``Tally.merge``). ``LoadResult.summary`` gives the numbers people
read; ``parse_slos`` and ``judge`` check them against ``--slo``. An error is what the proxy's
error rate counts too: a 5xx answer or no answer at all (4xx are listed, not errors). Late
and missed sends always fail a run: the generator did not offer the load that was asked for.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from changeover.errors import UsageError
from changeover.units import parse_duration

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3  # 1 µs .. 60 s at 3 significant digits
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_seconds(histogram: HdrHistogram, seconds: float) -> None:
    """Record a duration; beyond the histogram's range it is clamped, never dropped."""
    histogram.record_value(min(HIGHEST_US, max(LOWEST_US, int(seconds * 1e6))))


def decode_histogram(encoded: bytes) -> HdrHistogram:
    """An HDR-encoded histogram (``b""`` for an empty one) in this module's range."""
    histogram = new_histogram()
    if encoded:
        histogram.add(HdrHistogram.decode(encoded))
    return histogram


@dataclass
class Tally:
    """One process's (or the merged) counts; every due request ends in exactly one bucket:
    ``scheduled = sent + missed`` and ``sent = answered + sum(failures) (+ in flight)``."""

    scheduled: int = 0  # requests whose due time came
    sent: int = 0
    answered: int = 0  # responses received, any status
    late: int = 0  # sent more than LATE_AFTER after their due time
    late_at_cap: int = 0  # of those, sent when every allowed connection was busy
    missed: int = 0  # due, never sent (no connection, loop too busy, run over)
    connections: int = 0  # opened
    cpu_wait: float = 0.0  # seconds the generator was ready to run but had no CPU (Linux)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # no answer, by reason
    latency: HdrHistogram = field(default_factory=new_histogram)  # from the scheduled time
    send_lag: HdrHistogram = field(default_factory=new_histogram)  # sent − scheduled

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500) + sum(
            self.failures.values()
        )

    def counters(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "answered": self.answered,
            "late": self.late,
            "late_at_cap": self.late_at_cap,
            "missed": self.missed,
            "connections": self.connections,
            "cpu_wait_s": round(self.cpu_wait, 3),
            "statuses": dict(self.statuses),
            "failures": dict(self.failures),
        }

    def to_wire(self) -> dict[str, Any]:
        """Picklable and small: counters plus the histograms HDR-encoded."""
        return {
            **self.counters(),
            "latency": self.latency.encode() if self.latency.get_total_count() else b"",
            "send_lag": self.send_lag.encode() if self.send_lag.get_total_count() else b"",
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Tally:
        return cls(
            scheduled=wire["scheduled"],
            sent=wire["sent"],
            answered=wire["answered"],
            late=wire["late"],
            late_at_cap=wire["late_at_cap"],
            missed=wire["missed"],
            connections=wire["connections"],
            cpu_wait=wire["cpu_wait_s"],
            statuses=Counter(wire["statuses"]),
            failures=Counter(wire["failures"]),
            latency=decode_histogram(wire.get("latency", b"")),
            send_lag=decode_histogram(wire.get("send_lag", b"")),
        )

    @classmethod
    def merge(cls, tallies: list[Tally]) -> Tally:
        total = cls()
        for tally in tallies:
            total.scheduled += tally.scheduled
            total.sent += tally.sent
            total.answered += tally.answered
            total.late += tally.late
            total.late_at_cap += tally.late_at_cap
            total.cpu_wait += tally.cpu_wait
            total.missed += tally.missed
            total.connections += tally.connections
            total.statuses.update(tally.statuses)
            total.failures.update(tally.failures)
            total.latency.add(tally.latency)
            total.send_lag.add(tally.send_lag)
        return total


def _ms(histogram: HdrHistogram) -> dict[str, float | None]:
    if histogram.get_total_count() == 0:
        return {name: None for name in [*PERCENTILES, "max"]}
    values = {
        name: histogram.get_value_at_percentile(pct) / 1000 for name, pct in PERCENTILES.items()
    }
    values["max"] = histogram.get_max_value() / 1000
    return values


@dataclass
class LoadResult:
    """A finished (or interrupted) run: what was asked, what happened."""

    url: str
    rate: float
    duration: float  # seconds of schedule asked for
    window: float  # the achieved rate's base: the schedule's span, longer if answers came later
    processes: int
    tally: Tally
    mix: str = ""
    notes: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def achieved_rate(self) -> float:
        """Answers (any status) per second of the run."""
        return self.tally.answered / self.window if self.window > 0 else 0.0

    @property
    def error_rate(self) -> float | None:
        return self.tally.errors / self.tally.sent if self.tally.sent else None

    def latency_ms(self) -> dict[str, float | None]:
        return _ms(self.tally.latency)

    def summary(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "url": self.url,
            "mix": self.mix,
            "rate": self.rate,
            "duration_s": self.duration,
            "window_s": round(self.window, 3),
            "processes": self.processes,
            **tally.counters(),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "achieved_rate": round(self.achieved_rate, 1),
            "errors": tally.errors,
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms(),
            "send_lag_ms": _ms(tally.send_lag),
            "notes": list(self.notes),
            "interrupted": self.interrupted,
        }


# --- SLOs ----------------------------------------------------------------------------------------

_SLO = re.compile(r"^\s*([a-z0-9]+)\s*(<=|>=|<|>)\s*(.+?)\s*$")
_LATENCY_METRICS = ("p50", "p90", "p95", "p99", "p999", "max")
_METRICS = (*_LATENCY_METRICS, "errors", "rate")


@dataclass(frozen=True)
class Slo:
    metric: str  # p50 … max (milliseconds), errors (percent), rate (requests/s)
    op: str
    threshold: float
    text: str


def parse_slos(text: str) -> list[Slo]:
    """``'p95<100ms,errors<1%,rate>4900'`` → SLOs; a plain message for anything else."""
    slos = []
    for part in (p for p in text.split(",") if p.strip()):
        match = _SLO.match(part)
        if match is None or match.group(1) not in _METRICS:
            raise UsageError(
                f"--slo {part.strip()!r}: expected METRIC<VALUE with METRIC one of "
                f"{', '.join(_METRICS)}, e.g. 'p95<100ms,errors<1%,rate>4900'"
            )
        metric, op, raw = match.groups()
        slos.append(Slo(metric, op, _threshold(metric, raw, part.strip()), part.strip()))
    if not slos:
        raise UsageError("--slo is empty; e.g. 'p95<100ms,errors<1%'")
    return slos


def _threshold(metric: str, raw: str, part: str) -> float:
    try:
        if metric in _LATENCY_METRICS:
            return parse_duration(raw).total_seconds() * 1000
        if metric == "errors":
            return float(raw[:-1]) if raw.endswith("%") else float(raw) * 100
        return float(raw)
    except ValueError as exc:
        unit = {"errors": "a percentage like 1%", "rate": "requests/s like 4900"}
        expected = unit.get(metric, "a duration like 100ms or 1.5s")
        raise UsageError(f"--slo {part!r}: expected {expected}, got {raw!r}") from exc


@dataclass(frozen=True)
class SloVerdict:
    slo: Slo
    actual: float | None  # ms, percent or requests/s; None when nothing was measured
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"slo": self.slo.text, "actual": self.actual, "passed": self.passed}


@dataclass(frozen=True)
class Verdict:
    passed: bool
    slos: list[SloVerdict]
    reasons: list[str]  # every reason the run failed, in plain words


def judge(result: LoadResult, slos: list[Slo]) -> Verdict:
    latency = result.latency_ms()
    error_rate = result.error_rate
    verdicts, reasons = [], []
    for slo in slos:
        actual: float | None
        if slo.metric in _LATENCY_METRICS:
            actual = latency[slo.metric]
        elif slo.metric == "errors":
            actual = None if error_rate is None else error_rate * 100
        else:
            actual = result.achieved_rate
        passed = actual is not None and _holds(actual, slo.op, slo.threshold)
        verdicts.append(SloVerdict(slo, actual, passed))
        if not passed:
            shown = "nothing measured" if actual is None else _shown(slo.metric, actual)
            reasons.append(f"SLO {slo.text} failed: {shown}")
    tally = result.tally
    if tally.late:
        reasons.append(
            f"{tally.late} requests were sent more than 10 ms after their scheduled time: the "
            f"load asked for was not offered on time ({_why_late(result)})"
        )
    if tally.missed:
        reasons.append(f"{tally.missed} due requests were never sent")
    return Verdict(not reasons, verdicts, reasons)


def _why_late(result: LoadResult) -> str:
    tally = result.tally
    why = [f"{tally.late_at_cap} of them while every allowed connection was busy"]
    if tally.cpu_wait >= 0.01 * result.window * result.processes:
        why.append(
            f"the generator waited {tally.cpu_wait:.1f} s for a CPU during the run: the machine "
            "is overloaded"
        )
    else:
        why.append("the generator itself was too busy")
    if tally.late_at_cap:
        why.append("raise --connections if the server allows more")
    return "; ".join(why)


def _holds(actual: float, op: str, threshold: float) -> bool:
    if math.isnan(actual):
        return False
    return {
        "<": actual < threshold,
        "<=": actual <= threshold,
        ">": actual > threshold,
        ">=": actual >= threshold,
    }[op]


def _shown(metric: str, actual: float) -> str:
    if metric == "errors":
        return f"{actual:.3g}%"
    if metric == "rate":
        return f"{actual:,.1f} requests/s"
    return f"{actual:.3f} ms"


# --- live progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One second (or so) of a run, for the live display and the demo."""

    elapsed: float
    rate: float  # answers per second in this interval
    answered: int  # so far
    errors: int  # so far
    late: int  # so far
    missed: int  # so far
    latency_ms: dict[str, float | None]  # of this interval's answers

    def to_json(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
            "answered": self.answered,
            "errors": self.errors,
            "late": self.late,
            "missed": self.missed,
            "latency_ms": self.latency_ms,
        }


def progress(
    elapsed: float, seconds: float, now: Tally, before_answered: int, interval: HdrHistogram
) -> Progress:
    """Progress from the running totals, the answers at the last report and this interval's
    latency histogram."""
    return Progress(
        elapsed=elapsed,
        rate=(now.answered - before_answered) / seconds if seconds > 0 else 0.0,
        answered=now.answered,
        errors=now.errors,
        late=now.late,
        missed=now.missed,
        latency_ms=_ms(interval),
    )
