"""The framing rules and header rewriting, as pure functions."""

from __future__ import annotations

import pytest

from changeover.proxy.framing import BodyKind, Framing, FramingError, request_framing
from changeover.proxy.http import (
    RequestHead,
    end_to_end,
    forwarded_request_headers,
    request_id_from,
    simple_response,
)

HOST = (b"Host", b"example")


def frame(
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "POST",
    version: str = "1.1",
    target: str = "/x",
    max_body: int = 1000,
) -> Framing:
    return request_framing(method, version, target, headers, max_body_bytes=max_body)


def refused(headers: list[tuple[bytes, bytes]], **kwargs: object) -> int:
    with pytest.raises(FramingError) as info:
        frame(headers, **kwargs)  # type: ignore[arg-type]
    return info.value.status


def test_content_length_frames_the_body() -> None:
    framing = frame([HOST, (b"Content-Length", b" 12 ")])
    assert (framing.body, framing.length) == (BodyKind.LENGTH, 12)


def test_zero_content_length_means_no_body() -> None:
    assert frame([HOST, (b"Content-Length", b"0")]).body is BodyKind.NONE


def test_chunked_is_accepted_in_any_case() -> None:
    assert frame([HOST, (b"transfer-encoding", b"Chunked")]).body is BodyKind.CHUNKED


@pytest.mark.parametrize(
    "value", [b"identity, chunked", b"gzip, chunked", b"chunked, identity", b"x", b"chunked;q=1"]
)
def test_rejects_transfer_encoding_other_than_exactly_chunked(value: bytes) -> None:
    assert refused([HOST, (b"Transfer-Encoding", value)]) == 400


def test_rejects_conflicting_content_length_and_transfer_encoding() -> None:
    headers = [HOST, (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")]
    assert refused(headers) == 400


def test_rejects_transfer_encoding_in_http10() -> None:
    assert refused([(b"Transfer-Encoding", b"chunked")], version="1.0") == 400


@pytest.mark.parametrize("value", [b"+1", b"-1", b"1 2", b"0x1", b"1,1", b"", b"9" * 20])
def test_rejects_invalid_content_length(value: bytes) -> None:
    assert refused([HOST, (b"Content-Length", value)]) == 400


def test_rejects_repeated_content_length() -> None:
    assert refused([HOST, (b"Content-Length", b"1"), (b"Content-Length", b"1")]) == 400


def test_content_length_over_the_limit_is_413() -> None:
    assert refused([HOST, (b"Content-Length", b"1001")]) == 413


def test_http11_needs_exactly_one_valid_host() -> None:
    assert refused([]) == 400
    assert refused([HOST, HOST]) == 400
    assert refused([(b"Host", b"a b")]) == 400
    assert frame([], version="1.0").host is None


def test_rejects_bad_header_names_and_control_characters() -> None:
    assert refused([HOST, (b"X A", b"1")]) == 400
    assert refused([HOST, (b"X-A", b"a\x00b")]) == 400
    assert refused([HOST, (b"X-A", b"a\rb")]) == 400


def test_absolute_form_is_accepted_only_for_its_own_host() -> None:
    assert frame([HOST], method="GET", target="http://example/a?b").target == "/a?b"
    assert refused([HOST], method="GET", target="http://other/a") == 400
    assert refused([HOST], method="GET", target="example:80") == 400


def test_asterisk_only_for_options_and_connect_refused() -> None:
    assert frame([HOST], method="OPTIONS", target="*").target == "*"
    assert refused([HOST], method="GET", target="*") == 400
    assert refused([HOST], method="CONNECT", target="example:443") == 405


def test_expect_100_continue_is_understood_and_others_are_417() -> None:
    headers = [HOST, (b"Content-Length", b"5"), (b"Expect", b"100-Continue")]
    assert frame(headers).expect_continue
    assert refused([HOST, (b"Expect", b"magic")]) == 417


def test_unsupported_version_is_refused() -> None:
    assert refused([HOST], version="0.9") == 400
    assert refused([HOST], version="2.0") == 400


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"5"),
        (b"Proxy-Authorization", b"secret"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"Content-Type", b"text/plain"),
    ]
    assert end_to_end(headers) == [(b"Content-Type", b"text/plain")]


def test_forwarded_headers_extend_x_forwarded_for_and_replace_the_rest() -> None:
    headers = [
        HOST,
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Request-Id", b"old"),
        (b"Expect", b"100-continue"),
    ]
    out = dict(
        forwarded_request_headers(headers, client_ip="2.2.2.2", request_id="r1", host=b"example")
    )
    assert out[b"X-Forwarded-For"] == b"1.1.1.1, 2.2.2.2"
    assert out[b"X-Forwarded-Proto"] == b"http"
    assert out[b"X-Forwarded-Host"] == b"example"
    assert out[b"X-Request-Id"] == b"r1"
    assert b"Expect" not in out


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise() -> None:
    assert request_id_from("abc-123") == "abc-123"
    assert request_id_from("bad id\x01") != "bad id\x01"
    assert request_id_from(None) != request_id_from(None)


def test_request_head_reads_headers_and_cookies() -> None:
    head = RequestHead(
        method="POST",
        target="/a?b",
        path="/a",
        version="1.1",
        headers=[("Cookie", "sid=abc; theme=dark"), ("Cookie", "sid=zzz"), ("X-A", "1")],
        client=("1.2.3.4", 5),
        request_id="r",
    )
    assert head.header("x-a") == "1"
    assert head.cookies() == {"sid": "abc", "theme": "dark"}
    assert not head.has_body


def test_simple_response_carries_request_id_and_close() -> None:
    raw = simple_response(400, "bad request", request_id="r9", close=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"X-Request-Id: r9" in head
    assert b"Connection: close" in head
    assert body == b"bad request\n"
