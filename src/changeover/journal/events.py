"""What a journal event is, and how a payload becomes one: validated, redacted, serialised.

An ``Event`` is immutable once written. ``encode_payload`` is the gate every payload passes
before any store sees it: it must be a JSON object, secrets known to ``REDACTOR`` are scrubbed,
and anything JSON cannot represent is refused with the path to the offending value.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from changeover.errors import JournalCorrupt, JournalError
from changeover.journal.chain import StoredRow, canonical_json
from changeover.secrets import REDACTOR

# Kinds written by changeover itself; any dotted lowercase name is accepted.
PLAN_LOADED = "plan.loaded"
CHECK_RESULT = "check.result"
SIGNOFF = "signoff"
NOTE = "note"
ACTION_INTENT = "action.intent"
ACTION_OUTCOME = "action.outcome"
NOTIFY_SENT = "notify.sent"
NOTIFY_FAILED = "notify.failed"

_KIND = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*")
FIELDS = ("seq", "ts", "kind", "actor", "payload", "prev_hash", "hash")


@dataclass(frozen=True)
class Event:
    """One journal entry; ``ts`` is UTC ISO-8601 with microseconds (2026-12-01T02:00:00.000001Z)."""

    seq: int
    ts: str
    kind: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.ts)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_row(cls, row: StoredRow) -> Event:
        """An event from a stored row; a payload that is no JSON object means tampering."""
        try:
            payload = json.loads(row.payload)
        except (TypeError, ValueError):
            payload = None
        if not isinstance(payload, dict):
            raise JournalCorrupt(
                f"event {row.seq} was edited: its payload is not a JSON object "
                "(run `changeover journal verify`)"
            )
        return cls(row.seq, row.ts, row.kind, row.actor, payload, str(row.prev_hash), str(row.hash))


def utc_timestamp(moment: datetime) -> str:
    """``2026-12-01T02:00:00.000001Z``: always UTC, always six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_actor() -> str:
    """``user@host`` of this process, for events appended without an explicit actor."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry or $USER
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise JournalError(
            f"cannot journal an event of kind {kind!r}: a kind is lowercase words joined by "
            "dots, like 'check.result'"
        )
    return kind


def encode_payload(kind: str, payload: object) -> tuple[dict[str, Any], str]:
    """Redact and serialise a payload; returns it as it will read back, and its JSON text."""
    if not isinstance(payload, Mapping):
        raise JournalError(
            f"cannot journal a {kind!r} event: the payload must be a JSON object (a dict), "
            f"not a {type(payload).__name__}"
        )
    try:
        scrubbed = REDACTOR.scrub_value(payload)
        text = canonical_json(scrubbed)
    except RecursionError as exc:
        raise JournalError(
            f"cannot journal a {kind!r} event: the payload contains a cycle or is nested too deeply"
        ) from exc
    except (TypeError, ValueError) as exc:
        where = _first_unserialisable(scrubbed, "payload") or "the payload is not JSON-serialisable"
        raise JournalError(f"cannot journal a {kind!r} event: {where}") from exc
    # Read it back, so the caller's Event holds exactly what the journal holds (tuples become
    # lists, enum members plain values, non-string keys strings).
    decoded: dict[str, Any] = json.loads(text)
    return decoded, text


def _first_unserialisable(value: Any, path: str) -> str:
    """Where in the payload JSON fails, naming the type but never the value (it may be secret)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path} has a key of type {type(key).__name__}; keys must be strings"
            found = _first_unserialisable(item, f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(value, list):
        for number, item in enumerate(value):
            found = _first_unserialisable(item, f"{path}[{number}]")
            if found:
                return found
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value}, which JSON cannot represent"
    if value is None or isinstance(value, str | int | float | bool):
        return ""
    return f"{path} is a {type(value).__name__}, which is not JSON-serialisable"


def read_export(fp: TextIO) -> Iterator[Event]:
    """Read back what ``Journal.export`` wrote (JSON Lines, one event per line)."""
    for number, line in enumerate(fp, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            event = Event(**{name: data[name] for name in FIELDS})
        except (ValueError, TypeError, KeyError) as exc:
            raise JournalError(f"line {number} of the export is not a journal event") from exc
        yield event
