"""SQLite backups through the online backup API: a database written to by another thread while
it is backed up restores intact, with the row counts of the instant of the backup; a changed
or damaged backup is refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from changeover.cleanup.sqlite import BackupError, backup_sqlite, verify_sqlite_backup
from changeover.errors import UsageError


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INT, total REAL)")
    conn.executemany("INSERT INTO users (name) VALUES (?)", [(f"u{n}",) for n in range(500)])
    conn.commit()
    conn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compression", ["gz", "xz"])
def test_a_database_being_written_is_backed_up_restored_and_verified(
    tmp_path: Path, compression: str
) -> None:
    source = tmp_path / "app.db"
    make_db(source)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        conn = sqlite3.connect(source, timeout=30)
        while not stop.is_set():
            with conn:  # one order and one user per transaction: the pairs must stay equal
                conn.execute("INSERT INTO orders (user_id, total) VALUES (1, 9.5)")
                conn.execute("INSERT INTO users (name) VALUES ('w')")
            written[0] += 1
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 50:
            stop.wait(0.01)
        backups = [
            backup_sqlite(source, tmp_path / "backups", compression=compression) for _ in range(3)
        ]
    finally:
        stop.set()
        thread.join(30)

    for backup in backups:
        path = Path(backup.path)
        assert path.name.endswith(f".db.{compression}") and path.exists()
        sidecar = path.with_name(path.name + ".sha256").read_text()
        assert sidecar == f"{backup.sha256}  {path.name}\n"
        # Consistent as of one instant: every committed transaction whole, none half.
        assert backup.tables["users"] - 500 == backup.tables["orders"] >= 50
        assert verify_sqlite_backup(path, backup.tables) == backup.tables
    assert written[0] > backups[0].tables["orders"]  # the writer kept going meanwhile
    assert not list((tmp_path / "backups").glob("*.partial"))


def test_a_changed_backup_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    make_db(source)
    backup = backup_sqlite(source, tmp_path)
    path = Path(backup.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(BackupError, match="SHA-256 differs"):
        verify_sqlite_backup(path)


def test_wrong_row_counts_and_a_damaged_file_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    make_db(source)
    backup = backup_sqlite(source, tmp_path)
    path = Path(backup.path)

    with pytest.raises(BackupError, match="users: 501 → 500"):
        verify_sqlite_backup(path, {**backup.tables, "users": 501})

    path.with_name(path.name + ".sha256").unlink()
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(BackupError, match="cannot decompress"):
        verify_sqlite_backup(path)


def test_a_missing_source_or_unknown_compression_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no SQLite database"):
        backup_sqlite(tmp_path / "nope.db", tmp_path)
    make_db(tmp_path / "app.db")
    with pytest.raises(UsageError, match="compression must be one of gz, xz"):
        backup_sqlite(tmp_path / "app.db", tmp_path, compression="zip")
