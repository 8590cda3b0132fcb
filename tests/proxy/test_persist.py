"""Routing state persistence: round trip, atomic replace under a crash, corrupt files, drift."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from changeover.proxy.persist import StateFileError, StateStore
from changeover.proxy.state import RoutingState

BACKENDS = {"legacy": ["a", "b"], "new": ["a"]}
DEFAULT = RoutingState(weights={"legacy": 100.0, "new": 0.0}, write_owner="legacy")


def test_round_trip_keeps_weights_owner_and_drains(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state" / "proxy-state.json")
    assert store.load() is None
    state = RoutingState(
        weights={"legacy": 40.0, "new": 60.0},
        write_owner="new",
        holding=True,
        mirror_share=0.05,
        drained=frozenset({"legacy/b"}),
        version=7,
    )
    store.save(state)
    assert StateStore(store.path).load() == state  # a new store: as after a restart


def test_commit_increments_the_version_and_saves(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    first = store.commit(DEFAULT, weights={"legacy": 90.0, "new": 10.0})
    second = store.commit(first, write_owner="new")
    assert (first.version, second.version) == (1, 2)
    assert store.load() == second


def test_a_crash_before_the_rename_leaves_the_old_state(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    StateStore(path).save(DEFAULT)
    # A real process dies between writing the temporary file and renaming it.
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from changeover.proxy.persist import StateStore
        from changeover.proxy.state import RoutingState
        os.replace = lambda *a, **k: os._exit(9)
        StateStore(Path({str(path)!r})).save(
            RoutingState(weights={{"legacy": 0.0, "new": 100.0}}, write_owner="new", version=5)
        )
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == 9
    assert list(tmp_path.glob(".s.json.*.tmp")), "the crash should leave the temporary file"
    assert StateStore(path).load() == DEFAULT
    assert not list(tmp_path.glob(".s.json.*.tmp")), "loading removes the leftover"


def test_a_failed_write_keeps_the_old_file_and_says_why(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    store = StateStore(folder / "s.json")
    store.save(DEFAULT)
    # The folder is a file now: nothing can be created in it, as on a full or read-only disk.
    store_in_file = StateStore(folder / "s.json" / "nested.json")
    with pytest.raises(StateFileError, match="cannot be saved"):
        store_in_file.save(DEFAULT)
    assert store.load() == DEFAULT


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ('{"format": 99, "state": {}}', "format 1"),
        ('{"format": 1}', "missing 'state'"),
        ('{"format": 1, "state": {"weights": {"legacy": "x"}, "write_owner": "legacy"}}', "x"),
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(StateFileError) as info:
        StateStore(path).load()
    message = str(info.value)
    assert f"routing state file {path} is corrupt" in message
    assert reason in message
    assert "delete it to start from the config" in message


def test_load_or_uses_the_default_on_first_start(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "s.json").load_or(DEFAULT, BACKENDS) is DEFAULT


def test_load_or_keeps_the_saved_state_over_the_default(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    saved = RoutingState({"legacy": 50.0, "new": 50.0}, "new", drained=frozenset({"new/a"}))
    store.save(saved)
    assert store.load_or(DEFAULT, BACKENDS) == saved


def test_load_or_drops_drains_of_removed_instances(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    store.save(RoutingState({"legacy": 100.0}, "legacy", drained=frozenset({"legacy/z", "new/a"})))
    state = store.load_or(DEFAULT, BACKENDS)
    assert state.drained == frozenset({"new/a"})
    assert state.weights == {"legacy": 100.0, "new": 0.0}


def test_load_or_refuses_a_state_naming_a_removed_backend(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    store.save(RoutingState({"legacy": 50.0, "green": 50.0}, "green"))
    with pytest.raises(StateFileError, match="routes to backend green"):
        store.load_or(DEFAULT, BACKENDS)


def test_saved_file_is_readable_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    store.save(DEFAULT)
    data = json.loads(store.path.read_text())
    assert data["format"] == 1
    assert data["state"]["write_owner"] == "legacy"
