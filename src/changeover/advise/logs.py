"""An error-log summary: the lines that look like errors, grouped by message, most frequent first.

Timestamps, pids, numbers, ids and quoted values are masked before grouping, so one failure
logged a thousand times is one line with a count; secrets (resolved plan secrets, passwords in
URLs, ``password=`` / ``token=`` values, bearer tokens) are masked before anything is kept.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from changeover.errors import UsageError
from changeover.secrets import REDACTOR

ERROR_PATTERN = re.compile(
    r"\b(ERROR|FATAL|CRITICAL|PANIC|Traceback|Exception|[A-Za-z]+Error)\b|\blevel=error\b"
)
TOP_MESSAGES = 10
MESSAGE_LIMIT = 200

_SECRETS = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@"), r"\1:***@"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\"?\s*[=:]\s*\"?)[^\s\",;&]+"
        ),
        r"\1\2***",
    ),
)
# Masked before grouping, in this order: what varies between two reports of the same failure.
_VARIABLE = (
    (re.compile(r"^\S*\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*\s*"), ""),
    (re.compile(r"^\[\d+\]\s*"), ""),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<…>"),
    (re.compile(r"\d+"), "<n>"),
)


@dataclass(frozen=True)
class LogMessage:
    message: str
    count: int
    example: str


@dataclass(frozen=True)
class LogSummary:
    source: str
    lines: int
    error_lines: int
    top: list[LogMessage]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def redact_line(line: str) -> str:
    """A log line with every secret we know of, or can recognise, masked."""
    line = REDACTOR.scrub(line)
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line


def message_key(line: str) -> str:
    """The line with what varies between reports of the same failure masked."""
    for pattern, replacement in _VARIABLE:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())[:MESSAGE_LIMIT]


def summarize_lines(
    lines: Iterable[str],
    source: str = "log",
    pattern: re.Pattern[str] = ERROR_PATTERN,
    top: int = TOP_MESSAGES,
) -> LogSummary:
    """Group the error lines of ``lines`` by message; the ``top`` most frequent, with one
    (redacted) example each."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    total = 0
    for total, raw in enumerate(lines, start=1):  # noqa: B007  (total is the count afterwards)
        if not pattern.search(raw):
            continue
        line = redact_line(raw.rstrip("\r\n"))
        key = message_key(line)
        counts[key] += 1
        examples.setdefault(key, line[:MESSAGE_LIMIT])
    return LogSummary(
        source=source,
        lines=total,
        error_lines=sum(counts.values()),
        top=[LogMessage(key, count, examples[key]) for key, count in counts.most_common(top)],
    )


def summarize_log(path: Path, top: int = TOP_MESSAGES) -> LogSummary:
    """``summarize_lines`` over a log file (read as UTF-8, undecodable bytes replaced)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return summarize_lines(fp, source=str(path), top=top)
    except OSError as exc:
        raise UsageError(f"cannot read the log file {path}: {exc.strerror or exc}") from exc
