"""Tampering done with plain SQL (sqlite3 / psycopg, not changeover) is detected and named.

Each test writes 20 events through the journal, then edits, deletes, inserts or reorders rows
of the underlying table the way someone with a SQL shell would, and checks that ``verify``
names the first bad event in words — and that ``append`` refuses to extend a broken end.
"""

from __future__ import annotations

import pytest

from changeover.errors import JournalCorrupt
from changeover.journal import Journal
from changeover.journal.chain import canonical_json, event_hash

from .conftest import Store

EVENTS = 20


def write_events(store: Store) -> Journal:
    journal = store.open()
    for n in range(1, EVENTS + 1):
        journal.append("check.result" if n % 2 else "note", {"n": n, "text": f"event {n}"})
    assert journal.verify().ok
    return journal


def stored_hash(store: Store, seq: int) -> str:
    return str(store.sql("SELECT hash FROM changeover_events WHERE seq = ?", (seq,))[0][0])


def insert_forged(store: Store, seq: int, prev_hash: str) -> None:
    """Insert an event whose hash is freshly and correctly computed from the prev_hash chosen."""
    ts, kind, actor, payload = "2026-12-01T02:30:00.000000Z", "signoff", "intruder", {"ok": 1}
    digest = event_hash(prev_hash, seq, ts, kind, actor, payload)
    store.sql(
        "INSERT INTO changeover_events (seq, ts, kind, actor, payload, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, kind, actor, canonical_json(payload), prev_hash, digest),
    )


def push_down_from(store: Store, seq: int) -> None:
    """Renumber events seq.. to seq+1.. (via negatives, so the UNIQUE seq never collides)."""
    store.sql("UPDATE changeover_events SET seq = -seq WHERE seq >= ?", (seq,))
    store.sql("UPDATE changeover_events SET seq = 1 - seq WHERE seq < 0")


def assert_detected(store: Store, first_bad_seq: int | None, problem: str) -> None:
    result = store.open().verify()
    assert (result.ok, result.first_bad_seq, result.problem) == (False, first_bad_seq, problem)


def test_edited_payload_is_detected(store: Store) -> None:
    write_events(store)
    store.sql(
        "UPDATE changeover_events SET payload = ? WHERE seq = 17",
        ('{"n":17,"text":"nothing to see"}',),
    )
    assert_detected(store, 17, "event 17 was edited: its hash does not match its content")


def test_edited_actor_is_detected(store: Store) -> None:
    write_events(store)
    store.sql("UPDATE changeover_events SET actor = 'someone-else@host' WHERE seq = 3")
    assert_detected(store, 3, "event 3 was edited: its hash does not match its content")


def test_edited_event_with_recomputed_hash_is_detected(store: Store) -> None:
    write_events(store)
    row = store.sql("SELECT ts, kind, actor, prev_hash FROM changeover_events WHERE seq = 5")[0]
    payload = {"n": 5, "text": "rewritten"}
    digest = event_hash(row[3], 5, row[0], row[1], row[2], payload)
    store.sql(
        "UPDATE changeover_events SET payload = ?, hash = ? WHERE seq = 5",
        (canonical_json(payload), digest),
    )
    assert_detected(
        store,
        5,
        "event 5 was edited: its hash was recomputed, but event 6 still points at the original",
    )


def test_deleted_middle_event_is_detected(store: Store) -> None:
    write_events(store)
    store.sql("DELETE FROM changeover_events WHERE seq = 12")
    assert_detected(store, 12, "event 12 is missing (sequence jumps from 11 to 13)")


@pytest.mark.parametrize(
    ("deleted", "problem"),
    [
        (1, "the last event was deleted (head says 20, journal ends at 19)"),
        (2, "the last 2 events were deleted (head says 20, journal ends at 18)"),
    ],
)
def test_deleted_last_events_are_detected_and_block_appends(
    store: Store, deleted: int, problem: str
) -> None:
    journal = write_events(store)
    store.sql("DELETE FROM changeover_events WHERE seq > ?", (EVENTS - deleted,))
    assert_detected(store, EVENTS - deleted + 1, problem)

    with pytest.raises(JournalCorrupt, match="does not end where its head record says"):
        journal.append("note", {"text": "on top of a damaged end"})
    assert store.sql("SELECT max(seq) FROM changeover_events") == [(EVENTS - deleted,)]


def test_forged_event_with_wrong_chain_inserted_in_the_middle_is_detected(store: Store) -> None:
    write_events(store)
    push_down_from(store, 5)
    insert_forged(store, 5, prev_hash=stored_hash(store, 2))
    assert_detected(store, 5, "an event was inserted at 5 (event 5 now sits at 6)")


def test_forged_event_chained_correctly_in_the_middle_is_detected(store: Store) -> None:
    write_events(store)
    push_down_from(store, 5)
    insert_forged(store, 5, prev_hash=stored_hash(store, 4))
    assert_detected(store, 5, "an event was inserted at 5 (event 5 now sits at 6)")


def test_forged_event_appended_at_the_end_is_detected_and_blocks_appends(store: Store) -> None:
    journal = write_events(store)
    insert_forged(store, EVENTS + 1, prev_hash=stored_hash(store, EVENTS))
    assert_detected(
        store,
        21,
        "an event was inserted at 21, after the head (head says 20, journal ends at 21)",
    )
    with pytest.raises(JournalCorrupt):
        journal.append("note", {})


def test_swapped_events_are_detected_as_out_of_order(store: Store) -> None:
    write_events(store)
    store.sql("UPDATE changeover_events SET seq = -1 WHERE seq = 8")
    store.sql("UPDATE changeover_events SET seq = 8 WHERE seq = 9")
    store.sql("UPDATE changeover_events SET seq = 9 WHERE seq = -1")
    assert_detected(store, 8, "events 8 and 9 are out of order")


def test_deleted_event_hidden_by_renumbering_is_detected(store: Store) -> None:
    write_events(store)
    store.sql("DELETE FROM changeover_events WHERE seq = 12")
    store.sql("UPDATE changeover_events SET seq = -seq WHERE seq > 12")
    store.sql("UPDATE changeover_events SET seq = -seq - 1 WHERE seq < 0")
    last = stored_hash(store, EVENTS - 1)
    store.sql("UPDATE changeover_head SET seq = ?, hash = ?", (EVENTS - 1, last))
    assert_detected(
        store, 12, "event 12 is missing (the events after it were renumbered to hide the gap)"
    )


def test_deleted_head_record_is_detected_and_blocks_appends(store: Store) -> None:
    journal = write_events(store)
    store.sql("DELETE FROM changeover_head")
    assert_detected(store, None, "the journal's head record is missing (it was deleted)")
    with pytest.raises(JournalCorrupt, match="lost its head record"):
        journal.append("note", {})


def test_payload_edited_into_invalid_json_is_reported_when_read(store: Store) -> None:
    journal = write_events(store)
    store.sql("UPDATE changeover_events SET payload = '{broken' WHERE seq = 4")
    assert_detected(store, 4, "event 4 was edited: its hash does not match its content")
    with pytest.raises(JournalCorrupt, match="event 4 was edited: its payload is not a JSON"):
        list(journal.events())
