"""kill -9 at any moment of copy and sync: running the command again finishes, verify is equal.

The commands run as real processes in their own session; the whole process group gets SIGKILL
(like an OOM kill or a lost machine), so worker processes die too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.migrate.verify import verify_database
from migrate.corpus import make_app_db


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "changeover", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def kill9(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have finished on its own
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def finish(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "changeover", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def tables_committed(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        exists = conn.execute("SELECT to_regclass('_changeover_copy') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute(
            "SELECT count(*) FROM _changeover_copy WHERE item LIKE 'table:%'"
        ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def env(pg_url: str) -> dict[str, str]:
    return {**os.environ, "TARGET_URL": pg_url}


def test_copy_killed_mid_load_resumes_and_verifies_equal(
    tmp_path: Path, pg_url: str, env: dict[str, str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=20_000)
    where = ["--source", str(db), "--target", "${TARGET_URL}"]
    process = start(["migrate", "copy", *where, "--capture", "--jobs", "2"], env)
    deadline = time.monotonic() + 60
    while tables_committed(pg_url) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    kill9(process)
    committed = tables_committed(pg_url)
    assert 2 <= committed < 6, "the kill came too late to test a resume"
    finish(["migrate", "copy", *where, "--capture", "--jobs", "2"], env)
    plan = plan_schema(introspect(db))
    report = verify_database(db, pg_url, plan)
    assert report.equal, report.to_json()
    with psycopg.connect(pg_url) as conn:
        # Identities were reset past the maximum ids, and sync starts where the copy began.
        assert conn.execute("SELECT nextval(pg_get_serial_sequence('users', 'id'))").fetchone() == (
            20_001,
        )
        assert conn.execute(
            "SELECT position FROM _changeover_sync WHERE direction = 'forward'"
        ).fetchone() == (0,)


def test_sync_killed_again_and_again_under_writes_loses_nothing(
    tmp_path: Path, pg_url: str, env: dict[str, str]
) -> None:
    db = make_app_db(tmp_path / "app.db", rows=500)
    where = ["--source", str(db), "--target", "${TARGET_URL}"]
    finish(["migrate", "copy", *where, "--capture"], env)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        rng = random.Random(7)
        try:
            i = 0
            while not stop.is_set() and i < 5000:
                i += 1
                conn.execute("INSERT INTO users (email, name) VALUES (?, ?)", (f"w{i}@x", f"W{i}"))
                conn.execute(
                    "UPDATE orders SET status = ? WHERE id = ?", (f"s{i}", rng.randint(1, 500))
                )
                if i % 7 == 0:
                    conn.execute("DELETE FROM sessions WHERE token = ?", (f"tok{i % 500:08d}",))
                written.append(f"w{i}@x")
                time.sleep(0.001)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    rng = random.Random(11)
    try:
        for _ in range(4):
            process = start(["migrate", "sync", *where], env)
            time.sleep(rng.uniform(0.4, 1.2))
            kill9(process)
    finally:
        stop.set()
        thread.join()
    finish(["migrate", "sync", *where, "--once"], env)
    plan = plan_schema(introspect(db))
    report = verify_database(db, pg_url, plan)
    assert report.equal, report.to_json()
    assert len(written) > 100
    with psycopg.connect(pg_url) as conn:
        emails = {row[0] for row in conn.execute("SELECT email FROM users WHERE email LIKE 'w%'")}
    assert emails == set(written)
