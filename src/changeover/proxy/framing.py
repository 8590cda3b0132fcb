"""Request framing rules: the one place that decides how long a request body is, or refuses it.

llhttp (httptools, all leniencies off) already rejects most malformed input: Content-Length
with Transfer-Encoding, duplicate or non-digit Content-Length, ``chunked`` not last, bad chunk
sizes, obsolete line folding, whitespace before the colon, bare CR/LF, NUL and control bytes,
bad header-name characters. What it lets through, and this module refuses (400, connection
closed): Transfer-Encoding other than exactly ``chunked`` (``identity, chunked``, ``gzip,
chunked``), Transfer-Encoding in HTTP/1.0, HTTP/0.9 and unknown versions, a missing or repeated
Host in HTTP/1.1, an invalid Host, absolute-form naming another host, CONNECT and authority-form.
The checks are repeated here where they are cheap so the rules do not rest on parser internals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%\-]*)(:[0-9]{0,5})?")
_ABSOLUTE = re.compile(r"(?i)https?://([^/?#]*)(.*)")


class BodyKind(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"


@dataclass(frozen=True)
class Framing:
    """How the request body is delimited, and the request target in origin-form."""

    body: BodyKind
    length: int  # for LENGTH; 0 otherwise
    target: str  # origin-form ("/a?b") or "*"
    host: bytes | None
    expect_continue: bool


class FramingError(Exception):
    """The request cannot be framed safely; answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def request_framing(
    method: str,
    version: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    *,
    max_body_bytes: int,
) -> Framing:
    """Validate a parsed request head and say how its body is framed; raise ``FramingError``."""
    if version not in ("1.1", "1.0"):
        raise FramingError(400, f"unsupported HTTP version {version}")
    if method == "CONNECT":
        raise FramingError(405, "CONNECT is not supported by this proxy")
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    hosts: list[bytes] = []
    expect: list[bytes] = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise FramingError(400, "invalid character in a header name")
        if _BAD_VALUE.search(value):
            raise FramingError(400, "control character in a header value")
        low = name.lower()
        if low == b"content-length":
            lengths.append(value)
        elif low == b"transfer-encoding":
            encodings.append(value)
        elif low == b"host":
            hosts.append(value)
        elif low == b"expect":
            expect.append(value)

    if len(hosts) > 1:
        raise FramingError(400, "more than one Host header")
    host = hosts[0].strip() if hosts else None
    if host is None and version == "1.1":
        raise FramingError(400, "HTTP/1.1 request without a Host header")
    if host is not None and not _HOST.fullmatch(host):
        raise FramingError(400, "invalid Host header")
    target = _origin_form(method, target, host)

    continue_expected = False
    for value in expect:
        if value.strip().lower() != b"100-continue":
            raise FramingError(417, "only 'Expect: 100-continue' is supported")
        continue_expected = version == "1.1"

    if encodings:
        if lengths:
            raise FramingError(400, "both Content-Length and Transfer-Encoding")
        if version == "1.0":
            raise FramingError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(encodings) > 1 or encodings[0].strip().lower() != b"chunked":
            raise FramingError(400, "Transfer-Encoding other than exactly 'chunked'")
        return Framing(BodyKind.CHUNKED, 0, target, host, continue_expected)
    if lengths:
        if len(lengths) > 1:
            raise FramingError(400, "more than one Content-Length header")
        raw = lengths[0].strip(b" \t")
        if not _DIGITS.fullmatch(raw):
            raise FramingError(400, "invalid Content-Length")
        length = int(raw)
        if length > max_body_bytes:
            raise FramingError(413, f"request body of {length} bytes is over the limit")
        if length:
            return Framing(BodyKind.LENGTH, length, target, host, continue_expected)
    return Framing(BodyKind.NONE, 0, target, host, False)


def _origin_form(method: str, target: str, host: bytes | None) -> str:
    """Origin-form targets pass; absolute-form is accepted only for the Host it came with
    (routing is by path, so another authority would be a confused-deputy request) and is
    rewritten to origin-form; ``*`` only for OPTIONS."""
    if target.startswith("/"):
        return target
    if target == "*" and method == "OPTIONS":
        return target
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        raise FramingError(400, "request target must be a path")
    authority, rest = absolute.group(1), absolute.group(2)
    if host is None or authority.lower().encode("latin-1") != host.lower():
        raise FramingError(400, "absolute-form request target names another host")
    return rest if rest.startswith("/") else "/" + rest
