"""The signed session cookie both sample apps share: ``co_session=<user id>.<expiry>.<hmac>``.

The HMAC-SHA256 covers ``<user id>.<expiry>`` (Unix seconds) under one secret, so a cookie the
legacy app set is valid on every new-app instance given the same secret: a user logged in before
the cutover stays logged in after it. Pure functions and a small class; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

COOKIE_NAME = "co_session"
SESSION_SECONDS = 24 * 3600
MIN_SECRET_BYTES = 16
MAX_USER_ID = 2**63 - 1  # PostgreSQL bigint, SQLite's integer


@dataclass(frozen=True)
class IssuedSession:
    """A cookie value just signed, and when it stops being valid."""

    value: str
    expires_at: datetime
    max_age: int

    def set_cookie(self) -> str:
        """The ``Set-Cookie`` header value (HttpOnly: scripts never see it; Lax: no CSRF posts)."""
        return f"{COOKIE_NAME}={self.value}; Path=/; Max-Age={self.max_age}; HttpOnly; SameSite=Lax"


class SessionSigner:
    """Issues and checks ``co_session`` values; ``clock`` is injectable for expiry tests."""

    def __init__(
        self,
        secret: bytes,
        *,
        lifetime: int = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a session secret needs at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.lifetime = lifetime
        self.clock = clock

    def _signature(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, user_id: int) -> IssuedSession:
        expires = int(self.clock()) + self.lifetime
        payload = f"{user_id}.{expires}"
        return IssuedSession(
            value=f"{payload}.{self._signature(payload)}",
            expires_at=datetime.fromtimestamp(expires, UTC),
            max_age=self.lifetime,
        )

    def verify(self, value: str | None) -> int | None:
        """The user id of a valid, unexpired cookie value; None for anything else."""
        if not value:
            return None
        parts = value.split(".")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            return None
        user_id, expires, signature = int(parts[0]), int(parts[1]), parts[2]
        expected = self._signature(f"{parts[0]}.{parts[1]}")
        # Constant time: how much of a forged signature matched must not show in the timing.
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        if expires <= self.clock() or not 0 < user_id <= MAX_USER_ID:
            return None
        return user_id


def cookie_from_header(header: str | None) -> str | None:
    """The ``co_session`` value of a ``Cookie`` request header (the first one), or None."""
    if not header:
        return None
    for pair in header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name == COOKIE_NAME:
            return value.strip().strip('"')
    return None
