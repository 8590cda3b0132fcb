"""Malformed and request-smuggling requests sent over raw sockets to a running proxy.

Each case is answered with a 4xx and the connection closed (or closed without an answer); a
normal request on a new connection is then served, and the backend (a separate process) never
saw the request hidden behind the malformed one (``/smuggled``).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import pytest

from changeover.proxy.limits import Limits
from changeover.proxy.state import Instance
from support.backends import BackendProcess, start_backend
from support.proxy_harness import (
    ProxyThread,
    Reader,
    connect,
    first_not_excluded,
    get,
    read_response,
)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + body + SMUGGLED


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


CASES: dict[str, tuple[bytes, int]] = {
    # Content-Length and Transfer-Encoding together (CL.TE / TE.CL)
    "cl_te": (post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    "te_cl": (post(b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", b"0\r\n\r\n"), 400),
    "te_cl_obfuscated_te": (
        post(b"Content-Length: 6\r\nTransfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    # Transfer-Encoding obfuscations (TE.TE)
    "te_identity_then_chunked": (
        post(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_chunked_then_identity": (
        post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_gzip_chunked": (post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 400),
    "te_xchunked": (post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 400),
    "te_quoted": (post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"), 400),
    "te_trailing_comma": (post(b"Transfer-Encoding: chunked,\r\n", b"0\r\n\r\n"), 400),
    "te_space_before_colon": (post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400),
    "te_vertical_tab": (post(b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n"), 400),
    "te_obs_fold": (post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400),
    "te_duplicated": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_duplicated_identity": (
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_in_http10": (
        b"POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    # Content-Length variants
    "cl_duplicate_same": (post(b"Content-Length: 4\r\nContent-Length: 4\r\n", b"abcd"), 400),
    "cl_duplicate_different": (post(b"Content-Length: 4\r\nContent-Length: 40\r\n", b"abcd"), 400),
    "cl_list": (post(b"Content-Length: 4, 4\r\n", b"abcd"), 400),
    "cl_plus_sign": (post(b"Content-Length: +4\r\n", b"abcd"), 400),
    "cl_negative": (post(b"Content-Length: -4\r\n", b"abcd"), 400),
    "cl_hex": (post(b"Content-Length: 0x4\r\n", b"abcd"), 400),
    "cl_inner_space": (post(b"Content-Length: 4 4\r\n", b"abcd"), 400),
    "cl_overflow": (post(b"Content-Length: 99999999999999999999999\r\n", b"abcd"), 400),
    "cl_space_before_colon": (post(b"Content-Length : 4\r\n", b"abcd"), 400),
    "cl_over_body_limit": (post(b"Content-Length: 2000000\r\n", b"abcd"), 413),
    # header syntax
    "obs_fold": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n" + SMUGGLED, 400),
    "space_before_colon": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n" + SMUGGLED, 400),
    "bare_lf_line_endings": (b"GET /echo HTTP/1.1\nHost: t\n\n" + SMUGGLED, 400),
    "bare_lf_in_value": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: b\nc\r\n\r\n" + SMUGGLED, 400),
    "bare_cr_in_value": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: b\rc\r\n\r\n" + SMUGGLED, 400),
    "nul_in_value": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: b\x00c\r\n\r\n" + SMUGGLED, 400),
    "nul_in_target": (b"GET /ec\x00ho HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    "invalid_header_name": (b"GET /echo HTTP/1.1\r\nHost: t\r\nX(A): b\r\n\r\n" + SMUGGLED, 400),
    "empty_header_name": (b"GET /echo HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n" + SMUGGLED, 400),
    "control_char_in_value": (
        b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: \x01\r\n\r\n" + SMUGGLED,
        400,
    ),
    "header_too_large": (
        b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n" + SMUGGLED,
        431,
    ),
    "too_many_headers": (
        b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"X-A: aaaaaaaaaa\r\n" * 5000 + b"\r\n" + SMUGGLED,
        431,
    ),
    # request line and Host
    "missing_host_http11": (b"GET /echo HTTP/1.1\r\n\r\n" + SMUGGLED, 400),
    "duplicate_host": (b"GET /echo HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n" + SMUGGLED, 400),
    "absolute_form_other_host": (
        b"GET http://elsewhere/echo HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED,
        400,
    ),
    "http09_request": (b"GET /echo\r\n\r\n" + SMUGGLED, 400),
    "unknown_version": (b"GET /echo HTTP/1.2\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    "lowercase_method": (b"get /echo HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    "space_in_target": (b"GET /e cho HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    "connect_method": (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n" + SMUGGLED, 405),
    "unsupported_expect": (post(b"Content-Length: 4\r\nExpect: 200-ok\r\n", b"abcd"), 417),
    "upgrade_with_body": (
        post(b"Content-Length: 4\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", b"abcd"),
        400,
    ),
    # chunk framing
    "chunk_size_negative": (chunked(b"-1\r\nab\r\n0\r\n\r\n"), 400),
    "chunk_size_overflow": (chunked(b"FFFFFFFFFFFFFFFFF1\r\nab\r\n0\r\n\r\n"), 400),
    "chunk_size_0x_prefix": (chunked(b"0x2\r\nab\r\n0\r\n\r\n"), 400),
    "chunk_size_trailing_space": (chunked(b"2 \r\nab\r\n0\r\n\r\n"), 400),
    "chunk_size_not_hex": (chunked(b"zz\r\nab\r\n0\r\n\r\n"), 400),
    "chunk_longer_than_declared": (chunked(b"2\r\nabcd\r\n0\r\n\r\n"), 400),
    "chunk_lf_only": (chunked(b"2\nab\n0\n\n"), 400),
    "chunk_extension_bare_lf": (chunked(b"2;a\nb\r\nab\r\n0\r\n\r\n"), 400),
}


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with start_backend("smuggling") as process:
        yield process


@pytest.fixture(scope="module")
def proxy(backend: BackendProcess) -> Iterator[ProxyThread]:
    instance = Instance("legacy", "a", backend.host, backend.port)
    proxy = ProxyThread(
        first_not_excluded([instance]),
        Limits(max_body_bytes=1_000_000, header_timeout=5.0),
    )
    yield proxy
    proxy.close()


def _answer_then_close(sock: socket.socket, reader: Reader) -> int | None:
    """The status answered (None if the proxy closed without answering); asserts the close."""
    try:
        response = read_response(reader)
    except (ConnectionError, OSError):
        return None
    assert response.header("connection") == "close"
    assert reader.rest() == b"", "the proxy kept talking after rejecting the request"
    return response.status


@pytest.mark.parametrize(("raw", "status"), list(CASES.values()), ids=list(CASES))
def test_malformed_request_is_rejected_and_nothing_is_smuggled(
    proxy: ProxyThread, backend: BackendProcess, raw: bytes, status: int
) -> None:
    sock, reader = connect(proxy.port)
    with sock:
        with contextlib.suppress(ConnectionError):  # it may close while a huge head is sent
            sock.sendall(raw)
        got = _answer_then_close(sock, reader)
    assert got in (status, None)
    if status != 431:  # a huge head may be cut short by the close; the others are answered
        assert got == status

    after = get(proxy.port, "/echo")
    assert after.status == 200
    assert json.loads(after.body)["target"] == "/echo"
    targets = backend.count()["targets"]
    assert isinstance(targets, list)
    assert not [t for t in targets if "smuggled" in t]
