"""The plan's secret fields: a ``${VAR}`` string or ``{file: path}``, never a literal secret.

``SecretRef`` is the annotated type used by every plan field that may carry a credential (URLs,
tokens, headers). Validation rejects a literal password inside a URL; ``resolve_ref`` turns a
reference into its value at the moment of use (see ``changeover.secrets``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from changeover.errors import SecretError
from changeover.secrets import has_reference, read_secret_file, resolve


class FileRef(BaseModel):
    """``{file: /run/secrets/pg_url}``: the secret is the file's content (newline stripped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str


_LITERAL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:[^@/\s]+@", re.IGNORECASE)


def _no_literal_password(value: str | FileRef) -> str | FileRef:
    if isinstance(value, str) and not has_reference(value) and _LITERAL_PASSWORD.match(value):
        raise ValueError(
            "contains a literal password; put the URL in an environment variable and write "
            "'${PG_URL}' (or {file: path}) instead"
        )
    return value


SecretRef = Annotated[str | FileRef, AfterValidator(_no_literal_password)]


def resolve_ref(
    value: Any,
    *,
    base: Path | None = None,
    environ: Mapping[str, str] | None = None,
    what: str = "value",
) -> str:
    """Resolve a ``SecretRef`` (or a plain string) to its value; errors never show values."""
    if isinstance(value, FileRef):
        return read_secret_file(value.file, base=base, what=what)
    if isinstance(value, str):
        return resolve(value, environ=environ, what=what)
    raise SecretError(f"{what}: expected a string or {{file: path}}, got {type(value).__name__}")
