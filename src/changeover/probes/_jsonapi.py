"""A small client for the JSON HTTP APIs of monitoring systems (Prometheus, Loki, Elasticsearch).

It resolves a system's URL and headers at the moment of use (secret references), keeps TLS
verification on, and turns httpx and OS failures into ``Unreachable`` with a plain reason such
as ``cannot reach Prometheus at http://127.0.0.1:9: connection refused``.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from changeover.errors import UsageError
from changeover.probes.base import JSON, ProbeContext, Unreachable
from changeover.secrets import mask_url

#: how much of an unexpected (non-JSON) answer is kept for the reason
_TEXT_LIMIT = 300


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: the status, the parsed JSON body (None when not JSON) and its text."""

    status: int
    phrase: str
    body: JSON
    text: str

    @property
    def is_json(self) -> bool:
        return self.body is not None

    def snippet(self) -> str:
        """The first line of the body, shortened: what a server says when it says no."""
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return first[:_TEXT_LIMIT]


class JsonApi:
    """An async client for one system; use as ``async with JsonApi.for_system(...) as api``."""

    def __init__(self, label: str, url: str, headers: dict[str, str], timeout: float) -> None:
        self.label = label
        self.display_url = mask_url(url).rstrip("/")
        self._timeout = timeout
        try:
            self._client = httpx.AsyncClient(
                base_url=url, headers=headers, timeout=timeout, verify=True
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise UsageError(f"{label} URL {self.display_url!r} is not a valid URL") from exc

    @classmethod
    def for_system(
        cls, label: str, name: str, ctx: ProbeContext, kinds: tuple[str, ...], timeout: float
    ) -> JsonApi:
        """Resolve ``systems.<name>``'s URL and headers (secrets) and open a client."""
        system = ctx.system(name, kinds)
        url = ctx.secret(system.url, what=f"systems.{name}.url")
        headers = {
            key: ctx.secret(value, what=f"systems.{name}.headers.{key}")
            for key, value in system.headers.items()
        }
        return cls(label, url, headers, timeout)

    async def __aenter__(self) -> JsonApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        return await self._send("GET", path, params=params)

    async def post(self, path: str, body: JSON) -> Answer:
        return await self._send("POST", path, json_body=body)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: JSON = None,
    ) -> Answer:
        # A relative path keeps a prefix of the system URL (https://host/prometheus/api/v1/...).
        relative = path.lstrip("/")
        try:
            response = await self._client.request(method, relative, params=params, json=json_body)
        except httpx.TimeoutException as exc:
            raise Unreachable(
                f"no answer from {self.label} at {self.display_url} within {self._timeout:g}s"
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UsageError(
                f"{self.label} URL {self.display_url!r} is not an http:// or https:// URL"
            ) from exc
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"cannot reach {self.label} at {self.display_url}: {describe_http_error(exc)}"
            ) from exc
        try:
            body: JSON = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        return Answer(response.status_code, response.reason_phrase, body, response.text)

    def unexpected(self, answer: Answer, what: str) -> Unreachable:
        """The error for an answer that is neither the expected JSON nor a documented error."""
        said = f": {answer.snippet()}" if answer.snippet() else ""
        return Unreachable(
            f"{self.label} at {self.display_url} answered {what} with HTTP {answer.status} "
            f"{answer.phrase}{said}".rstrip()
        )


def describe_http_error(exc: BaseException) -> str:
    """A plain reason for a failed HTTP exchange, from the root OS / TLS / DNS cause."""
    causes: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in causes:
        causes.append(current)
        current = current.__cause__ or current.__context__
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed ({cause.reason or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection without a valid HTTP answer"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    return str(exc) or type(exc).__name__
