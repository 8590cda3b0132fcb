"""DNS probe: a name resolves to the expected records (or, before a switch, to none at all).

``gather`` asks one resolver (the system's, or the one named by ``resolver``) with dnspython and
returns the answers as text; ``interpret`` compares them with ``expected`` after normalising
both sides (case and trailing dots of names, IPv6 spelling, TXT quoting), and checks the TTL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from pydantic import Field, field_validator, model_validator

from changeover.errors import UsageError
from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Unreachable,
)

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS"]


def parse_resolver(value: str) -> tuple[str, int]:
    """``"10.0.0.2"``, ``"10.0.0.2:5353"``, ``"::1"`` or ``"[::1]:5353"`` → (ip, port)."""
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"expected '[ip]:port', got {value!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"expected 'ip:port', got {value!r}")
        port = int(port_text)
    else:
        host = text
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(
            f"a resolver is an IP address (optionally ':port'), got {value!r}"
        ) from exc
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


class DnsParams(ProbeParams):
    name: str = Field(description="The DNS name to look up, e.g. 'api.example.com'.")
    type: RecordType = Field(default="A", description="Record type: A, AAAA, CNAME, MX, TXT, NS.")
    expected: list[str] = Field(
        default_factory=list,
        description="Values that must be in the answer (MX as '10 mail.example.com' or just "
        "the host; TXT without quotes).",
    )
    exact: bool = Field(
        default=True, description="The answer must be exactly `expected`, nothing more."
    )
    resolver: str | None = Field(
        default=None,
        description="Resolver to ask, 'ip' or 'ip:port' (default: the system's resolver).",
    )
    max_ttl: int | None = Field(
        default=None, ge=0, description="Highest acceptable TTL in seconds (keeps a switch fast)."
    )
    absent: bool = Field(
        default=False,
        description="Pass only when the name has no such record (NXDOMAIN or empty answer).",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("resolver")
    @classmethod
    def _resolver(cls, value: str | None) -> str | None:
        if value is not None:
            parse_resolver(value)
        return value

    @model_validator(mode="after")
    def _absent_has_no_values(self) -> DnsParams:
        if self.absent and self.expected:
            raise ValueError("`absent: true` expects no records; remove `expected`")
        return self


@dataclass(frozen=True)
class DnsAnswer:
    """What the resolver said: ``answers`` as text, or why there were none."""

    name: str
    type: str
    resolver: str  # for messages: "127.0.0.1:5353" or "the system resolver"
    outcome: Literal["answer", "nxdomain", "no_answer"]
    answers: tuple[str, ...] = ()
    ttl: int | None = None


class DnsProbe(Probe[DnsParams, DnsAnswer]):
    """Resolve one name and type, then compare values and TTL (or require no records)."""

    name = "dns"
    summary = "A DNS name resolves to the expected records with a short enough TTL (or to none)."
    Params = DnsParams

    async def gather(self, params: DnsParams, ctx: ProbeContext) -> DnsAnswer:
        resolver, where = _resolver(params.resolver)
        # Give up before the probe's own timeout, so that the message can name the resolver.
        resolver.lifetime = resolver.timeout = params.timeout * 0.7
        base = DnsAnswer(params.name, params.type, where, "no_answer")
        try:
            async with asyncio.timeout(params.timeout * 0.8):
                answer = await resolver.resolve(
                    params.name, params.type, raise_on_no_answer=False, search=False
                )
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(params.name, params.type, where, "nxdomain")
        except (TimeoutError, dns.exception.Timeout) as exc:
            raise Unreachable(
                f"no answer from resolver {where} within {params.timeout:g}s"
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise Unreachable(
                f"resolver {where} could not answer for {params.name} ({_failure(exc)})"
            ) from exc
        except dns.name.NameTooLong as exc:
            raise UsageError(f"{params.name!r} is too long to be a DNS name") from exc
        except dns.exception.DNSException as exc:
            raise Unreachable(f"looking up {params.name} at {where} failed: {exc}") from exc
        if answer.rrset is None:
            return base
        values = tuple(_text(params.type, rdata) for rdata in answer.rrset)
        return DnsAnswer(params.name, params.type, where, "answer", values, answer.rrset.ttl)

    def interpret(self, params: DnsParams, raw: DnsAnswer) -> CheckResult:
        return judge_answer(params, raw)


def _resolver(address: str | None) -> tuple[dns.asyncresolver.Resolver, str]:
    if address is None:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise UsageError(
                "no system resolver is configured (/etc/resolv.conf); name one with `resolver`"
            ) from exc
        shown = ", ".join(str(ns) for ns in resolver.nameservers)
        return resolver, f"the system resolver ({shown})" if shown else "the system resolver"
    host, port = parse_resolver(address)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    return resolver, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _failure(exc: dns.resolver.NoNameservers) -> str:
    # dnspython's message ends with "Server ... answered SERVFAIL"; keep the answers only.
    answers = re.findall(r"answered ([^;]+)", str(exc))
    return ", ".join(a.strip() for a in answers) or "no usable answer"


def _text(rdtype: str, rdata: object) -> str:
    if rdtype == "TXT":
        strings: list[bytes] = getattr(rdata, "strings", [])
        return b"".join(strings).decode("utf-8", errors="replace")
    return str(rdata)


def normalise(rdtype: str, value: str) -> str:
    """One spelling per value: names lower-case without the trailing dot, canonical IPs,
    TXT without surrounding quotes."""
    text = value.strip()
    if rdtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text
    if rdtype == "TXT":
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    if rdtype == "MX":
        parts = text.split()
        if len(parts) == 2 and parts[0].isdigit():
            return f"{int(parts[0])} {parts[1].rstrip('.').lower()}"
        return text.rstrip(".").lower()
    return text.rstrip(".").lower()


def _matches(rdtype: str, answer: str, wanted: str) -> bool:
    # An MX expected as a bare host matches that host at any preference.
    if rdtype == "MX" and " " not in wanted:
        return answer.split()[-1] == wanted
    return answer == wanted


def judge_answer(params: DnsParams, raw: DnsAnswer) -> CheckResult:
    """Pure: compare the answer with ``expected``/``exact``/``absent`` and the TTL limit."""
    what = f"{raw.type} {raw.name}"
    answers = [normalise(raw.type, a) for a in raw.answers]
    outcome = {"nxdomain": "NXDOMAIN", "no_answer": "no records"}.get(raw.outcome, "answered")
    evidence = [Measure("answers", answers), Measure("outcome", outcome)]
    if raw.ttl is not None:
        evidence.append(
            Measure(
                "ttl",
                raw.ttl,
                expected=f"<= {params.max_ttl}" if params.max_ttl is not None else None,
                ok=raw.ttl <= params.max_ttl if params.max_ttl is not None else None,
                unit="s",
            )
        )

    if params.absent:
        if raw.outcome != "answer":
            why = "the name does not exist" if raw.outcome == "nxdomain" else "no such records"
            return CheckResult.passed(f"{what}: absent as expected ({why})", *evidence)
        return CheckResult.fail(
            f"{what} has records {', '.join(answers)} (expected none)", *evidence
        )

    if raw.outcome == "nxdomain":
        return CheckResult.fail(f"{what}: the name does not exist (NXDOMAIN)", *evidence)
    if raw.outcome == "no_answer":
        return CheckResult.fail(f"{what}: the name exists but has no {raw.type} records", *evidence)

    problems = []
    wanted = [normalise(raw.type, e) for e in params.expected]
    missing = [w for w in wanted if not any(_matches(raw.type, a, w) for a in answers)]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if params.exact and wanted:
        extra = [a for a in answers if not any(_matches(raw.type, a, w) for w in wanted)]
        if extra:
            problems.append(f"unexpected {', '.join(extra)}")
    if wanted:
        evidence.append(
            Measure(
                "expected",
                wanted,
                expected="exactly these" if params.exact else "all present",
                ok=not problems,
            )
        )
    if params.max_ttl is not None and raw.ttl is not None and raw.ttl > params.max_ttl:
        problems.append(f"TTL {raw.ttl}s is above the maximum {params.max_ttl}s")
    if problems:
        got = ", ".join(answers)
        return CheckResult.fail(
            f"{what} at {raw.resolver}: {'; '.join(problems)} (got {got})", *evidence
        )
    return CheckResult.passed(f"{what} → {', '.join(answers)} (TTL {raw.ttl}s)", *evidence)
