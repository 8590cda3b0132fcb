"""The tcp probe against real sockets on loopback: a listening port and a port nobody holds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import ValidationError

from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.tcp import Attempt, Tcp, TcpParams, parse_endpoint


def check(**params: object) -> CheckResult:
    return asyncio.run(run_probe("tcp", TcpParams.model_validate(params), ProbeContext()))


@pytest.fixture
def listening() -> Iterator[str]:
    """A socket accepting connections (the kernel completes the handshake from the backlog)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def silent() -> Iterator[list[str]]:
    """Three ports that never answer: listening with a full accept queue, so SYNs are dropped."""
    held: list[socket.socket] = []
    endpoints = []
    for _ in range(3):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler = socket.create_connection(server.getsockname(), timeout=1)
        held += [server, filler]
        endpoints.append(f"127.0.0.1:{server.getsockname()[1]}")
    yield endpoints
    for sock in held:
        sock.close()


@pytest.fixture
def free_port() -> str:
    """A loopback port that was just free: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_passes_when_open_port_accepts_and_closed_port_refuses(
    listening: str, free_port: str
) -> None:
    result = check(open=[listening], closed=[free_port])
    assert result.status is Status.PASS, result.reason
    observed = {e["endpoint"]: e["observed"] for e in result.details["endpoints"]}
    assert observed == {listening: "open", free_port: "refused"}


def test_fails_when_port_that_must_be_open_refuses(free_port: str) -> None:
    result = check(open=[free_port])
    assert result.status is Status.FAIL
    assert result.reason == f"{free_port} must accept connections but refused the connection"


def test_fails_as_firewall_finding_when_closed_port_accepts(listening: str) -> None:
    result = check(closed=[listening])
    assert result.status is Status.FAIL
    assert result.reason == f"firewall: {listening} is reachable but must be closed"
    assert result.evidence[0].value == "open"
    assert result.evidence[0].expected == "closed"


def test_connects_over_ipv6_when_brackets_are_used() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with server:
        server.listen(4)
        result = check(open=[f"[::1]:{server.getsockname()[1]}"])
    assert result.status is Status.PASS, result.reason


def test_fails_when_port_that_must_be_open_does_not_answer(silent: list[str]) -> None:
    result = check(open=silent[:1], connect_timeout="300ms")
    assert result.status is Status.FAIL
    assert result.reason == f"{silent[0]} must accept connections but did not answer within 300ms"


def test_counts_silent_ports_as_closed_and_checks_them_concurrently(silent: list[str]) -> None:
    # One after the other, three silent ports would take 3 × connect_timeout.
    result = check(closed=silent, connect_timeout="500ms")
    assert result.status is Status.PASS, result.reason
    assert [e["observed"] for e in result.details["endpoints"]] == ["timeout"] * 3
    assert result.duration_ms is not None and result.duration_ms < 1200


def test_unresolvable_host_is_not_proof_of_a_closed_port() -> None:
    result = check(closed=["no-such-host.invalid:6379"])
    assert result.status is Status.FAIL
    assert "does not resolve" in result.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("db.internal:5432", ("db.internal", 5432)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1%eth0]:22", ("fe80::1%eth0", 22)),
    ],
)
def test_parses_host_port_endpoints(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"open": ["::1:80"]}, "write IPv6 addresses in brackets"),
        ({"open": ["db.internal"]}, "is not host:port"),
        ({"open": ["db:0"]}, "port must be between 1 and 65535"),
        ({"open": ["db:70000"]}, "port must be between 1 and 65535"),
        ({"open": ["[db]:80"]}, "is not an IPv6 address"),
        ({}, "at least one endpoint"),
        ({"open": ["db:1"], "closed": ["db:1"]}, "both open and closed"),
        ({"open": ["db:1"], "connect_timeout": "20s"}, "must be shorter than timeout"),
    ],
)
def test_rejects_bad_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TcpParams.model_validate(params)


def test_connect_timeout_is_a_duration() -> None:
    params = TcpParams.model_validate({"open": ["db:1"], "connect_timeout": "500ms"})
    assert params.connect_timeout == timedelta(milliseconds=500)


@pytest.mark.parametrize(
    ("expected", "attempt", "ok", "reason"),
    [
        ("open", Attempt("a:1", "timeout", 2000.0), False, "a:1 must accept connections but did "
         "not answer within 2s"),
        ("open", Attempt("a:1", "unreachable", 1.0, "no route to host"), False,
         "a:1 must accept connections but is no route to host"),
        ("closed", Attempt("a:1", "timeout", 2000.0), True, None),
        ("closed", Attempt("a:1", "unreachable", 1.0, "no route to host"), True, None),
        ("closed", Attempt("a:1", "error", 1.0, "permission denied"), False,
         "cannot check a:1: permission denied"),
    ],
)  # fmt: skip
def test_interpret_judges_each_outcome(
    expected: str, attempt: Attempt, ok: bool, reason: str | None
) -> None:
    params = TcpParams.model_validate({expected: ["a:1"]})
    result = Tcp().interpret(params, [attempt])
    assert result.evidence[0].ok is ok
    assert (result.status is Status.PASS) is ok
    if reason is not None:
        assert result.reason == reason
