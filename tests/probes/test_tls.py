"""The tls probe against real TLS servers on loopback serving certificates made in the test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.tls import TlsHandshake, TlsParams, hostname_matches, judge_certificate
from support.certs import KeyPair, make_ca, make_leaf

LOCAL = ["localhost", "127.0.0.1"]


@dataclass(frozen=True)
class Certs:
    ca: KeyPair
    valid: KeyPair
    expired: KeyPair
    wrong_host: KeyPair
    untrusted: KeyPair
    soon: KeyPair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return Certs(
        ca=ca,
        valid=make_leaf(directory, "valid", LOCAL, ca=ca),
        # An extra hour so that whole days are stable while the test runs.
        expired=make_leaf(
            directory,
            "expired",
            LOCAL,
            ca=ca,
            not_before=timedelta(days=-90),
            not_after=-timedelta(days=3, hours=1),
        ),
        wrong_host=make_leaf(directory, "wrong-host", ["api.example.com"], ca=ca),
        untrusted=make_leaf(directory, "untrusted", LOCAL, ca=None),
        soon=make_leaf(directory, "soon", LOCAL, ca=ca, not_after=timedelta(days=5, hours=1)),
    )


@contextlib.asynccontextmanager
async def tls_server(pair: KeyPair, seen_names: list[str] | None = None) -> AsyncIterator[int]:
    """A TLS server on a free loopback port that completes the handshake and hangs up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert_file, pair.key_file)
    if seen_names is not None:

        def remember(sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
            seen_names.append(name or "")

        context.sni_callback = remember

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    # Refused handshakes are the point of several tests; asyncio would log each one.
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def check(pair: KeyPair, seen_names: list[str] | None = None, **params: Any) -> CheckResult:
    async def main() -> CheckResult:
        async with tls_server(pair, seen_names) as port:
            return await run_probe("tls", TlsParams(port=port, **params), ProbeContext())

    return asyncio.run(main())


def measure(result: CheckResult, name: str) -> Any:
    return next(m for m in result.evidence if m.name == name)


def test_tls_passes_for_a_valid_certificate_from_a_trusted_ca(certs: Certs) -> None:
    result = check(certs.valid, host="127.0.0.1", ca_file=str(certs.ca.cert_file))
    assert result.status is Status.PASS, result.reason
    assert measure(result, "days_left").value == 89
    assert measure(result, "chain_verified").value is True
    assert measure(result, "hostname_matched").value is True
    assert measure(result, "issuer").value == "Changeover Test CA"
    assert measure(result, "sans").value == LOCAL
    assert "issued by Changeover Test CA" in result.reason


def test_tls_sends_the_server_name_as_sni(certs: Certs) -> None:
    seen: list[str] = []
    result = check(
        certs.valid,
        seen,
        host="127.0.0.1",
        server_name="localhost",
        ca_file=str(certs.ca.cert_file),
    )
    assert result.status is Status.PASS, result.reason
    assert seen == ["localhost"]


def test_tls_fails_for_an_expired_certificate(certs: Certs) -> None:
    result = check(certs.expired, host="127.0.0.1", ca_file=str(certs.ca.cert_file))
    assert result.status is Status.FAIL
    assert "certificate expired 3 days ago" in result.reason
    assert "not trusted" not in result.reason
    assert measure(result, "chain_verified").value is False
    assert measure(result, "issuer_trusted").ok is True
    assert measure(result, "days_left").value == -4


def test_tls_fails_when_certificate_is_for_another_host(certs: Certs) -> None:
    result = check(
        certs.wrong_host,
        host="127.0.0.1",
        server_name="www.example.com",
        ca_file=str(certs.ca.cert_file),
    )
    assert result.status is Status.FAIL
    assert result.reason.endswith("certificate is for api.example.com, not www.example.com")
    assert measure(result, "hostname_matched").ok is False


def test_tls_ignores_the_host_name_when_told_to(certs: Certs) -> None:
    result = check(
        certs.wrong_host,
        host="127.0.0.1",
        server_name="www.example.com",
        ca_file=str(certs.ca.cert_file),
        check_hostname=False,
    )
    assert result.status is Status.PASS, result.reason


def test_tls_fails_for_a_self_signed_certificate(certs: Certs) -> None:
    result = check(certs.untrusted, host="127.0.0.1", ca_file=str(certs.ca.cert_file))
    assert result.status is Status.FAIL
    assert result.reason.endswith(
        "certificate not trusted (self-signed or unknown issuer): self-signed certificate"
    )
    assert measure(result, "days_left").value == 89  # still read, from the unverified handshake


def test_tls_uses_the_system_trust_store_by_default(certs: Certs) -> None:
    result = check(certs.valid, host="127.0.0.1")
    assert result.status is Status.FAIL
    assert "certificate not trusted (self-signed or unknown issuer): unable to get local" in (
        result.reason
    )


def test_tls_fails_when_expiring_within_min_days(certs: Certs) -> None:
    result = check(certs.soon, host="127.0.0.1", ca_file=str(certs.ca.cert_file))
    assert result.status is Status.FAIL
    assert result.reason.endswith("expires in 5 days (minimum 14)")
    relaxed = check(certs.soon, host="127.0.0.1", ca_file=str(certs.ca.cert_file), min_days=5)
    assert relaxed.status is Status.PASS, relaxed.reason


def test_tls_reports_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = asyncio.run(run_probe("tls", TlsParams(host="127.0.0.1", port=port), ProbeContext()))
    assert result.status is Status.FAIL
    assert result.reason == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_tls_reports_a_server_that_does_not_speak_tls() -> None:
    async def main() -> CheckResult:
        async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await run_probe("tls", TlsParams(host="127.0.0.1", port=port), ProbeContext())
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert result.status is Status.FAIL
    assert "did not answer with TLS" in result.reason


def test_tls_reports_a_server_that_never_completes_the_handshake() -> None:
    # Listening without ever accepting: the TCP connection opens, no TLS answer follows.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        params = TlsParams(host="127.0.0.1", port=port, timeout=2)
        result = asyncio.run(run_probe("tls", params, ProbeContext()))
    assert result.status is Status.FAIL
    assert result.reason == f"127.0.0.1:{port} did not complete a TLS handshake within 2s"


def test_tls_reports_a_missing_ca_file_as_an_error(certs: Certs, tmp_path: Path) -> None:
    result = check(certs.valid, host="127.0.0.1", ca_file=str(tmp_path / "nope.pem"))
    assert result.status is Status.ERROR
    assert result.reason == f"ca_file: {tmp_path / 'nope.pem'} does not exist"


# --- pure parts -------------------------------------------------------------------------------


def handshake(pair: KeyPair, at: datetime, server_name: str = "localhost") -> TlsHandshake:
    der = pair.cert.public_bytes(serialization.Encoding.DER)
    return TlsHandshake("h:443", server_name, der, None, None, "TLSv1.3", at)


def test_judge_names_every_problem_at_once(certs: Certs) -> None:
    raw = handshake(certs.expired, datetime.now(UTC), server_name="www.example.com")
    result = judge_certificate(TlsParams(host="h"), raw)
    assert result.status is Status.FAIL
    assert "certificate expired 3 days ago" in result.reason
    assert "certificate is for localhost, 127.0.0.1, not www.example.com" in result.reason


def test_judge_counts_hours_for_a_fresh_expiry(certs: Certs) -> None:
    just_after = certs.valid.cert.not_valid_after_utc + timedelta(hours=2, minutes=5)
    result = judge_certificate(TlsParams(host="h"), handshake(certs.valid, just_after))
    assert "certificate expired 2 hours ago" in result.reason


def test_judge_fails_a_certificate_not_yet_valid(certs: Certs) -> None:
    before = certs.valid.cert.not_valid_before_utc - timedelta(days=1)
    result = judge_certificate(TlsParams(host="h"), handshake(certs.valid, before))
    assert result.status is Status.FAIL
    assert "certificate is not valid before" in result.reason


@pytest.mark.parametrize(
    ("name", "dns", "ips", "expected"),
    [
        ("api.example.com", ("api.example.com",), (), True),
        ("API.Example.com.", ("api.example.com",), (), True),
        ("a.example.com", ("*.example.com",), (), True),
        ("a.b.example.com", ("*.example.com",), (), False),
        ("example.com", ("*.example.com",), (), False),
        ("x.com", ("*.com",), (), False),
        ("127.0.0.1", ("127.0.0.1",), (), False),  # an IP is only matched by an IP SAN
        ("127.0.0.1", (), ("127.0.0.1",), True),
        ("::1", (), ("0:0:0:0:0:0:0:1",), True),
        ("bücher.example", ("xn--bcher-kva.example",), (), True),
    ],
)
def test_hostname_matching_follows_rfc_6125(
    name: str, dns: tuple[str, ...], ips: tuple[str, ...], expected: bool
) -> None:
    assert hostname_matches(name, dns, ips) is expected
