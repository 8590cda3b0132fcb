"""The cutover's archive: journal, reports and logs in one tar.gz that proves its own contents.

Every file is first copied into a staging folder (a log still being appended to is archived as
of one moment, and its hash matches what is stored); live SQLite files — the journal — are
copied with the online backup API instead. The tar holds ``MANIFEST.sha256`` (``sha256sum``
format) first, then the files; ``<archive>.sha256`` sits next to it. ``verify_archive``
re-hashes every member against the manifest and the whole file against the sidecar.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from changeover.cleanup.sqlite import CHUNK, read_sidecar, sha256_file, snapshot, write_sidecar
from changeover.errors import ChangeoverError, UsageError

MANIFEST = "MANIFEST.sha256"


class ArchiveError(ChangeoverError):
    """The archive could not be written."""


@dataclass(frozen=True)
class Archive:
    path: str
    sha256: str
    bytes: int
    members: dict[str, str]  # name in the archive → SHA-256

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArchiveCheck:
    path: str
    members: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def manifest_text(members: Mapping[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(members.items()))


def parse_manifest(text: str) -> dict[str, str]:
    members = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            members[name] = digest
    return members


def build_archive(
    dest: Path,
    *,
    paths: Sequence[Path] = (),
    sqlite: Mapping[str, Path] | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> Archive:
    """Write ``dest`` (a .tar.gz): each of ``paths`` (files, or folders taken whole) under
    ``files/``, each live SQLite database of ``sqlite`` (name in the archive → file) copied
    with the backup API, and ``extra`` (name → bytes, e.g. an exported journal)."""
    for path in paths:
        if not path.exists():
            raise UsageError(f"archive: {path} does not exist")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot create {dest.parent}: {exc.strerror}") from exc
    partial = dest.with_name(dest.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="changeover-archive-", dir=dest.parent) as tmp:
        staging = Path(tmp)
        staged: dict[str, Path] = {}
        for name, database in (sqlite or {}).items():
            copy = staging / f"sqlite-{len(staged)}"
            snapshot(database, copy)
            staged[name] = copy
        for name, data in (extra or {}).items():
            copy = staging / f"extra-{len(staged)}"
            copy.write_bytes(data)
            staged[name] = copy
        for path in paths:
            _stage(path, staging, staged)
        members = {name: sha256_file(copy) for name, copy in staged.items()}
        try:
            with tarfile.open(partial, "w:gz") as tar:
                listing = manifest_text(members).encode("utf-8")
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(listing)
                tar.addfile(info, io.BytesIO(listing))
                for name in sorted(staged):
                    tar.add(staged[name], arcname=name, recursive=False)
            os.replace(partial, dest)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ArchiveError(f"cannot write the archive {dest}: {exc.strerror or exc}") from exc
    digest = sha256_file(dest)
    write_sidecar(dest, digest)
    return Archive(str(dest), digest, dest.stat().st_size, members)


def _stage(path: Path, staging: Path, staged: dict[str, Path]) -> None:
    """Copy ``path`` (a file, or every file under a folder) into ``staging`` as ``files/...``."""
    top = path.name or "root"
    base = f"files/{top}"
    suffix = 1
    while any(name == base or name.startswith(base + "/") for name in staged):
        suffix += 1
        base = f"files/{top}-{suffix}"  # two paths with the same last name stay apart
    sources = [(base, path)] if path.is_file() else []
    if path.is_dir():
        sources = [
            (f"{base}/{file.relative_to(path).as_posix()}", file)
            for file in sorted(path.rglob("*"))
            if file.is_file()
        ]
    for name, source in sources:
        copy = staging / f"file-{len(staged)}"
        try:
            shutil.copyfile(source, copy)
        except OSError as exc:
            raise ArchiveError(f"archive: cannot read {source}: {exc.strerror or exc}") from exc
        staged[name] = copy


def verify_archive(path: Path) -> ArchiveCheck:
    """Re-hash every member of the archive at ``path`` against its manifest (and the file
    against its ``.sha256``); each difference is a plain sentence in ``problems``."""
    problems: list[str] = []
    recorded = read_sidecar(path)
    if not path.is_file():
        return ArchiveCheck(str(path), 0, [f"{path} does not exist"])
    if recorded is None:
        problems.append(f"no {path.name}.sha256 next to the archive")
    elif recorded != sha256_file(path):
        problems.append(f"the archive's SHA-256 differs from {path.name}.sha256")
    found: dict[str, str] = {}
    manifest: dict[str, str] | None = None
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name
                if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                    problems.append(f"{name}: an unsafe member name")
                    continue
                if not member.isfile():
                    problems.append(f"{name}: not a regular file")
                    continue
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has one
                if name == MANIFEST:
                    manifest = parse_manifest(stream.read().decode("utf-8", errors="replace"))
                    continue
                digest = hashlib.sha256()
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                found[name] = digest.hexdigest()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        problems.append(f"not a readable tar.gz ({exc})")
        return ArchiveCheck(str(path), len(found), problems)
    if manifest is None:
        problems.append(f"no {MANIFEST} inside the archive")
        return ArchiveCheck(str(path), len(found), problems)
    for name, expected in sorted(manifest.items()):
        if name not in found:
            problems.append(f"{name}: listed in the manifest, missing from the archive")
        elif found[name] != expected:
            problems.append(f"{name}: content differs from the manifest (tampered or corrupt)")
    problems.extend(
        f"{name}: in the archive but not in the manifest"
        for name in sorted(set(found) - set(manifest))
    )
    return ArchiveCheck(str(path), len(found), problems)
