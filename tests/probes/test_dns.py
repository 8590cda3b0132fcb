"""The dns probe against a real DNS server (dnslib) on a free loopback UDP port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from pydantic import ValidationError

from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.dns import DnsAnswer, DnsParams, judge_answer, normalise, parse_resolver

ZONE = """
app.example.com.     300   IN A     10.0.0.1
app.example.com.     300   IN A     10.0.0.2
app.example.com.     300   IN AAAA  2001:db8::1
long.example.com.    86400 IN A     10.0.0.3
www.example.com.     300   IN CNAME app.example.com.
example.com.         300   IN MX    10 mail.example.com.
example.com.         300   IN MX    20 backup.example.com.
example.com.         300   IN TXT   "v=spf1 -all"
example.com.         300   IN NS    ns1.example.com.
"""


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from ZONE: NXDOMAIN for unknown names, an empty answer for a missing type,
    SERVFAIL for broken.example.com."""

    def __init__(self) -> None:
        self.records = RR.fromZone(ZONE)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        if qname == "broken.example.com.":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        same_name = [rr for rr in self.records if rr.rname == qname]
        for rr in same_name:
            if rr.rtype == qtype:
                reply.add_answer(rr)
        if not same_name:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def resolver() -> Iterator[str]:
    server = DNSServer(Zone(), address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    port = server.server.server_address[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        server.server.server_close()


def lookup(**params: Any) -> CheckResult:
    return asyncio.run(run_probe("dns", DnsParams(**params), ProbeContext()))


def test_dns_passes_when_records_are_exactly_the_expected_ones(resolver: str) -> None:
    result = lookup(
        name="app.example.com", expected=["10.0.0.2", "10.0.0.1"], resolver=resolver, max_ttl=300
    )
    assert result.status is Status.PASS, result.reason
    values = {m.name: m.value for m in result.evidence}
    assert sorted(values["answers"]) == ["10.0.0.1", "10.0.0.2"]
    assert values["ttl"] == 300


def test_dns_fails_when_a_value_is_wrong(resolver: str) -> None:
    result = lookup(name="app.example.com", expected=["10.0.0.1", "10.0.0.9"], resolver=resolver)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"A app.example.com at {resolver}: missing 10.0.0.9; unexpected 10.0.0.2 "
        "(got 10.0.0.1, 10.0.0.2)"
    )


def test_dns_allows_extra_values_when_not_exact(resolver: str) -> None:
    result = lookup(name="app.example.com", expected=["10.0.0.1"], exact=False, resolver=resolver)
    assert result.status is Status.PASS, result.reason


def test_dns_fails_when_ttl_is_too_high(resolver: str) -> None:
    result = lookup(name="long.example.com", expected=["10.0.0.3"], resolver=resolver, max_ttl=300)
    assert result.status is Status.FAIL
    assert "TTL 86400s is above the maximum 300s" in result.reason
    assert [m.name for m in result.evidence if m.ok is False] == ["ttl"]


def test_dns_absent_passes_on_nxdomain(resolver: str) -> None:
    result = lookup(name="new.example.com", absent=True, resolver=resolver)
    assert result.status is Status.PASS, result.reason
    assert "absent as expected (the name does not exist)" in result.reason


def test_dns_absent_passes_when_the_name_has_no_such_records(resolver: str) -> None:
    result = lookup(name="long.example.com", type="AAAA", absent=True, resolver=resolver)
    assert result.status is Status.PASS, result.reason


def test_dns_absent_fails_when_records_exist(resolver: str) -> None:
    result = lookup(name="app.example.com", absent=True, resolver=resolver)
    assert result.status is Status.FAIL
    assert result.reason == "A app.example.com has records 10.0.0.1, 10.0.0.2 (expected none)"


def test_dns_fails_on_nxdomain_when_records_are_expected(resolver: str) -> None:
    result = lookup(name="typo.example.com", expected=["10.0.0.1"], resolver=resolver)
    assert result.status is Status.FAIL
    assert result.reason == "A typo.example.com: the name does not exist (NXDOMAIN)"


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("app.example.com", "aaaa", ["2001:DB8:0::1"]),
        ("www.example.com", "CNAME", ["APP.example.com."]),
        ("example.com", "MX", ["10 mail.example.com", "backup.example.com"]),
        ("example.com", "TXT", ['"v=spf1 -all"']),
        ("example.com", "NS", ["ns1.example.com"]),
    ],
)
def test_dns_compares_each_record_type_in_its_normal_form(
    resolver: str, name: str, rdtype: str, expected: list[str]
) -> None:
    result = lookup(name=name, type=rdtype, expected=expected, resolver=resolver)
    assert result.status is Status.PASS, result.reason


def test_dns_reports_a_resolver_that_never_answers() -> None:
    # A UDP socket that receives queries and never replies: a resolver that is down or filtered.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = lookup(name="app.example.com", resolver=f"127.0.0.1:{port}", timeout=2)
    assert result.status is Status.FAIL
    assert result.reason == f"no answer from resolver 127.0.0.1:{port} within 2s"


def test_dns_reports_a_resolver_that_fails(resolver: str) -> None:
    result = lookup(name="broken.example.com", resolver=resolver)
    assert result.status is Status.FAIL
    assert (
        result.reason == f"resolver {resolver} could not answer for broken.example.com (SERVFAIL)"
    )


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("10.0.0.2:5353", ("10.0.0.2", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_parse_resolver_accepts_ip_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(value) == expected


@pytest.mark.parametrize("value", ["dns.google", "10.0.0.2:dns", "10.0.0.2:70000", "[::1]5353"])
def test_resolver_must_be_an_ip_address(value: str) -> None:
    with pytest.raises(ValidationError):
        DnsParams(name="x", resolver=value)


def test_params_reject_expected_values_with_absent_and_unknown_types() -> None:
    with pytest.raises(ValidationError, match="absent"):
        DnsParams(name="x", absent=True, expected=["10.0.0.1"])
    with pytest.raises(ValidationError):
        DnsParams(name="x", type="SRV")


def test_normalise_gives_one_spelling_per_value() -> None:
    assert normalise("AAAA", "2001:DB8:0:0::1") == "2001:db8::1"
    assert normalise("CNAME", "App.Example.com.") == "app.example.com"
    assert normalise("MX", "010 Mail.Example.com.") == "10 mail.example.com"
    assert normalise("TXT", '"v=spf1 -all"') == "v=spf1 -all"


def test_judge_fails_when_the_name_has_no_records_of_the_type() -> None:
    raw = DnsAnswer("app.example.com", "MX", "127.0.0.1:53", "no_answer")
    result = judge_answer(DnsParams(name="app.example.com", type="MX"), raw)
    assert result.status is Status.FAIL
    assert result.reason == "MX app.example.com: the name exists but has no MX records"


def test_judge_passes_any_answer_when_nothing_is_expected() -> None:
    raw = DnsAnswer("a.example", "A", "127.0.0.1:53", "answer", ("10.0.0.1",), 60)
    assert judge_answer(DnsParams(name="a.example"), raw).status is Status.PASS
