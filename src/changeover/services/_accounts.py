"""Who runs PostgreSQL, and making sure that user can reach the files it needs.

PostgreSQL refuses to run as root. When changeover runs as root, the servers run as the
``postgres`` system user if there is one, else as a ``changeover`` system user created for the
purpose; their directories are created reachable by that user and handed over to it, and
binaries it cannot reach (a wheel under a private ``/root``) are mirrored with hard links.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from changeover.errors import ServiceError

SERVICE_USER = "changeover"


@dataclass(frozen=True)
class Account:
    """An unprivileged system user that servers are started as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def from_passwd(cls, entry: pwd.struct_passwd) -> Account:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


_account_lock = threading.Lock()
_account: list[Account] = []


def server_account() -> Account | None:
    """The user to run PostgreSQL as, or None when we are not root (then we run it ourselves)."""
    if os.geteuid() != 0:
        return None
    with _account_lock:
        if not _account:
            _account.append(Account.from_passwd(_find_or_create_user()))
        return _account[0]


def _find_or_create_user() -> pwd.struct_passwd:
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    argv = [
        shutil.which("useradd") or "/usr/sbin/useradd",
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE_USER,
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no 'postgres' user; creating the "
            f"system user '{SERVICE_USER}' failed: {exc}"
        ) from exc
    try:
        # Another process (a second test worker) may have created it at the same moment.
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no 'postgres' user; "
            f"'useradd {SERVICE_USER}' failed: {result.stderr.strip() or result.returncode}"
        ) from None


def _may_enter(info: os.stat_result, account: Account) -> bool:
    # POSIX checks exactly one class of permission bits: owner, else group, else others.
    if info.st_uid == account.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in account.groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def closed_ancestor(path: Path, account: Account | None) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` cannot enter, if any."""
    if account is None:
        return None
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        try:
            if not _may_enter(directory.stat(), account):
                return directory
        except OSError:
            return directory
    return None


def make_base_dir(path: Path | None, prefix: str) -> tuple[Path, bool]:
    """The directory a server lives in, and whether we created it (so stop() may remove it).

    Directories we create are mode 0755: the server user must be able to pass through them.
    """
    try:
        if path is None:
            created = Path(tempfile.mkdtemp(prefix=prefix))
            created.chmod(0o755)
            return created, True
        path = path.absolute()
        missing = [p for p in [*reversed(path.parents), path] if not p.exists()]
        for directory in missing:
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # mkdir's mode is reduced by the umask
        return path, False
    except OSError as exc:
        raise ServiceError(f"cannot create the directory {path}: {exc.strerror or exc}") from exc


def ensure_reachable(path: Path, account: Account | None) -> None:
    closed = closed_ancestor(path, account)
    if closed is not None and account is not None:
        raise ServiceError(
            f"the directory {path} is not reachable by the user '{account.name}' that runs "
            f"PostgreSQL (PostgreSQL refuses to run as root): {closed} is closed to it. "
            f"Use a directory under {tempfile.gettempdir()}, or no work directory at all."
        )


def private_dir(path: Path, account: Account | None) -> Path:
    """Create ``path`` (mode 0700, empty) owned by the server user."""
    try:
        path.mkdir(mode=0o700)
        path.chmod(0o700)
        if account is not None:
            os.chown(path, account.uid, account.gid)
    except FileExistsError as exc:
        raise ServiceError(f"{path} already exists: a new server needs a fresh directory") from exc
    except OSError as exc:
        raise ServiceError(f"cannot create the directory {path}: {exc.strerror or exc}") from exc
    return path


def give(path: Path, account: Account | None) -> None:
    """Hand a file we wrote over to the server user."""
    if account is not None:
        try:
            os.chown(path, account.uid, account.gid)
        except OSError as exc:
            raise ServiceError(f"cannot hand {path} to '{account.name}': {exc.strerror}") from exc


_mirrors: dict[Path, Path] = {}
_mirror_lock = threading.Lock()


def reachable_bin_dir(bin_dir: Path, account: Account | None) -> Path:
    """``bin_dir`` if the server user can run its programs, else a hard-linked mirror of it.

    The ``pgserver`` wheel usually sits under ``/root``, mode 0700, which the server user cannot
    enter. Rather than open up ``/root``, we mirror the installation (``pginstall/`` and the
    wheel's ``pgserver.libs/``, which its binaries find through a relative RPATH) into a
    temporary directory with hard links: instant, no extra disk, nothing changed in place.
    """
    if closed_ancestor(bin_dir, account) is None:
        return bin_dir
    with _mirror_lock:
        if bin_dir not in _mirrors:
            _mirrors[bin_dir] = _mirror(bin_dir)
        mirrored = _mirrors[bin_dir]
    closed = closed_ancestor(mirrored, account)
    if closed is not None and account is not None:
        raise ServiceError(
            f"the PostgreSQL binaries in {bin_dir} are not reachable by '{account.name}', "
            f"and neither is the copy in {mirrored} ({closed} is closed to it)"
        )
    return mirrored


def _mirror(bin_dir: Path) -> Path:
    prefix = bin_dir.parent  # .../site-packages/pgserver/pginstall
    package = prefix.parent  # .../site-packages/pgserver
    root = Path(tempfile.mkdtemp(prefix="changeover-pginstall-"))
    atexit.register(shutil.rmtree, root, True)
    try:
        root.chmod(0o755)
        (root / package.name).mkdir()
        (root / package.name).chmod(0o755)
        shutil.copytree(
            prefix, root / package.name / prefix.name, symlinks=True, copy_function=_link
        )
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / libs.name, symlinks=True, copy_function=_link)
    except (OSError, shutil.Error) as exc:
        raise ServiceError(f"cannot mirror the PostgreSQL binaries of {bin_dir}: {exc}") from exc
    return root / package.name / prefix.name / bin_dir.name


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copy2(source, target)
