"""Consistent copies of live SQLite databases, and archived backups proven by restoring them.

``snapshot`` uses SQLite's online backup API — one read transaction, so a database in WAL mode
that another process keeps writing is copied as of one instant (a file copy could catch a
half-checkpointed WAL). ``backup_sqlite`` compresses the snapshot (gzip or xz) with a SHA-256
sidecar; ``verify_sqlite_backup`` restores it into a temporary file, runs ``PRAGMA
integrity_check`` and compares the row count of every table with the snapshot's.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from changeover.errors import ChangeoverError, UsageError

COMPRESSIONS = {"gz": ".gz", "xz": ".xz"}
BUSY_TIMEOUT = 30.0  # seconds a snapshot waits for a writer's lock (rollback-journal mode)
CHUNK = 1 << 20


class BackupError(ChangeoverError):
    """A backup could not be made, or does not restore to what was backed up."""


@dataclass(frozen=True)
class SqliteBackup:
    path: str
    sha256: str
    bytes: int
    tables: dict[str, int]
    compression: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(source: Path, dest: Path) -> dict[str, int]:
    """Copy the live database ``source`` to ``dest`` with the online backup API; the row count
    per table of the copy (the source as of the instant of the copy)."""
    if not source.is_file():
        raise UsageError(f"no SQLite database at {source}")
    try:
        # Read-only: archiving must never create, migrate or lock the source for writing.
        src = sqlite3.connect(read_only_uri(source), uri=True, timeout=BUSY_TIMEOUT)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)  # all pages in one step: one consistent read transaction
            finally:
                dst.close()
        finally:
            src.close()
        return row_counts(dest)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up the SQLite database {source}: {exc}") from exc


def read_only_uri(path: Path) -> str:
    """A ``file:`` URI opening ``path`` read-only (percent-encoded: any file name works)."""
    return path.resolve().as_uri() + "?mode=ro"


def row_counts(path: Path) -> dict[str, int]:
    """Rows per table (SQLite's own tables left out)."""
    conn = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        quoted = {name: '"' + name.replace('"', '""') + '"' for name in names}
        return {
            n: int(conn.execute(f"SELECT count(*) FROM {quoted[n]}").fetchone()[0]) for n in names
        }
    finally:
        conn.close()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(path: Path, digest: str) -> Path:
    """``<file>.sha256`` in ``sha256sum`` format, so ``sha256sum -c`` checks it too."""
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return sidecar


def read_sidecar(path: Path) -> str | None:
    sidecar = path.with_name(path.name + ".sha256")
    try:
        return sidecar.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None


def _open_compressed(path: Path, mode: str, compression: str) -> IO[bytes]:
    if compression == "xz":
        return lzma.open(path, mode)  # type: ignore[return-value]
    return gzip.open(path, mode)  # type: ignore[return-value]


def backup_sqlite(source: Path, output_dir: Path, *, compression: str = "gz") -> SqliteBackup:
    """Snapshot ``source``, compress it into ``output_dir`` (``<name>-<UTC time>.db.gz``) with a
    ``.sha256`` next to it, and prove the result by restoring it (``verify_sqlite_backup``)."""
    from datetime import UTC, datetime

    if compression not in COMPRESSIONS:
        raise UsageError(
            f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the backup folder {output_dir}: {exc.strerror}") from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = output_dir / f"{source.stem}-{stamp}.db{COMPRESSIONS[compression]}"
    partial = path.with_name(path.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="changeover-backup-", dir=output_dir) as tmp:
        copy = Path(tmp) / "snapshot.db"
        tables = snapshot(source, copy)
        try:
            with open(copy, "rb") as raw, _open_compressed(partial, "wb", compression) as packed:
                shutil.copyfileobj(raw, packed, CHUNK)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"cannot write the backup {path}: {exc.strerror or exc}") from exc
    digest = sha256_file(path)
    write_sidecar(path, digest)
    verify_sqlite_backup(path, tables)
    return SqliteBackup(str(path), digest, path.stat().st_size, tables, compression)


def verify_sqlite_backup(path: Path, expected: Mapping[str, int] | None = None) -> dict[str, int]:
    """Restore the compressed backup ``path`` into a temporary file and prove it: its SHA-256
    matches the sidecar, ``PRAGMA integrity_check`` says ok, and (given ``expected``) every
    table holds the expected number of rows. The restored row counts; else ``BackupError``."""
    compression = next(
        (c for c, suffix in COMPRESSIONS.items() if path.name.endswith(suffix)), None
    )
    if compression is None:
        raise UsageError(f"{path}: not a .gz or .xz SQLite backup")
    recorded = read_sidecar(path)
    if recorded is not None and recorded != sha256_file(path):
        raise BackupError(f"{path}: SHA-256 differs from {path.name}.sha256: the file changed")
    with tempfile.TemporaryDirectory(prefix="changeover-restore-") as tmp:
        restored = Path(tmp) / "restored.db"
        try:
            with _open_compressed(path, "rb", compression) as packed, open(restored, "wb") as raw:
                shutil.copyfileobj(packed, raw, CHUNK)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise BackupError(f"{path}: cannot decompress ({exc})") from exc
        try:
            conn = sqlite3.connect(read_only_uri(restored), uri=True)
            try:
                problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            finally:
                conn.close()
            counts = row_counts(restored)
        except sqlite3.Error as exc:
            raise BackupError(
                f"{path}: the restored file is not a readable SQLite database ({exc})"
            ) from exc
    if problems != ["ok"]:
        raise BackupError(
            f"{path}: integrity_check of the restored database: {'; '.join(problems[:5])}"
        )
    if expected is not None and dict(expected) != counts:
        differ = sorted(set(expected) | set(counts))
        changes = [
            f"{t}: {expected.get(t, 'missing')} → {counts.get(t, 'missing')}"
            for t in differ
            if expected.get(t) != counts.get(t)
        ]
        raise BackupError(f"{path}: restored row counts differ: {', '.join(changes[:5])}")
    return counts
