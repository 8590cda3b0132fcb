"""The routing state on disk, so a restarted proxy keeps its weights, write owner and drains.

Every change is written atomically: a temporary file in the same folder, fsync, rename over the
old file, fsync of the folder. A crash leaves either the old or the new state, never half of one.
An unreadable or corrupt file stops the proxy with a clear error instead of silently falling back
to the config's defaults: mid-cutover, those defaults could flip the write owner back and split
writes across two databases. The operator fixes or deletes the file (the message says which).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from changeover.errors import ChangeoverError
from changeover.proxy.state import RoutingState

log = logging.getLogger(__name__)

FORMAT = 1


class StateFileError(ChangeoverError):
    """The routing state file cannot be read, parsed or written (exit 3)."""


class StateStore:
    """Loads and saves one proxy's ``RoutingState`` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> RoutingState | None:
        """The saved state, or None when there is no file yet (a first start)."""
        self._remove_stale_temporaries()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateFileError(
                f"routing state file {self.path} cannot be read: {reason}"
            ) from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"expected an object with format {FORMAT}")
            state = RoutingState.from_json(data["state"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(
                f"routing state file {self.path} is corrupt ({_reason(exc)}); restore it, or "
                "delete it to start from the config's weights and write owner (check which "
                "backend owns writes first)"
            ) from exc
        return state

    def load_or(self, default: RoutingState, backends: Mapping[str, Sequence[str]]) -> RoutingState:
        """The saved state checked against the configured backends, else ``default``.

        ``backends`` maps each backend to its instance names. Drains of instances no longer
        configured are dropped (with a warning); weights or a write owner naming a backend that
        is gone are an error, since the right routing then cannot be guessed.
        """
        state = self.load()
        if state is None:
            return default
        unknown = sorted(set(state.weights) - set(backends))
        if unknown or state.write_owner not in backends:
            missing = ", ".join(unknown or [state.write_owner])
            raise StateFileError(
                f"routing state file {self.path} routes to backend {missing}, which the config "
                f"no longer has (backends: {', '.join(backends)}); put it back in the config, "
                "or delete the state file to start from the config's weights"
            )
        weights = {name: state.weights.get(name, 0.0) for name in backends}
        known = {f"{b}/{name}" for b, names in backends.items() for name in names}
        gone = sorted(state.drained - known)
        if gone:
            log.warning("dropping drains of instances no longer configured: %s", ", ".join(gone))
        return replace(state, weights=weights, drained=state.drained & known)

    def save(self, state: RoutingState) -> None:
        """Write ``state`` atomically (temporary file, fsync, rename, fsync of the folder)."""
        payload = {
            "format": FORMAT,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": state.to_json(),
        }
        data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(
                dir=folder, prefix=f".{self.path.name}.", suffix=".tmp"
            )
        except OSError as exc:
            raise StateFileError(
                f"routing state cannot be saved in {folder}: {exc.strerror or exc}"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
            _fsync_folder(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StateFileError(
                f"routing state cannot be saved to {self.path}: {exc.strerror or exc}"
            ) from exc

    def commit(self, state: RoutingState, **changes: Any) -> RoutingState:
        """``state`` with ``changes`` and the next version, saved; the caller swaps it in after."""
        new = replace(state, **changes, version=state.version + 1)
        self.save(new)
        return new

    def _remove_stale_temporaries(self) -> None:
        # Left by a crash between writing and renaming; the real file is intact.
        folder = self.path.parent
        with contextlib.suppress(OSError):
            for stale in folder.glob(f".{self.path.name}.*.tmp"):
                stale.unlink()


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at line {exc.lineno}"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    return str(exc) or type(exc).__name__


__all__ = ["FORMAT", "StateFileError", "StateStore"]
