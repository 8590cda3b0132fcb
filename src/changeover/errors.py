"""The one exception tree of changeover; every foreseeable failure becomes one of these.

Library errors (psycopg, redis, ssl, dns, OS) are translated where they happen, with
``raise ChangeoverError(...) from exc``; the CLI catches ``ChangeoverError`` at the boundary,
prints the message and exits with the class's ``exit_code``. A user never sees a traceback for
a foreseeable failure.

    ChangeoverError                 exit 3  something outside changeover is wrong
    ├── UsageError                  exit 2  bad input: arguments, files, references
    │   ├── PlanError               exit 2  the plan file does not validate (file:line:col each)
    │   └── SecretError             exit 2  a ${ENV} or file reference cannot be resolved
    ├── JournalError                exit 3  the journal cannot be opened or written
    │   └── JournalCorrupt          exit 4  the hash chain does not verify
    └── ServiceError                exit 3  an embedded server (PostgreSQL, Redis) failed to start

Exit codes (documented in the README): 0 success, 1 a required check failed, 2 bad input,
3 environment failure, 4 journal tampering detected, 130 interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass


class ChangeoverError(Exception):
    """Base of every error changeover raises on purpose; ``str(err)`` is the operator message."""

    exit_code = 3


class UsageError(ChangeoverError):
    """The operator asked for something that cannot be done as asked (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class PlanIssue:
    """One problem in a plan file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        prefix = f"{self.path}: " if self.path else ""
        return f"{where}: {prefix}{self.message}"


class PlanError(UsageError):
    """The plan does not validate; carries every issue found, each with file:line:col."""

    def __init__(self, issues: list[PlanIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class SecretError(UsageError):
    """A secret reference (``${VAR}`` or a file) cannot be resolved; never includes a value."""


class JournalError(ChangeoverError):
    """The journal store cannot be opened, read or written."""


class JournalCorrupt(JournalError):
    """The journal's hash chain is broken: an event was edited, deleted, inserted or reordered."""

    exit_code = 4


class ServiceError(ChangeoverError):
    """An embedded server could not be started or stopped."""
