"""Probes that count recent log lines matching a pattern: in local files, Loki or Elasticsearch.

All three take a window (``since: 15m``) and bounds (``min_count`` / ``max_count``): "no user
complaints in the logs" is ``max_count: 0``, "logs are flowing" is ``min_count: 1``. Counting is
the I/O step; the verdict (``judge_count``) is a pure function shared by the three.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from changeover.errors import UsageError
from changeover.probes._jsonapi import JsonApi
from changeover.probes.base import (
    JSON,
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    SystemParams,
    Unreachable,
)
from changeover.units import Duration, format_duration

#: matching lines / entries kept as examples in a result's details (the newest ones)
SAMPLES = 3
#: an example line is cut to this many characters
SAMPLE_CHARS = 200


# ---------------------------------------------------------------- shared: bounds and verdict


class CountBounds(ProbeParams):
    """The window and the bounds every ``logs.*`` probe shares."""

    since: Duration = Field(
        default=timedelta(minutes=15),
        description="Only entries newer than this (e.g. '15m', '2h') are counted.",
    )
    min_count: int | None = Field(
        default=None, ge=0, description="At least this many matching entries (1: logs flow)."
    )
    max_count: int | None = Field(
        default=None, ge=0, description="At most this many matching entries (0: none at all)."
    )

    @field_validator("since")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("since must be a positive duration such as '15m'")
        return value

    @model_validator(mode="after")
    def _has_bound(self) -> CountBounds:
        if self.min_count is None and self.max_count is None:
            raise ValueError("give min_count, max_count or both")
        if (
            self.min_count is not None
            and self.max_count is not None
            and self.min_count > self.max_count
        ):
            raise ValueError(
                f"min_count {self.min_count} is above max_count {self.max_count}: "
                "no count satisfies both"
            )
        return self


def expected_count(min_count: int | None, max_count: int | None) -> str:
    if min_count is not None and max_count is not None:
        if min_count == max_count:
            return f"= {min_count}"
        return f"between {min_count} and {max_count}"
    if max_count is not None:
        return f"<= {max_count}"
    return f">= {min_count}"


def judge_count(
    params: CountBounds,
    count: int,
    *,
    noun: str,
    where: str,
    complete: bool = True,
    details: Mapping[str, JSON] | None = None,
) -> CheckResult:
    """Hold ``count`` against the bounds. ``complete=False``: counting stopped early, so
    ``count`` is a lower bound (enough to fail a ``max_count`` or pass a ``min_count``).
    """
    expected = expected_count(params.min_count, params.max_count)
    too_many = params.max_count is not None and count > params.max_count
    too_few = params.min_count is not None and count < params.min_count
    # A lower bound settles a verdict only one way: above max_count fails, reaching
    # min_count passes when there is no max_count. Anything else stays unknown: fail.
    settled = complete or too_many or (params.max_count is None and not too_few)
    ok = settled and not too_many and not too_few
    amount = f"{count}" if complete else f"at least {count}"
    window = format_duration(params.since)
    measure = Measure(f"matching_{noun}", count, expected=expected, ok=ok)
    all_details = {"complete": complete, **(details or {})}
    text = f"{amount} matching {noun} {where} in the last {window} (expected {expected})"
    if not settled:
        text = f"could not count every entry: {text}"
    if too_few:
        text = f"only {text}"
    return CheckResult.judge([measure], passed=text, failed=text, details=all_details)


def _sample(line: str) -> str:
    line = line.rstrip("\r\n")
    return line if len(line) <= SAMPLE_CHARS else line[: SAMPLE_CHARS - 1] + "…"


# ---------------------------------------------------------------- logs.file: timestamps

_ISO = re.compile(
    r"(?P<y>\d{4})[-/](?P<mo>\d{2})[-/](?P<d>\d{2})[T ]"
    r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:[.,](?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?"
)
_SYSLOG = re.compile(
    r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(?P<d>\d{1,2}) "
    r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})\b"
)
# Common/combined log format of nginx and Apache: 127.0.0.1 - - [26/Nov/2026:12:00:00 +0000]
_CLF = re.compile(
    r"\[(?P<d>\d{2})/(?P<mon>[A-Z][a-z]{2})/(?P<y>\d{4}):"
    r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2}) (?P<tz>[+-]\d{4})\]"
)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_JSON_TIME_KEYS = ("time", "ts", "timestamp", "@timestamp")
#: how far into a line the access-log timestamp may start (after the client address and user)
_CLF_REACH = 120


def _offset(text: str | None, default: tzinfo | None) -> tzinfo | None:
    if not text:
        return default
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return timezone(timedelta(minutes=minutes if text[0] == "+" else -minutes))


def _aware(moment: datetime) -> datetime:
    """A naive time is this machine's local time, with the offset in force on that date."""
    return moment if moment.tzinfo is not None else moment.astimezone()


class TimestampParser:
    """Finds the time a log line was written (see ``FileLog`` for the accepted formats).

    ``tz`` is the zone of timestamps written without an offset (None: this machine's local
    time); ``now`` supplies the year of syslog timestamps, which have none (a date more than a
    day ahead means last year's).
    """

    def __init__(self, tz: tzinfo | None, now: datetime) -> None:
        self.tz = tz
        self.now = now

    def parse(self, line: str) -> datetime | None:
        head = line.lstrip(" \t[")
        if head.startswith("{"):
            return self._json(line)
        match = _ISO.match(head)
        if match:
            return self._iso(match)
        match = _SYSLOG.match(head)
        if match:
            return self._syslog(match)
        match = _CLF.search(line, 0, _CLF_REACH)
        if match:
            try:
                return datetime(
                    int(match["y"]),
                    _MONTHS[match["mon"]],
                    int(match["d"]),
                    int(match["h"]),
                    int(match["mi"]),
                    int(match["s"]),
                    tzinfo=_offset(match["tz"], None),
                )
            except (KeyError, ValueError):
                return None
        return None

    def _iso(self, match: re.Match[str]) -> datetime | None:
        frac = (match["frac"] or "0")[:6].ljust(6, "0")
        try:
            return _aware(
                datetime(
                    int(match["y"]),
                    int(match["mo"]),
                    int(match["d"]),
                    int(match["h"]),
                    int(match["mi"]),
                    int(match["s"]),
                    int(frac),
                    tzinfo=_offset(match["tz"], self.tz),
                )
            )
        except ValueError:  # 2026-13-45: not a date after all
            return None

    def _syslog(self, match: re.Match[str]) -> datetime | None:
        now = self.now.astimezone(self.tz)
        try:
            stamp = datetime(
                now.year,
                _MONTHS[match["mon"]],
                int(match["d"]),
                int(match["h"]),
                int(match["mi"]),
                int(match["s"]),
                tzinfo=self.tz,
            )
            if _aware(stamp) - now > timedelta(days=1):  # "Dec 31" read on Jan 1st
                stamp = stamp.replace(year=now.year - 1)
        except ValueError:  # Feb 29 outside a leap year
            return None
        return _aware(stamp)

    def _json(self, line: str) -> datetime | None:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        for key in _JSON_TIME_KEYS:
            value = record.get(key)
            if isinstance(value, str):
                match = _ISO.match(value.strip())
                if match:
                    return self._iso(match)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                return _epoch(float(value))
        return None


def _epoch(value: float) -> datetime | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    for scale in (1.0, 1e3, 1e6, 1e9):
        seconds = value / scale
        if seconds < 1e11:  # before the year 5138: this is the right unit
            try:
                return datetime.fromtimestamp(seconds, UTC)
            except (OverflowError, OSError, ValueError):
                return None
    return None


# ---------------------------------------------------------------- logs.file: counting


@dataclass
class Tally:
    """What counting one file found: the matches in the window and the newest examples."""

    count: int = 0
    samples: list[str] = field(default_factory=list)
    lines_read: int = 0
    stopped_early: bool = False
    long_lines_cut: int = 0


#: a line stamped this much before the window ends the backward scan; lines of concurrent
#: writers are not in strict order, so the scan goes on a little past the window's start
OUT_OF_ORDER = timedelta(minutes=5)


def count_recent(
    lines_newest_first: Iterable[str],
    pattern: re.Pattern[str],
    window_start: datetime,
    file_mtime: datetime,
    parse: TimestampParser,
) -> Tally:
    """Count lines matching ``pattern`` written at or after ``window_start``.

    Lines come newest first. A line without a timestamp belongs to the stamped line above it
    (a stack trace belongs to its log line); the unstamped lines at the very top of a file take
    the file's modification time. The scan stops at a stamped line older than the window by
    more than ``OUT_OF_ORDER``.
    """
    tally = Tally()
    # Matching unstamped lines waiting for the stamp above them: a count and a few examples,
    # never the lines themselves (a file without any stamp may be gigabytes of them).
    pending = 0
    pending_samples: list[str] = []
    for line in lines_newest_first:
        tally.lines_read += 1
        stamp = parse.parse(line)
        matched = pattern.search(line) is not None
        if stamp is None:
            if matched:
                pending += 1
                if len(pending_samples) < SAMPLES:
                    pending_samples.append(_sample(line))
            continue
        if stamp >= window_start:
            if matched:
                pending += 1
                pending_samples.append(_sample(line))
            _take(tally, pending, pending_samples)
        pending, pending_samples = 0, []
        if stamp < window_start - OUT_OF_ORDER:
            tally.stopped_early = True
            return tally
    if pending and file_mtime >= window_start:
        _take(tally, pending, pending_samples)
    return tally


def _take(tally: Tally, count: int, samples: list[str]) -> None:
    tally.count += count
    tally.samples.extend(samples[: max(0, SAMPLES - len(tally.samples))])


#: bytes read per step of the backward scan
BLOCK = 1 << 16
#: a longer line is cut to its first this many bytes (its timestamp is at the start)
MAX_LINE = 1 << 20


def read_lines_backward(
    file: BinaryIO, *, deadline: float | None = None, tally: Tally | None = None
) -> Iterator[str]:
    """The lines of ``file`` from the last to the first, reading fixed-size blocks from the end,
    so a 10 GB log with a 15-minute window costs a few reads, not 10 GB of memory.
    """
    file.seek(0, os.SEEK_END)
    position = file.tell()
    partial = b""  # the start of the line being assembled is still to come
    first = True
    cut = False
    while position > 0:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        size = min(BLOCK, position)
        position -= size
        file.seek(position)
        pieces = (file.read(size) + partial).split(b"\n")
        if len(pieces) > 1:
            cut = False  # the long line, if any, is complete now
        partial = pieces[0]
        if len(partial) > MAX_LINE:
            partial = partial[:MAX_LINE]  # keep the beginning: earlier bytes are prepended
            if tally is not None and not cut:
                tally.long_lines_cut += 1
            cut = True
        for raw in reversed(pieces[1:]):
            if first and raw == b"":  # the newline that ends the file
                first = False
                continue
            first = False
            yield raw.decode("utf-8", errors="replace").rstrip("\r")
    if partial or not first:
        yield partial.decode("utf-8", errors="replace").rstrip("\r")


# ---------------------------------------------------------------- logs.file


class FileParams(CountBounds):
    path: str = Field(
        min_length=1,
        description=(
            "Log file, relative to the plan's directory; a glob such as 'logs/app-*.log' "
            "counts over every matching file."
        ),
    )
    pattern: str = Field(
        min_length=1,
        description="Regular expression (Python syntax) searched in each line, e.g. 'ERROR|panic'.",
    )
    timezone: str = Field(
        default="local",
        description=(
            "Zone of timestamps written without an offset: 'local' (this machine's), 'UTC' or "
            "an IANA name such as 'Europe/Berlin'."
        ),
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "local":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


@dataclass(frozen=True)
class FileCount:
    path: str
    count: int
    lines_read: int
    skipped: bool = False  # not modified within the window: cannot hold a recent line
    stopped_early: bool = False
    long_lines_cut: int = 0


@dataclass(frozen=True)
class FileRaw:
    files: tuple[FileCount, ...]
    samples: tuple[str, ...] = ()


def _zone(name: str) -> tzinfo | None:
    return None if name == "local" else ZoneInfo(name)


def _has_magic(text: str) -> bool:
    return any(char in text for char in "*?[")


class FileLog(Probe[FileParams, FileRaw]):
    """Count lines of a log file that match ``pattern`` and were written within ``since``.

    When a line was written is read from its start: an ISO-8601 time
    (``2026-11-26T12:00:00Z``, ``2026-11-26 12:00:00,123``, optionally in brackets), a syslog
    time (``Nov 26 12:00:00``, this year), an access-log time (``[26/Nov/2026:12:00:00 +0000]``),
    or, for a JSON line, its ``time``/``ts``/``timestamp``/``@timestamp`` field (ISO text or
    epoch number). A time without an offset is in ``timezone``. A line without a time (a stack
    trace, a continuation) inherits the time of the nearest stamped line above it; lines at the
    top of a file before any stamp count only when the file was modified within the window. A
    file not modified within the window is skipped. The file is read backwards from its end and
    the scan stops at a line stamped more than 5 minutes before the window. ``.gz`` files are
    not decompressed (rotated logs are old and therefore skipped anyway).
    """

    name = "logs.file"
    summary = "Count recent log lines matching a pattern in local files"
    Params = FileParams

    async def gather(self, params: FileParams, ctx: ProbeContext) -> FileRaw:
        pattern = re.compile(params.pattern)
        now = ctx.now()
        window_start = now - params.since
        target = ctx.path(params.path)
        if _has_magic(params.path):
            files = sorted(Path(p) for p in glob.glob(str(target), recursive=True))
            files = [f for f in files if f.is_file()]
            if not files:
                raise Unreachable(f"no log file matches {target}")
        else:
            if not target.exists():
                raise Unreachable(f"log file {target} not found")
            if target.is_dir():
                raise Unreachable(
                    f"log file {target} is a directory; give a file or a glob such as "
                    f"{target}/*.log"
                )
            files = [target]
        parse = TimestampParser(_zone(params.timezone), now)
        deadline = time.monotonic() + params.timeout
        # Reading files blocks: do it in a thread so other probes keep running meanwhile.
        return await asyncio.to_thread(_count_files, files, pattern, window_start, parse, deadline)

    def interpret(self, params: FileParams, raw: FileRaw) -> CheckResult:
        total = sum(f.count for f in raw.files)
        if len(raw.files) == 1:
            where = f"in {raw.files[0].path}"
        else:
            where = f"in {len(raw.files)} files matching {params.path}"
        details: dict[str, JSON] = {
            "files": [
                {
                    "path": f.path,
                    "count": f.count,
                    "lines_read": f.lines_read,
                    **({"skipped": "not modified within the window"} if f.skipped else {}),
                    **({"long_lines_cut": f.long_lines_cut} if f.long_lines_cut else {}),
                }
                for f in raw.files
            ],
            "samples": list(raw.samples),
        }
        return judge_count(params, total, noun="lines", where=where, details=details)


def _count_files(
    files: list[Path],
    pattern: re.Pattern[str],
    window_start: datetime,
    parse: TimestampParser,
    deadline: float,
) -> FileRaw:
    counts = []
    samples: list[str] = []
    for file in files:
        try:
            mtime = datetime.fromtimestamp(file.stat().st_mtime, UTC)
            if mtime < window_start - OUT_OF_ORDER:
                counts.append(FileCount(str(file), 0, 0, skipped=True))
                continue
            with open(file, "rb") as handle:
                tally = Tally()
                lines = read_lines_backward(handle, deadline=deadline, tally=tally)
                found = count_recent(lines, pattern, window_start, mtime, parse)
        except FileNotFoundError as exc:  # rotated away between the glob and the read
            raise Unreachable(f"log file {file} not found") from exc
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise Unreachable(f"cannot read log file {file}: {reason}") from exc
        counts.append(
            FileCount(
                str(file),
                found.count,
                found.lines_read,
                stopped_early=found.stopped_early,
                long_lines_cut=tally.long_lines_cut,
            )
        )
        samples.extend(found.samples[: max(0, SAMPLES - len(samples))])
    return FileRaw(tuple(counts), tuple(samples))


# ---------------------------------------------------------------- logs.loki


class LokiParams(CountBounds, SystemParams):
    query: str = Field(
        min_length=1,
        description='LogQL log query, e.g. \'{app="api"} |= "error"\' (not a metric query).',
    )


@dataclass(frozen=True)
class LokiRaw:
    count: int
    complete: bool
    samples: tuple[str, ...] = ()
    pages: int = 1


#: entries asked per request; Loki's default max_entries_limit_per_query is 5000
LOKI_PAGE = 1000


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (a float would round to about 256 ns)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def loki_stop_at(params: CountBounds) -> int:
    """How many entries settle the verdict: one past ``max_count``, else ``min_count``."""
    if params.max_count is not None:
        return params.max_count + 1
    return max(params.min_count or 0, 1)


class LokiLog(Probe[LokiParams, LokiRaw]):
    """Count the log entries a LogQL query returns for the last ``since`` in Loki.

    Reads ``/loki/api/v1/query_range`` newest first in pages of 1000 entries and stops as soon
    as the verdict is settled: one entry past ``max_count`` fails, ``min_count`` entries pass
    when there is no ``max_count``. The reason then says "at least N". (A ``count_over_time``
    metric query would give the exact total, but needs the query rewritten and gives no
    example lines.)
    """

    name = "logs.loki"
    summary = "Count recent log entries matching a LogQL query in Loki"
    Params = LokiParams
    system_kinds = ("loki",)

    async def gather(self, params: LokiParams, ctx: ProbeContext) -> LokiRaw:
        now = ctx.now()
        start = _ns(now - params.since)
        end = _ns(now)
        stop_at = loki_stop_at(params)
        count = 0
        samples: list[str] = []
        seen_at_boundary: set[tuple[Any, ...]] = set()
        pages = 0
        async with JsonApi.for_system(
            "Loki", params.system, ctx, self.system_kinds, params.timeout
        ) as api:
            while True:
                pages += 1
                entries = await _loki_page(api, params.query, start, end)
                fresh = [e for e in entries if e not in seen_at_boundary]
                count += len(fresh)
                samples.extend(_sample(e[2]) for e in fresh[: max(0, SAMPLES - len(samples))])
                if len(entries) < LOKI_PAGE:
                    return LokiRaw(count, True, tuple(samples), pages)
                if count >= stop_at or not fresh:
                    # settled; or a whole page of entries sharing one nanosecond (no progress)
                    return LokiRaw(count, False, tuple(samples), pages)
                # ``end`` is exclusive: ask again up to and including the oldest nanosecond
                # seen, since the page may have cut through entries sharing it.
                oldest = min(e[1] for e in entries)
                end = oldest + 1
                seen_at_boundary = {e for e in entries if e[1] == oldest} | {
                    e for e in seen_at_boundary if e[1] == oldest
                }

    def interpret(self, params: LokiParams, raw: LokiRaw) -> CheckResult:
        return judge_count(
            params,
            raw.count,
            noun="entries",
            where="in Loki",
            complete=raw.complete,
            details={"query": params.query, "pages": raw.pages, "samples": list(raw.samples)},
        )


async def _loki_page(api: JsonApi, query: str, start: int, end: int) -> list[tuple[Any, int, str]]:
    """One page, newest first, as (stream labels, timestamp ns, line) entries."""
    answer = await api.get(
        "/loki/api/v1/query_range",
        {
            "query": query,
            "start": str(start),
            "end": str(end),
            "limit": str(LOKI_PAGE),
            "direction": "backward",
        },
    )
    body = answer.body
    if answer.status != 200:
        # Loki answers errors as plain text ("parse error at line 1, col 5: ..."); a proxy or
        # a newer version may send JSON with a message.
        message = (body.get("message") or body.get("error")) if isinstance(body, dict) else None
        if message and 400 <= answer.status < 500:
            raise Unreachable(f"Loki rejected the query: {message}")
        if answer.text.strip() and 400 <= answer.status < 500:
            raise Unreachable(f"Loki rejected the query: {answer.snippet()}")
        raise api.unexpected(answer, "the query")
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise api.unexpected(answer, "the query")
    data = body["data"]
    if data.get("resultType") != "streams":
        raise UsageError(
            f'logs.loki needs a log query such as \'{{app="api"}} |= "error"\'; '
            f"{query!r} is a metric query (result type {data.get('resultType')})"
        )
    entries = []
    for stream in data.get("result") or []:
        labels = tuple(sorted((stream.get("stream") or {}).items()))
        for stamp, line, *_ in stream.get("values") or []:
            entries.append((labels, int(stamp), str(line)))
    entries.sort(key=lambda e: e[1], reverse=True)
    return entries


# ---------------------------------------------------------------- logs.elasticsearch

_INDEX = re.compile(r'^[^/\\?#"<>|\s]+$')


class ElasticsearchParams(CountBounds, SystemParams):
    index: str = Field(
        min_length=1,
        description="Index, alias or pattern such as 'logs-api-*' (comma-separated for several).",
    )
    query: str = Field(
        default="*",
        description="Lucene query string, e.g. 'level:error AND service:api' ('*': every entry).",
    )
    time_field: str = Field(
        default="@timestamp", min_length=1, description="Date field the window applies to."
    )

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not _INDEX.match(value):
            raise ValueError(
                "an index name cannot contain '/', '\\', '?', '#', '\"', '<', '>', '|' or spaces"
            )
        return value


@dataclass(frozen=True)
class ElasticsearchRaw:
    count: int
    shards_total: int
    shards_failed: int
    shard_failure: str = ""


class ElasticsearchLog(Probe[ElasticsearchParams, ElasticsearchRaw]):
    """Count documents of an index matching a query string within ``since`` (``_count`` API).

    The window is absolute: ``time_field >= now - since`` with now from changeover's clock. A
    count that some shards could not contribute to fails the check: it would undercount.
    """

    name = "logs.elasticsearch"
    summary = "Count recent log documents matching a query in Elasticsearch"
    Params = ElasticsearchParams
    system_kinds = ("elasticsearch",)

    async def gather(self, params: ElasticsearchParams, ctx: ProbeContext) -> ElasticsearchRaw:
        start = ctx.now() - params.since
        body = {
            "query": {
                "bool": {
                    "filter": [
                        {"query_string": {"query": params.query}},
                        {
                            "range": {
                                params.time_field: {
                                    "gte": start.astimezone(UTC).isoformat(timespec="milliseconds"),
                                    "format": "strict_date_optional_time",
                                }
                            }
                        },
                    ]
                }
            }
        }
        path = f"/{quote(params.index, safe=',*')}/_count"
        async with JsonApi.for_system(
            "Elasticsearch", params.system, ctx, self.system_kinds, params.timeout
        ) as api:
            answer = await api.post(path, body)
        result = answer.body
        if isinstance(result, dict) and isinstance(result.get("error"), dict | str):
            raise Unreachable(f"Elasticsearch rejected the count: {_es_error(result['error'])}")
        if answer.status != 200 or not isinstance(result, dict) or "count" not in result:
            raise api.unexpected(answer, "the count")
        shards = result.get("_shards") or {}
        failures = shards.get("failures") or []
        first = _es_error(failures[0].get("reason", "")) if failures else ""
        return ElasticsearchRaw(
            int(result["count"]),
            int(shards.get("total", 0)),
            int(shards.get("failed", 0)),
            first,
        )

    def interpret(self, params: ElasticsearchParams, raw: ElasticsearchRaw) -> CheckResult:
        details = {"index": params.index, "query": params.query, "shards": raw.shards_total}
        if raw.shards_failed:
            cause = f": {raw.shard_failure}" if raw.shard_failure else ""
            return CheckResult.fail(
                f"the count of {params.index} is incomplete: {raw.shards_failed} of "
                f"{raw.shards_total} shards failed{cause}",
                Measure("failed_shards", raw.shards_failed, expected="0", ok=False),
                **details,
            )
        return judge_count(
            params, raw.count, noun="documents", where=f"in {params.index}", details=details
        )


def _es_error(error: Any) -> str:
    """``index_not_found_exception: no such index [logs]`` from an Elasticsearch error object."""
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return str(error)
    causes = error.get("root_cause") or []
    cause = causes[0] if causes and isinstance(causes[0], dict) else error
    kind = cause.get("type") or error.get("type") or "error"
    reason = cause.get("reason") or error.get("reason") or ""
    return f"{kind}: {reason}" if reason else str(kind)
