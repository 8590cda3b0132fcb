"""The hash chain: how an event's hash is computed, and how a stored journal is verified.

Each event's hash covers its predecessor's hash and its own content, ``seq`` included, so editing,
deleting, inserting or reordering any event breaks the chain at that point; a head record (last
seq and hash, written in the same transaction as the event) catches deleting the last events.
Everything here is pure: the stores read rows and call ``verify_chain``, which names the first
bad event in words an operator understands.

Limit: whoever rewrites every event *and* the head consistently (recomputing every hash) makes a
valid chain again; only an external anchor catches that. ``VerifyResult.head_hash`` is the value
to record elsewhere (the report, the change ticket, the war-room channel) to serve as that anchor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from changeover.errors import JournalCorrupt

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first event."""


def canonical_json(value: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept, no NaN/infinity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(prev_hash: str, seq: int, ts: str, kind: str, actor: str, payload: Any) -> str:
    """``sha256(prev_hash + canonical_json({seq, ts, kind, actor, payload}))`` as hex."""
    content = canonical_json(
        {"seq": seq, "ts": ts, "kind": kind, "actor": actor, "payload": payload}
    )
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Head:
    """The head record: the seq and hash of the last event, as the last writer left them."""

    seq: int
    hash: str


@dataclass(frozen=True)
class StoredRow:
    """One event row exactly as read from a store. Untrusted: any column may have been edited."""

    seq: int
    ts: Any
    kind: Any
    actor: Any
    payload: Any  # the stored JSON text
    prev_hash: Any
    hash: Any

    @cached_property
    def _parsed_payload(self) -> tuple[bool, Any]:
        try:
            return True, json.loads(self.payload)
        except (TypeError, ValueError):
            return False, None

    def hash_as(self, seq: int) -> str | None:
        """The hash this row's content would have as event ``seq``; None if it is unreadable."""
        readable, payload = self._parsed_payload
        if not readable or not isinstance(self.prev_hash, str):
            return None
        try:
            return event_hash(self.prev_hash, seq, self.ts, self.kind, self.actor, payload)
        except (TypeError, ValueError):  # e.g. a payload edited to hold 1e999
            return None

    def intact_as(self, seq: int) -> bool:
        """Does the stored hash match this row's content if it was written as event ``seq``?"""
        return self.hash_as(seq) == str(self.hash)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying a journal; ``problem`` is one plain sentence when not ``ok``."""

    ok: bool
    count: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise JournalCorrupt(f"journal tampered with: {self.problem}")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


def verify_chain(rows: Sequence[StoredRow], head: Head | None) -> VerifyResult:
    """Check rows (ordered by seq) and the head record; name the first bad event if any.

    Walks the chain from genesis: each row must carry the next seq, hash to its stored hash, and
    point at its predecessor's hash. At the first break it looks around (where the displaced
    original went, whether the next event still links) to say *what* happened, not just where.
    """
    last_hash = rows[-1].hash if rows else GENESIS_HASH
    head_hash = head.hash if head is not None else str(last_hash)

    def bad(seq: int | None, problem: str) -> VerifyResult:
        return VerifyResult(False, len(rows), head_hash, seq, problem)

    expected_prev = GENESIS_HASH
    for index, row in enumerate(rows):
        expected_seq = index + 1
        if row.seq < 1:
            return bad(row.seq, f"an event was inserted with seq {row.seq} (seqs start at 1)")
        if row.seq < expected_seq:  # only possible once the UNIQUE constraint was dropped
            return bad(
                row.seq, f"an event was inserted at {row.seq} (two events carry seq {row.seq})"
            )
        if row.seq > expected_seq:
            return bad(expected_seq, _missing(expected_seq, row.seq))
        if not row.intact_as(row.seq):
            return bad(*_explain_mismatch(rows, index, head))
        if row.prev_hash != expected_prev:
            return bad(*_explain_broken_link(rows, index, expected_prev, head))
        expected_prev = row.hash

    last_seq = rows[-1].seq if rows else 0
    if head is None:
        return bad(None, "the journal's head record is missing (it was deleted)")
    if head.seq > last_seq:
        gone = head.seq - last_seq
        what = "the last event was" if gone == 1 else f"the last {gone} events were"
        if last_seq == 0:
            what = "every event was"
        return bad(
            last_seq + 1, f"{what} deleted (head says {head.seq}, journal ends at {last_seq})"
        )
    if head.seq < last_seq:
        extra = last_seq - head.seq
        what = "an event was" if extra == 1 else f"{extra} events were"
        return bad(
            head.seq + 1,
            f"{what} inserted at {head.seq + 1}, after the head "
            f"(head says {head.seq}, journal ends at {last_seq})",
        )
    if head.hash != last_hash:
        if last_seq == 0:
            return bad(None, "the head record was edited: it does not describe an empty journal")
        return bad(
            last_seq,
            f"event {last_seq} was edited or replaced: the head record holds a different hash",
        )
    return VerifyResult(True, len(rows), head_hash)


def _missing(first: int, found: int) -> str:
    if found - first == 1:
        return f"event {first} is missing (sequence jumps from {first - 1} to {found})"
    return f"events {first} to {found - 1} are missing (sequence jumps from {first - 1} to {found})"


def _written_as(row: StoredRow, upper: int) -> int | None:
    """The seq under which this row was originally written, if its content still matches one."""
    nearby = [row.seq + 1, row.seq - 1]  # the usual case (a swap) first, then everything
    for seq in [*nearby, *range(1, upper + 1)]:
        if seq >= 1 and seq != row.seq and row.intact_as(seq):
            return int(seq)
    return None


def _explain_mismatch(rows: Sequence[StoredRow], index: int, head: Head | None) -> tuple[int, str]:
    """Row ``index`` does not hash to its stored hash: edited, moved, or pushed by an insertion."""
    row = rows[index]
    seq = row.seq
    # Seqs ever written are at most the head's (a seq forged to 10**9 must not cost 10**9 hashes).
    upper = max(len(rows), head.seq if head is not None else 0) + 1
    original = _written_as(row, upper)
    if original is None:
        return seq, f"event {seq} was edited: its hash does not match its content"
    if original < seq:
        # The rows from `original` up to here passed the checks, so they are the intruders.
        count = seq - original
        what = "an event was" if count == 1 else f"{count} events were"
        return original, f"{what} inserted at {original} (event {original} now sits at {seq})"
    for later in rows[index + 1 :]:
        if later.intact_as(seq):
            if later.seq == original:
                return seq, f"events {seq} and {original} are out of order"
            return seq, (
                f"events are out of order: event {original} sits at {seq} "
                f"and event {seq} at {later.seq}"
            )
    what = f"event {seq} is" if original - seq == 1 else f"events {seq} to {original - 1} are"
    return seq, f"{what} missing (the events after it were renumbered to hide the gap)"


def _explain_broken_link(
    rows: Sequence[StoredRow], index: int, expected_prev: str, head: Head | None
) -> tuple[int, str]:
    """Row ``index`` is self-consistent but does not point at its predecessor's hash."""
    row = rows[index]
    seq = row.seq
    for later in rows[index + 1 :]:
        if later.prev_hash == expected_prev and later.intact_as(seq):
            # The genuine event `seq` was pushed down; what sits before it was slipped in.
            count = later.seq - seq
            what = "an event was" if count == 1 else f"{count} events were"
            return seq, f"{what} inserted at {seq} (event {seq} now sits at {later.seq})"
    if index + 1 < len(rows):
        genuine = rows[index + 1].prev_hash == row.hash
    else:
        genuine = head is not None and head.hash == row.hash
    if genuine and seq > 1:
        return seq - 1, (
            f"event {seq - 1} was edited: its hash was recomputed, "
            f"but event {seq} still points at the original"
        )
    if seq == 1:
        return seq, "event 1 was forged: it does not start from the genesis hash"
    return seq, f"event {seq} was forged: it does not link to event {seq - 1}"
