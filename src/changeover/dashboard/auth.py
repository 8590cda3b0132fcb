"""Who may read the dashboard and who may act on it: two tokens, signed sessions, the bind rule.

The operator token acts (approve, sign off, roll back): the page asks for it in every
confirmation dialog and sends it as ``Authorization: Bearer``, never in a cookie. The viewer
token only reads. Both come from a file (``--token-file``) or the environment, never from the
command line, where ``ps`` would show them. On loopback the page is open to read; bound to any
other address the dashboard refuses to start without a viewer token. Tokens are compared in
constant time and registered with the redactor, so no log line, answer or event carries one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from changeover.errors import SecretError, UsageError
from changeover.plan.secretref import FileRef
from changeover.proxy.config import is_loopback
from changeover.secrets import REDACTOR, has_reference, read_secret_file, resolve

OPERATOR_ENV = "CHANGEOVER_DASHBOARD_TOKEN"
VIEWER_ENV = "CHANGEOVER_DASHBOARD_VIEWER_TOKEN"
TOKEN_FILE = "dashboard-token"  # generated next to the journal when no operator token is given
MIN_TOKEN_CHARS = 16  # a token anyone can guess protects nothing


class Role(IntEnum):
    NONE = 0
    VIEWER = 1
    OPERATOR = 2


class Refused(Exception):
    """A request the dashboard refuses, answered with ``status`` and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Tokens:
    operator: str
    viewer: str | None = None
    operator_source: str = ""  # where the operator token came from, fit to print

    def role_of(self, presented: str | None) -> Role:
        """The role a presented token grants; both are compared, in constant time."""
        if not presented:
            return Role.NONE
        given = presented.encode()
        operator = hmac.compare_digest(given, self.operator.encode())
        viewer = self.viewer is not None and hmac.compare_digest(given, self.viewer.encode())
        if operator:
            return Role.OPERATOR
        return Role.VIEWER if viewer else Role.NONE


def load_tokens(
    *,
    token_file: Path | None,
    viewer_token_file: Path | None,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Tokens:
    """The operator token from ``token_file``, else $CHANGEOVER_DASHBOARD_TOKEN, else a token
    generated once into ``state_dir/dashboard-token`` (mode 600); the viewer token likewise
    from its file or $CHANGEOVER_DASHBOARD_VIEWER_TOKEN, or none."""
    env = os.environ if environ is None else environ
    operator = _token(token_file, env, OPERATOR_ENV, "--token-file")
    source = str(token_file) if token_file else f"${OPERATOR_ENV}"
    if operator is None:
        operator, source = _generated(state_dir / TOKEN_FILE), str(state_dir / TOKEN_FILE)
    viewer = _token(viewer_token_file, env, VIEWER_ENV, "--viewer-token-file")
    if viewer is not None and hmac.compare_digest(viewer.encode(), operator.encode()):
        raise UsageError(
            "the viewer token is the operator token: anyone who can read could act; "
            "give the viewer a token of its own"
        )
    return Tokens(operator, viewer, source)


def _token(file: Path | None, env: Mapping[str, str], name: str, option: str) -> str | None:
    if file is not None:
        value = read_secret_file(file, what=option).strip()
    elif env.get(name, "").strip():
        value = env[name].strip()
        REDACTOR.register(value)
    else:
        return None
    if len(value) < MIN_TOKEN_CHARS:
        where = option if file is not None else f"${name}"
        raise UsageError(
            f"the token from {where} has {len(value)} characters; a dashboard token needs at "
            f"least {MIN_TOKEN_CHARS} (make one: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    return value


def _generated(path: Path) -> str:
    """The token in ``path``, made (random, mode 600) if the file does not exist yet."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fp:
                fp.write(secrets.token_urlsafe(32) + "\n")
        except FileExistsError:
            pass  # another dashboard made it a moment ago: use that one
        except OSError as exc:
            raise UsageError(
                f"cannot write the dashboard's operator token to {path}: "
                f"{exc.strerror or exc}; give one with --token-file"
            ) from exc
    return read_secret_file(path, what="the dashboard's operator token").strip()


def check_bind(host: str, tokens: Tokens) -> None:
    """Beyond loopback, reading needs the viewer token: refuse to start without one."""
    if not is_loopback(host) and tokens.viewer is None:
        raise UsageError(
            f"refusing to listen on {host}: beyond loopback the dashboard needs a read-only "
            f"viewer token (--viewer-token-file FILE or ${VIEWER_ENV}); or listen on 127.0.0.1 "
            "and reach it through an SSH tunnel"
        )


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass(frozen=True)
class Session:
    id: str
    role: Role


class Sessions:
    """Signed session cookies ``<id>.<role>.<mac>``; the key lives only in this process, so a
    restarted dashboard asks its viewers to log in again. The CSRF token is derived from the
    session id with the same key: one per page session, nothing stored."""

    COOKIE = "changeover_dashboard"

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def new(self, role: Role) -> tuple[Session, str]:
        session = Session(secrets.token_urlsafe(18), role)
        return session, f"{session.id}.{int(role)}.{self._mac('session', session.id, role)}"

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) not in (0, 1):
            return None
        session_id, role = parts[0], Role(int(parts[1]))
        if not hmac.compare_digest(parts[2], self._mac("session", session_id, role)):
            return None
        return Session(session_id, role)

    def csrf(self, session: Session) -> str:
        return self._mac("csrf", session.id, Role.NONE)

    def csrf_ok(self, session: Session | None, presented: str | None) -> bool:
        if session is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.csrf(session).encode())

    def _mac(self, purpose: str, session_id: str, role: Role) -> str:
        message = f"{purpose}:{session_id}:{int(role)}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def register_plan_secrets(value: Any, base: Path) -> None:
    """Resolve every secret reference the plan holds that this process can resolve, only to
    register it with the redactor: a value journaled by mistake elsewhere is still scrubbed
    from every page and stream. References that cannot be resolved here are skipped."""
    if isinstance(value, FileRef):
        with contextlib.suppress(SecretError):
            read_secret_file(value.file, base=base)
    elif isinstance(value, str) and has_reference(value):
        with contextlib.suppress(SecretError):
            resolve(value)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            register_plan_secrets(getattr(value, name), base)
    elif isinstance(value, Mapping):
        for item in value.values():
            register_plan_secrets(item, base)
    elif isinstance(value, list | tuple):
        for item in value:
            register_plan_secrets(item, base)
