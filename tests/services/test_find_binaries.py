"""Where the server binaries come from: PATH first, then the system's, then the wheels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from changeover.services import (
    find_postgres_bin_dir,
    find_redis_server,
    system_postgres_bin_dirs,
    wheel_postgres_bin_dir,
    wheel_redis_server,
)


def _fake_install(bin_dir: Path, *tools: str) -> Path:
    bin_dir.mkdir(parents=True)
    for tool in tools:
        program = bin_dir / tool
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    return bin_dir


def test_system_dirs_are_ordered_highest_version_first(tmp_path: Path) -> None:
    for version in ("9.6", "10", "15", "16"):
        _fake_install(tmp_path / "postgresql" / version / "bin", "postgres", "initdb")
    _fake_install(tmp_path / "postgresql" / "17" / "bin", "psql")  # a client-only install
    found = system_postgres_bin_dirs((str(tmp_path / "postgresql" / "*" / "bin"),))
    assert [p.parent.name for p in found] == ["16", "15", "10", "9.6"]


def test_postgres_on_path_wins_and_resolves_to_its_real_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _fake_install(tmp_path / "opt" / "pg" / "bin", "postgres", "initdb", "pg_basebackup")
    linked = tmp_path / "local-bin"
    linked.mkdir()
    (linked / "postgres").symlink_to(real / "postgres")  # like /usr/local/bin/postgres
    monkeypatch.setenv("PATH", str(linked))
    found = find_postgres_bin_dir()
    assert found is not None
    assert (found.path, found.origin) == (real, "PATH")
    assert str(found) == f"{real} (from PATH)"


def test_postgres_falls_back_to_the_system_then_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_postgres_bin_dir()
    system = system_postgres_bin_dirs()
    if system:
        assert found is not None
        assert (found.path, found.origin) == (system[0], "system")
    elif wheel_postgres_bin_dir() is not None:
        assert found is not None
        assert found.origin == "wheel"
    else:
        assert found is None


def test_redis_on_path_wins_then_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_install(tmp_path / "bin", "redis-server") / "redis-server"
    monkeypatch.setenv("PATH", str(fake.parent))
    found = find_redis_server()
    assert found is not None
    assert (found.path, found.origin) == (fake, "PATH")

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = find_redis_server()
    wheel = wheel_redis_server()
    if wheel is None:
        assert found is None
    else:
        assert found is not None
        assert (found.path, found.origin) == (wheel, "wheel")
        assert os.access(found.path, os.X_OK)
