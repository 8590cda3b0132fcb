"""The cutover archive: a round trip verifies; a tampered, missing or extra member, a changed
archive file and a truncated one are each reported in plain words."""

from __future__ import annotations

import io
import sqlite3
import tarfile
from pathlib import Path

import pytest

from changeover.cleanup.archive import MANIFEST, build_archive, parse_manifest, verify_archive
from changeover.cleanup.sqlite import sha256_file, write_sidecar
from changeover.errors import UsageError


def make_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    journal = tmp_path / "journal.db"
    conn = sqlite3.connect(journal)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT)")
    conn.executemany("INSERT INTO events (kind) VALUES (?)", [("a",), ("b",), ("c",)])
    conn.commit()
    conn.close()
    report = tmp_path / "REPORT.md"
    report.write_text("# Cutover report\n", encoding="utf-8")
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    (logs / "app.log").write_text("ERROR one\n", encoding="utf-8")
    (logs / "old" / "app.log.1").write_text("ERROR zero\n", encoding="utf-8")
    return journal, report, logs


def rewrite(
    archive: Path, change: dict[str, bytes | None], add: dict[str, bytes] | None = None
) -> None:
    """Rebuild ``archive`` with members replaced (bytes) or dropped (None), keeping the manifest."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    members.update(add or {})
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write_sidecar(archive, sha256_file(archive))  # a careful tamperer updates the sidecar too


def test_round_trip_holds_journal_report_and_logs_and_verifies(tmp_path: Path) -> None:
    journal, report, logs = make_inputs(tmp_path)
    dest = tmp_path / "out" / "cutover.tar.gz"

    archive = build_archive(dest, paths=[report, logs], sqlite={"journal/journal.db": journal})

    assert sorted(archive.members) == [
        "files/REPORT.md",
        "files/logs/app.log",
        "files/logs/old/app.log.1",
        "journal/journal.db",
    ]
    assert (
        dest.parent / "cutover.tar.gz.sha256"
    ).read_text() == f"{archive.sha256}  cutover.tar.gz\n"
    check = verify_archive(dest)
    assert check.ok and check.members == 4, check.problems
    with tarfile.open(dest, "r:gz") as tar:
        assert tar.getnames()[0] == MANIFEST
        manifest = parse_manifest(tar.extractfile(MANIFEST).read().decode())  # type: ignore[union-attr]
        restored = tmp_path / "restored.db"
        restored.write_bytes(tar.extractfile("journal/journal.db").read())  # type: ignore[union-attr]
    assert manifest == archive.members
    assert sqlite3.connect(restored).execute("SELECT count(*) FROM events").fetchone() == (3,)
    assert not list(dest.parent.glob("*.partial")) and not list(dest.parent.glob("changeover-*"))


def test_a_tampered_member_is_detected_and_named(tmp_path: Path) -> None:
    journal, report, logs = make_inputs(tmp_path)
    dest = tmp_path / "cutover.tar.gz"
    build_archive(dest, paths=[report, logs], sqlite={"journal/journal.db": journal})

    rewrite(dest, {"files/logs/app.log": b"nothing to see here\n"})

    check = verify_archive(dest)
    assert not check.ok
    assert check.problems == [
        "files/logs/app.log: content differs from the manifest (tampered or corrupt)"
    ]


def test_missing_and_extra_members_are_reported(tmp_path: Path) -> None:
    _, report, logs = make_inputs(tmp_path)
    dest = tmp_path / "cutover.tar.gz"
    build_archive(dest, paths=[report, logs])

    rewrite(dest, {"files/REPORT.md": None}, add={"files/smuggled.txt": b"x"})

    problems = verify_archive(dest).problems
    assert "files/REPORT.md: listed in the manifest, missing from the archive" in problems
    assert "files/smuggled.txt: in the archive but not in the manifest" in problems


def test_a_changed_or_truncated_archive_file_is_reported(tmp_path: Path) -> None:
    _, report, _ = make_inputs(tmp_path)
    dest = tmp_path / "cutover.tar.gz"
    build_archive(dest, paths=[report])
    data = dest.read_bytes()

    dest.write_bytes(data[: len(data) // 2])

    problems = verify_archive(dest).problems
    assert problems[0] == "the archive's SHA-256 differs from cutover.tar.gz.sha256"
    assert any(p.startswith("not a readable tar.gz") for p in problems)


def test_two_paths_with_the_same_name_stay_apart_and_a_missing_path_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "app.log").write_text("a\n")
    (tmp_path / "b" / "app.log").write_text("b\n")
    archive = build_archive(
        tmp_path / "x.tar.gz", paths=[tmp_path / "a" / "app.log", tmp_path / "b" / "app.log"]
    )
    assert sorted(archive.members) == ["files/app.log", "files/app.log-2"]

    with pytest.raises(UsageError, match="does not exist"):
        build_archive(tmp_path / "y.tar.gz", paths=[tmp_path / "nope.log"])
