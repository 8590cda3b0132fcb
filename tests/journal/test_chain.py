"""The hash chain without any store: the hash formula, and what ``verify_chain`` says for each
kind of tampering (rows built in memory, then edited the way a SQL shell would)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from changeover.errors import JournalCorrupt
from changeover.journal.chain import (
    GENESIS_HASH,
    Head,
    StoredRow,
    canonical_json,
    event_hash,
    verify_chain,
)


def make_chain(count: int) -> list[StoredRow]:
    rows: list[StoredRow] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        ts = f"2026-12-01T02:00:{seq % 60:02d}.{seq:06d}Z"
        payload = {"n": seq, "text": f"event {seq}"}
        digest = event_hash(prev, seq, ts, "note", "ops@host", payload)
        rows.append(StoredRow(seq, ts, "note", "ops@host", canonical_json(payload), prev, digest))
        prev = digest
    return rows


def head_of(rows: list[StoredRow]) -> Head:
    return Head(rows[-1].seq, rows[-1].hash) if rows else Head(0, GENESIS_HASH)


def renumber(row: StoredRow, seq: int) -> StoredRow:
    return dataclasses.replace(row, seq=seq)


def forge(seq: int, prev_hash: str, text: str = "forged") -> StoredRow:
    """A made-up event whose hash is correctly computed from its own (chosen) prev_hash."""
    ts = "2026-12-01T03:00:00.000000Z"
    payload = {"text": text}
    digest = event_hash(prev_hash, seq, ts, "note", "intruder", payload)
    return StoredRow(seq, ts, "note", "intruder", canonical_json(payload), prev_hash, digest)


def test_hash_is_sha256_of_prev_hash_and_canonical_content() -> None:
    payload = {"b": [1, 2.5, None], "a": "żółw"}
    content = json.dumps(
        {"seq": 3, "ts": "T", "kind": "note", "actor": "me", "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    expected = hashlib.sha256(("f" * 64 + content).encode("utf-8")).hexdigest()
    assert event_hash("f" * 64, 3, "T", "note", "me", payload) == expected


def test_hash_covers_the_seq() -> None:
    assert event_hash(GENESIS_HASH, 1, "T", "k", "a", {}) != event_hash(
        GENESIS_HASH, 2, "T", "k", "a", {}
    )


def test_intact_chain_verifies_and_reports_its_head() -> None:
    rows = make_chain(30)
    result = verify_chain(rows, head_of(rows))
    assert result.ok
    assert (result.count, result.head_hash, result.problem) == (30, rows[-1].hash, None)
    result.raise_if_bad()


def test_empty_journal_verifies_with_the_genesis_head() -> None:
    result = verify_chain([], Head(0, GENESIS_HASH))
    assert result.ok
    assert result.head_hash == GENESIS_HASH


def test_edited_payload_is_named() -> None:
    rows = make_chain(20)
    rows[16] = dataclasses.replace(rows[16], payload='{"n":17,"text":"all good"}')
    result = verify_chain(rows, head_of(make_chain(20)))
    assert not result.ok
    assert result.first_bad_seq == 17
    assert result.problem == "event 17 was edited: its hash does not match its content"
    with pytest.raises(JournalCorrupt, match="event 17 was edited"):
        result.raise_if_bad()


@pytest.mark.parametrize("column", ["ts", "kind", "actor", "prev_hash", "hash"])
def test_edit_of_any_column_is_detected(column: str) -> None:
    rows = make_chain(10)
    head = head_of(rows)
    edits: dict[str, Any] = {column: "0" * 64 if "hash" in column else "x"}
    rows[4] = dataclasses.replace(rows[4], **edits)
    result = verify_chain(rows, head)
    assert not result.ok
    assert (result.first_bad_seq, result.problem) == (
        5,
        "event 5 was edited: its hash does not match its content",
    )


def test_payload_that_is_not_json_anymore_counts_as_edited() -> None:
    rows = make_chain(5)
    rows[2] = dataclasses.replace(rows[2], payload="{not json")
    result = verify_chain(rows, head_of(make_chain(5)))
    assert (result.first_bad_seq, result.problem) == (
        3,
        "event 3 was edited: its hash does not match its content",
    )


def test_deleted_middle_event_is_named_with_the_jump() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    del rows[11]
    result = verify_chain(rows, head)
    assert result.first_bad_seq == 12
    assert result.problem == "event 12 is missing (sequence jumps from 11 to 13)"


def test_several_deleted_events_are_named_as_a_range() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    del rows[4:7]
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        5,
        "events 5 to 7 are missing (sequence jumps from 4 to 8)",
    )


def test_deleted_last_events_are_caught_by_the_head() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    assert verify_chain(rows[:19], head).problem == (
        "the last event was deleted (head says 20, journal ends at 19)"
    )
    result = verify_chain(rows[:18], head)
    assert result.first_bad_seq == 19
    assert result.problem == "the last 2 events were deleted (head says 20, journal ends at 18)"


def test_every_event_deleted_is_caught_by_the_head() -> None:
    result = verify_chain([], head_of(make_chain(3)))
    assert (result.first_bad_seq, result.problem) == (
        1,
        "every event was deleted (head says 3, journal ends at 0)",
    )


def test_swapped_events_are_out_of_order() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    rows[7], rows[8] = renumber(rows[8], 8), renumber(rows[7], 9)
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (8, "events 8 and 9 are out of order")


def test_distant_swap_names_both_places() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    rows[3], rows[14] = renumber(rows[14], 4), renumber(rows[3], 15)
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (4, "events 4 and 15 are out of order")


def test_wrongly_chained_forgery_pushed_in_is_an_insertion() -> None:
    rows = make_chain(10)
    head = head_of(rows)
    shifted = [renumber(row, row.seq + 1) for row in rows[4:]]
    rows = [*rows[:4], forge(5, rows[1].hash), *shifted]
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        5,
        "an event was inserted at 5 (event 5 now sits at 6)",
    )


def test_correctly_chained_forgeries_pushed_in_are_an_insertion() -> None:
    rows = make_chain(10)
    head = head_of(rows)
    first = forge(5, rows[3].hash, "one")
    second = forge(6, first.hash, "two")
    shifted = [renumber(row, row.seq + 2) for row in rows[4:]]
    result = verify_chain([*rows[:4], first, second, *shifted], head)
    assert (result.first_bad_seq, result.problem) == (
        5,
        "2 events were inserted at 5 (event 5 now sits at 7)",
    )


def test_event_replaced_with_recomputed_hash_is_named() -> None:
    rows = make_chain(10)
    head = head_of(rows)
    rows[4] = forge(5, rows[3].hash)
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        5,
        "event 5 was edited: its hash was recomputed, but event 6 still points at the original",
    )


def test_event_replaced_with_a_wrong_chain_is_forged() -> None:
    rows = make_chain(10)
    head = head_of(rows)
    rows[4] = forge(5, rows[1].hash)
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        5,
        "event 5 was forged: it does not link to event 4",
    )


def test_first_event_replaced_is_forged_from_genesis() -> None:
    rows = make_chain(3)
    head = head_of(rows)
    rows[0] = forge(1, "1" * 64)
    assert verify_chain(rows, head).problem == (
        "event 1 was forged: it does not start from the genesis hash"
    )


def test_forgery_appended_behind_the_heads_back_is_caught() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    rows.append(forge(21, rows[-1].hash))
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        21,
        "an event was inserted at 21, after the head (head says 20, journal ends at 21)",
    )


def test_last_event_replaced_with_recomputed_hash_is_caught_by_the_head() -> None:
    rows = make_chain(20)
    head = head_of(rows)
    rows[-1] = forge(20, rows[-2].hash)
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        20,
        "event 20 was edited or replaced: the head record holds a different hash",
    )


def test_gap_hidden_by_renumbering_is_still_a_missing_event() -> None:
    rows = make_chain(20)
    rows = [*rows[:11], *(renumber(row, row.seq - 1) for row in rows[12:])]
    result = verify_chain(rows, head_of(rows))
    assert (result.first_bad_seq, result.problem) == (
        12,
        "event 12 is missing (the events after it were renumbered to hide the gap)",
    )


def test_duplicate_seq_is_an_insertion() -> None:
    rows = make_chain(6)
    head = head_of(rows)
    rows.insert(3, forge(3, rows[1].hash))
    result = verify_chain(rows, head)
    assert (result.first_bad_seq, result.problem) == (
        3,
        "an event was inserted at 3 (two events carry seq 3)",
    )


def test_missing_head_record_is_reported() -> None:
    result = verify_chain(make_chain(3), None)
    assert not result.ok
    assert result.problem == "the journal's head record is missing (it was deleted)"


def test_rewriting_everything_consistently_is_the_documented_limit() -> None:
    # A full, consistent rewrite verifies: only the head hash recorded elsewhere tells.
    original, rewritten = make_chain(5), make_chain(5)
    rewritten[2:] = []
    prev = rewritten[-1].hash
    for seq in range(3, 6):
        rewritten.append(forge(seq, prev, f"rewritten {seq}"))
        prev = rewritten[-1].hash
    result = verify_chain(rewritten, head_of(rewritten))
    assert result.ok
    assert result.head_hash != head_of(original).hash
