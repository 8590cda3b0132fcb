"""Appending, reading, redaction, export and failure messages, on both stores."""

from __future__ import annotations

import getpass
import io
import json
import math
import multiprocessing
import os
import pwd
import re
import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

import changeover.journal.sqlite  # noqa: F401  (imported before forking an unprivileged child)
from changeover.errors import JournalCorrupt, JournalError, UsageError
from changeover.journal import GENESIS_HASH, open_journal, read_export
from changeover.journal import store as store_module
from changeover.journal.events import FIELDS
from changeover.secrets import REDACTOR

from .conftest import Store

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_appended_events_read_back_in_order_on_one_chain(store: Store) -> None:
    journal = store.open()
    written = [
        journal.append("check.result", {"step": f"s{n}", "status": "pass", "ms": n * 1.5})
        for n in range(5)
    ]
    written.append(journal.append("signoff", {"step": "s1", "note": "ok ✓"}, actor="alice"))

    read = list(journal.events())

    assert read == written
    assert [event.seq for event in read] == [1, 2, 3, 4, 5, 6]
    assert read[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(read))
    assert all(TIMESTAMP.match(event.ts) for event in read)
    assert [event.ts for event in read] == sorted(event.ts for event in read)
    assert read[0].time.tzinfo is not None
    assert read[0].actor == f"{getpass.getuser()}@{socket.gethostname()}"
    assert read[-1].actor == "alice"
    assert read[-1].payload == {"step": "s1", "note": "ok ✓"}
    result = journal.verify()
    assert (result.ok, result.count, result.head_hash) == (True, 6, read[-1].hash)
    assert journal.head().hash == read[-1].hash


def test_timestamps_are_utc_with_microseconds_from_the_clock(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    moments = iter([datetime(2026, 12, 1, 4, 0, 0, 5, tzinfo=plus_two)])
    journal = store.open(clock=lambda: next(moments))

    event = journal.append("note", {})

    assert event.ts == "2026-12-01T02:00:00.000005Z"
    assert [e.ts for e in journal.events()] == [event.ts]


def test_reopened_journal_continues_the_same_chain(store: Store) -> None:
    first = store.open()
    one = first.append("note", {"text": "before restart"})
    first.close()

    two = store.open().append("note", {"text": "after restart"})

    assert (two.seq, two.prev_hash) == (2, one.hash)
    assert store.open().verify().ok


def test_events_filters_by_seq_and_kind_across_read_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BATCH", 3)
    journal = store.open()
    for n in range(10):
        journal.append("signoff" if n % 3 == 0 else "note", {"n": n})

    assert [e.seq for e in journal.events(since_seq=4)] == [5, 6, 7, 8, 9, 10]
    assert [e.payload["n"] for e in journal.events(kinds=["signoff"])] == [0, 3, 6, 9]
    assert [e.seq for e in journal.events(since_seq=5, kinds="signoff")] == [7, 10]
    assert list(journal.events(kinds=[])) == []
    assert len(list(journal.events())) == 10


def test_latest_is_the_newest_event_matching_every_payload_filter(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BATCH", 2)
    journal = store.open()
    journal.append("check.result", {"step": "a", "status": "fail"})
    wanted = journal.append("check.result", {"step": "a", "status": "pass", "note": None})
    for n in range(5):
        journal.append("check.result", {"step": "b", "n": n})
    journal.append("note", {"step": "a"})

    assert journal.latest("check.result", step="a") == wanted
    assert journal.latest("check.result", step="a", status="fail") is not None
    assert journal.latest("check.result", step="a", note=None) == wanted
    assert journal.latest("check.result", step="b", note=None) is None  # key absent ≠ None
    assert journal.latest("signoff") is None


def test_secret_values_never_reach_the_stored_rows(store: Store) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    REDACTOR.register(secret)
    journal = store.open()

    event = journal.append(
        "action.outcome",
        {"cmd": f"psql postgresql://app:{secret}@db/app", "env": [{"TOKEN": secret}], secret: 1},
    )

    assert secret not in json.dumps(event.payload)
    stored = store.sql("SELECT payload FROM changeover_events")
    assert secret not in repr(stored)
    assert "postgresql://app:***@db/app" in stored[0][0]
    assert journal.verify().ok


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"when": datetime.now(UTC)}, r"payload\.when is a datetime, which is not JSON"),
        ({"m": [1, {"x": math.nan}]}, r"payload\.m\[1\]\.x is nan, which JSON cannot represent"),
        ({"s": {1, 2}}, r"payload\.s is a set"),
        ([1, 2], r"must be a JSON object \(a dict\), not a list"),
    ],
)
def test_payload_json_cannot_hold_is_refused_and_nothing_is_written(
    store: Store, payload: object, message: str
) -> None:
    journal = store.open()
    with pytest.raises(JournalError, match=message):
        journal.append("note", payload)  # type: ignore[arg-type]
    assert journal.verify().count == 0


def test_malformed_kind_is_refused(store: Store) -> None:
    journal = store.open()
    with pytest.raises(JournalError, match="lowercase words joined by dots"):
        journal.append("Check Result", {})
    assert journal.verify().count == 0


def test_export_writes_one_json_line_per_event_that_reads_back(store: Store) -> None:
    journal = store.open()
    journal.append("plan.loaded", {"sha256": "ab" * 32})
    journal.append("note", {"text": "zażółć", "list": [1, 2.5, None, True]})
    journal.append("signoff", {"step": "x"}, actor="bob@laptop")
    out = io.StringIO()

    assert journal.export(out) == 3

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(set(json.loads(line)) == set(FIELDS) for line in lines)
    assert list(read_export(io.StringIO(out.getvalue()))) == list(journal.events())


def test_threads_sharing_one_journal_keep_the_chain_gapless(store: Store) -> None:
    journal = store.open()

    def append_many(worker: int) -> None:
        for n in range(50):
            journal.append("note", {"worker": worker, "n": n})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(append_many, range(4)))

    assert [event.seq for event in journal.events()] == list(range(1, 201))
    assert journal.verify().ok


def test_writer_blocked_past_the_deadline_gets_a_plain_error(store: Store) -> None:
    store.open().close()  # create the tables
    if store.name == "sqlite":
        journal = store.open(busy_timeout=0.05, lock_deadline=0.3)
        blocker = sqlite3.connect(store.spec.removeprefix("sqlite://"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        from changeover.journal.postgres import APPEND_LOCK

        journal = store.open(lock_timeout=0.3)
        blocker = psycopg.connect(store.spec, autocommit=True)  # type: ignore[assignment]
        blocker.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
    try:
        with pytest.raises(JournalError, match=r"held its lock for more than 0\.3 s"):
            journal.append("note", {})
    finally:
        blocker.close()
    assert journal.append("note", {}).seq == 1  # and works again once the lock is free


def test_closed_journal_refuses_with_a_plain_error(store: Store) -> None:
    journal = store.open()
    journal.close()
    with pytest.raises(JournalError, match="already closed"):
        journal.append("note", {})


# --- SQLite specifics -------------------------------------------------------------------------


def test_default_journal_is_a_wal_sqlite_file_next_to_the_plan(tmp_path: Path) -> None:
    with open_journal(None, tmp_path) as journal:
        journal.append("note", {})
    path = tmp_path / ".changeover" / "journal.db"
    assert journal.location == str(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM changeover_events").fetchone() == (1,)
    conn.close()


def test_sqlite_specs_take_absolute_paths_or_paths_relative_to_the_plan(tmp_path: Path) -> None:
    absolute = tmp_path / "abs" / "j.db"
    with open_journal(f"sqlite://{absolute}", tmp_path / "plan") as journal:
        assert journal.location == str(absolute)
    with open_journal("sqlite:state/j.db", tmp_path) as journal:
        assert journal.location == str(tmp_path / "state" / "j.db")
    assert absolute.exists() and (tmp_path / "state" / "j.db").exists()


def test_unknown_journal_spec_is_refused_without_showing_its_password(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected a postgresql:// URL") as caught:
        open_journal("mysql://app:hunter2hunter2@db/app", tmp_path)
    assert "hunter2hunter2" not in str(caught.value)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory any user may enter (tmp_path's parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="changeover-journal-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def _open_in_child(plan_dir: Path, answer: Connection) -> None:
    # Root writes anywhere regardless of modes, so the child gives up root first.
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    try:
        open_journal(None, plan_dir).close()
        answer.send("opened")
    except JournalError as exc:
        answer.send(f"{type(exc).__name__}: {exc}")


def _open_unprivileged(plan_dir: Path) -> str:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_open_in_child, args=(plan_dir, send))
    child.start()
    child.join(30)
    assert receive.poll(0), f"child exited with {child.exitcode} without answering"
    return str(receive.recv())


@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "existing-dir"])
def test_unwritable_plan_directory_gives_a_plain_journal_error(
    shared_dir: Path, existing: bool
) -> None:
    plan_dir = shared_dir / "plan"
    (plan_dir / ".changeover").mkdir(parents=True)
    (plan_dir / ".changeover" if existing else plan_dir).chmod(0o555)
    if not existing:
        (plan_dir / ".changeover").rmdir()

    message = _open_unprivileged(plan_dir)

    path = plan_dir / ".changeover" / "journal.db"
    assert message == f"JournalError: cannot open journal {path}: permission denied"


def test_file_where_the_journal_directory_should_be_gives_a_plain_error(tmp_path: Path) -> None:
    (tmp_path / ".changeover").write_text("not a directory")
    with pytest.raises(JournalError, match=r"\.changeover exists and is not a directory"):
        open_journal(None, tmp_path)


def test_file_that_is_not_a_database_is_reported_as_damaged(tmp_path: Path) -> None:
    (tmp_path / ".changeover").mkdir()
    (tmp_path / ".changeover" / "journal.db").write_bytes(b"definitely not SQLite " * 100)
    with pytest.raises(JournalCorrupt, match="is damaged or is not a SQLite database"):
        open_journal(None, tmp_path)


# --- PostgreSQL specifics ---------------------------------------------------------------------


def test_unreachable_postgres_gives_a_plain_error_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    with pytest.raises(JournalError) as caught:
        open_journal(f"postgresql://ops:pw-{port}-secret@127.0.0.1:{port}/journal", tmp_path)
    assert str(caught.value) == (
        f"cannot reach journal database at 127.0.0.1:{port}: "
        "connection refused (is PostgreSQL running there?)"
    )
    assert "secret" not in str(caught.value)


def test_wrong_postgres_password_is_named_without_showing_either_password(
    pg_url: str, tmp_path: Path
) -> None:
    wrong = re.sub(r"^(postgresql://[^:]+):[^@]+@", r"\1:not-the-password-42@", pg_url)
    assert wrong != pg_url
    with pytest.raises(JournalError) as caught:
        open_journal(wrong, tmp_path)
    message = str(caught.value)
    assert re.fullmatch(
        r"cannot log in to journal database at 127\.0\.0\.1:\d+: "
        r'password authentication failed for user "[^"]+"',
        message,
    ), message
    assert "not-the-password-42" not in message
