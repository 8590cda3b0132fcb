"""HTTP/1.1 vocabulary shared by the core and the routing code: the request head, the chooser's
answer, the observer, and the header rewriting a proxy must do.

This is the contract between the data path (server.py, upstream.py) and the rest of the proxy
(balance, hold, shadow, stats): plain data and small pure functions, no I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from itertools import count
from typing import Protocol

from changeover.proxy.state import Instance

#: Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and are never forwarded.
#: ``Upgrade`` is re-added by the core for a websocket (or other) upgrade it tunnels.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Headers the proxy sets itself on the forwarded request (an incoming value is replaced, or
#: for X-Forwarded-For extended).
_PROXY_SET = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"expect"}
)
IDEMPOTENT_RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_id_prefix = os.urandom(6).hex()
_id_counter = count(1)


def new_request_id() -> str:
    """A process-unique request id: a random per-process prefix and a counter (cheap, no clock)."""
    return f"{_id_prefix}-{next(_id_counter):x}"


def request_id_from(incoming: str | None) -> str:
    """Keep a well-formed incoming X-Request-Id (so traces join up), else make a new one."""
    if incoming is not None and _REQUEST_ID_OK.fullmatch(incoming):
        return incoming
    return new_request_id()


@dataclass
class RequestHead:
    """One request's head as the chooser and observer see it."""

    method: str
    target: str  # raw request target, "/a/b?x=1"
    path: str  # "/a/b", without the query
    version: str  # "1.1" or "1.0"
    headers: list[tuple[str, str]]  # in order, names as received, values decoded latin-1
    client: tuple[str, int]
    request_id: str

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def cookies(self) -> dict[str, str]:
        """Cookies of every Cookie header; the first occurrence of a name wins."""
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key.lower() != "cookie":
                continue
            for pair in value.split(";"):
                name, sep, val = pair.strip().partition("=")
                if sep and name and name not in found:
                    found[name] = val.strip().strip('"')
        return found

    @property
    def has_body(self) -> bool:
        te = self.header("transfer-encoding")
        if te is not None:
            return True
        length = self.header("content-length")
        return length is not None and length.strip() not in ("", "0")


@dataclass(frozen=True)
class Choice:
    """What the chooser decided for one request."""

    instance: Instance
    extra_response_headers: tuple[tuple[str, str], ...] = ()  # e.g. Set-Cookie for stickiness
    mirror: Instance | None = None  # also send this (GET, no body) request here; answer discarded
    # Called exactly once when the exchange this choice started ends: answered in full, failed,
    # or given up because the client went away (the balancer counts writes in flight with it).
    finished: Callable[[], None] | None = None


class Reject(Exception):
    """The chooser refuses the request; the core answers ``status`` (e.g. 503 + Retry-After)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


#: attempt 0 first; on a retry (idempotent request that never reached the upstream) 1, 2, ...
#: with the failed instances' keys in the third argument.
Chooser = Callable[[RequestHead, int, frozenset[str]], Awaitable[Choice]]


@dataclass(frozen=True)
class Captured:
    """A response captured for shadow comparison (body capped)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool


class Observer(Protocol):
    """Statistics and passive health; every method must be cheap and never raise."""

    def request_started(self, instance: Instance) -> None: ...

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None: ...

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None: ...

    def client_error(self, status: int, reason: str) -> None: ...

    def mirrored(
        self, head: RequestHead, primary: Captured, shadow: Captured | None, error: str | None
    ) -> None: ...


class NullObserver:
    """The observer used when none is given."""

    def request_started(self, instance: Instance) -> None:
        pass

    def request_finished(
        self, instance: Instance, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        pass

    def upstream_failed(self, instance: Instance, error: str, reached_upstream: bool) -> None:
        pass

    def client_error(self, status: int, reason: str) -> None:
        pass

    def mirrored(
        self, head: RequestHead, primary: Captured, shadow: Captured | None, error: str | None
    ) -> None:
        pass


RawHeaders = list[tuple[bytes, bytes]]


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The lower-cased tokens of every Connection header (names of more hop-by-hop headers)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def end_to_end(headers: RawHeaders, drop: frozenset[bytes] = frozenset()) -> RawHeaders:
    """The headers a proxy forwards: hop-by-hop ones, those named in Connection and ``drop``
    removed, order and case kept."""
    named = connection_tokens(headers)
    return [
        (name, value)
        for name, value in headers
        if (low := name.lower()) not in HOP_BY_HOP and low not in named and low not in drop
    ]


def forwarded_request_headers(
    headers: RawHeaders, *, client_ip: str, request_id: str, host: bytes | None
) -> RawHeaders:
    """End-to-end request headers plus X-Forwarded-For (appended), -Proto, -Host, X-Request-Id."""
    prior = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
    out = end_to_end(headers, _PROXY_SET)
    chain = b", ".join([*prior, client_ip.encode("ascii")])
    out.append((b"X-Forwarded-For", chain))
    out.append((b"X-Forwarded-Proto", b"http"))
    if host is not None:
        out.append((b"X-Forwarded-Host", host))
    out.append((b"X-Request-Id", request_id.encode("ascii")))
    return out


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def serialize_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


def simple_response(
    status: int,
    text: str,
    *,
    request_id: str | None,
    close: bool,
    headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """A complete answer made by the proxy itself: short plain-text body, request id, and
    ``Connection: close`` when the connection is about to be closed."""
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    lines: list[tuple[bytes, bytes]] = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode("ascii")),
    ]
    if request_id is not None:
        lines.append((b"X-Request-Id", request_id.encode("ascii")))
    lines.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    if close:
        lines.append((b"Connection", b"close"))
    head = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason_phrase(status), serialize_headers(lines))
    return head if head_only else head + body
