"""Secret references: ``${VAR}``, ``${VAR:-default}`` and ``{file: path}``, resolved only at use.

A plan never holds a secret value, only a reference. ``resolve()`` reads the environment or the
file at the moment a probe or action needs it and registers the value with the process-wide
``REDACTOR``, which every output boundary (journal, logs, reports, JSON, the console) passes text
through, so a resolved value cannot leak even through a library's error message.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from changeover.errors import SecretError

_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
REDACTED = "***"


class Redactor:
    """Remembers resolved secret values and scrubs them from any text or JSON-like value."""

    #: Short-lived values (session cookies a synthetic check logs in for every second) are
    #: remembered only this many at a time, oldest forgotten first: a long watch must not grow
    #: the set — and the cost of every scrub — without bound.
    EPHEMERAL_LIMIT = 1024

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ephemeral: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, value: str, *, ephemeral: bool = False) -> None:
        # Very short values would redact ordinary words; they are not credentials anyway.
        if len(value) < 4:
            return
        with self._lock:
            if not ephemeral:
                self._values.add(value)
                return
            self._ephemeral[value] = None
            self._ephemeral.move_to_end(value)
            while len(self._ephemeral) > self.EPHEMERAL_LIMIT:
                self._ephemeral.popitem(last=False)

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values.union(self._ephemeral), key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub_value(self, value: Any) -> Any:
        """Scrub strings anywhere inside dicts, lists and tuples (JSON-like data)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(str(k)): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


REDACTOR = Redactor()


def has_reference(text: str) -> bool:
    return bool(_REF.search(text))


def referenced_names(text: str) -> list[str]:
    """The environment variable names a string refers to (for the runbook's credential plan)."""
    return [m.group("name") for m in _REF.finditer(text)]


def resolve(text: str, *, environ: Mapping[str, str] | None = None, what: str = "value") -> str:
    """Substitute every ``${VAR}`` / ``${VAR:-default}`` in ``text``; missing VAR is an error.

    Values that came from the environment are registered for redaction. ``what`` names the
    place in the plan for the error message (e.g. ``systems.postgres.url``).
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        default = match.group("default")
        if name in env:
            value = env[name]
            REDACTOR.register(value)
            _register_url_password(value)
            return value
        if default is not None:
            return default
        raise SecretError(
            f"{what}: environment variable {name} is not set "
            f"(export {name}=... or give a default with ${{{name}:-...}})"
        )

    return _REF.sub(substitute, text)


def read_secret_file(path: str | Path, *, base: Path | None = None, what: str = "value") -> str:
    """Read a secret from a file (trailing newline stripped) and register it for redaction."""
    file = Path(path)
    if base is not None and not file.is_absolute():
        file = base / file
    try:
        value = file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"{what}: cannot read secret file {file}: {exc.strerror}") from exc
    REDACTOR.register(value)
    _register_url_password(value)
    return value


def _register_url_password(value: str) -> None:
    """A URL such as postgresql://u:pw@h/db: the password alone must be redacted as well."""
    match = re.match(r"^[a-z][a-z0-9+.-]*://[^:/@]*:(?P<pw>[^@/]+)@", value)
    if match:
        REDACTOR.register(match.group("pw"))


def mask_url(url: str) -> str:
    """Show a URL without its password, for display of configured (unresolved) targets."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]+@", r"\1:***@", url)
